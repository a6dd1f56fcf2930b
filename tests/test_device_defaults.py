"""CPU precision defaults: native-bf16 detection from /proc/cpuinfo and what each config resolves to."""

from __future__ import annotations

import pytest

from tokrl.trainers import device_defaults
from tokrl.trainers.device_defaults import cpu_flags, cpu_has_native_bf16
from tokrl.trainers.token_cleaning_sft_config import TokenCleaningSFTConfig
from tokrl.trainers.weighted_dpo_config import WeightedDPOConfig
from tokrl.trainers.weighted_grpo_config import WeightedGRPOConfig

EPYC_ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx512f amx_bf16 amx_tile amx_int8\n"
NEOVERSE_V1 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize(
    "cpuinfo, native",
    [(EPYC_ZEN4, True), (AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), (NEOVERSE_V1, True), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, native, monkeypatch):
    monkeypatch.delenv("TOKRL_CPU_BF16", raising=False)
    assert cpu_has_native_bf16(cpuinfo) is native


def test_flags_of_the_first_processor_only():
    assert cpu_flags(AVX2_ONLY + "\n" + EPYC_ZEN4) == {"fpu", "sse2", "avx2", "fma"}


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(device_defaults, "has_accelerator", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    return monkeypatch


@pytest.mark.parametrize("config_cls", [WeightedGRPOConfig, WeightedDPOConfig, TokenCleaningSFTConfig])
def test_native_bf16_cpu_defaults_to_bf16_autocast_without_checkpointing(config_cls, cpu_only, tmp_path):
    cpu_only.setenv("TOKRL_CPU_BF16", "1")
    cfg = config_cls(output_dir=str(tmp_path), report_to="none")
    assert (cfg.bf16, cfg.use_cpu, cfg.gradient_checkpointing) == (True, True, False)


def test_configs_without_device_defaults_get_the_same_precision(cpu_only, tmp_path):
    """A plain SFTConfig (cDPO's contrast models) trains in the precision tokrl's own configs resolve to."""
    from trl import SFTConfig

    for flag, expected in (("1", (True, True, False)), ("0", (False, False, False))):
        cpu_only.setenv("TOKRL_CPU_BF16", flag)
        sft = SFTConfig(output_dir=str(tmp_path), report_to="none", **device_defaults.precision_kwargs())
        dpo = WeightedDPOConfig(output_dir=str(tmp_path), report_to="none")
        assert (sft.bf16, sft.use_cpu, sft.gradient_checkpointing) == expected
        assert (sft.bf16, sft.gradient_checkpointing) == (dpo.bf16, dpo.gradient_checkpointing)


def test_cpu_without_native_bf16_stays_fp32(cpu_only, tmp_path):
    cpu_only.setenv("TOKRL_CPU_BF16", "0")
    cfg = WeightedGRPOConfig(output_dir=str(tmp_path), report_to="none")
    assert (cfg.bf16, cfg.use_cpu, cfg.gradient_checkpointing) == (False, False, False)


def test_user_settings_and_distributed_cpu_runs_keep_fp32(cpu_only, tmp_path):
    cpu_only.setenv("TOKRL_CPU_BF16", "1")
    assert WeightedGRPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False).bf16 is False
    cpu_only.setenv("WORLD_SIZE", "2")
    assert device_defaults.default_precision()["bf16"] is False
    cpu_only.setenv("WORLD_SIZE", "1")
    cpu_only.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert device_defaults.default_precision()["bf16"] is False


def test_the_rollout_runs_in_one_autocast_region_and_samples_the_same_tokens(tiny, tmp_path):
    """bf16 on a CPU: `_generate` runs inside one autocast region, so autocast casts each weight once per rollout
    instead of once per decoding step, and samples exactly the tokens accelerate's per-forward regions sample."""
    import contextlib

    import torch

    from conftest import make_grpo_trainer
    from tokrl.trainers.weighted_grpo import WeightedGRPOTrainer

    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, bf16=True,
                                max_completion_length=10, temperature=1.0)
    prompts = [trainer.train_dataset[i]["prompt"] for i in range(4)]
    seen = []  # autocast state when the model is called, outside accelerate's own per-forward region
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))

    def rollout():
        torch.manual_seed(0)
        return trainer._generate(prompts)[1]

    one_region = rollout()
    assert seen and all(seen)
    seen.clear()
    trainer._rollout_autocast = contextlib.nullcontext
    per_forward = rollout()
    assert seen and not any(seen)
    assert one_region == per_forward and max(len(c) for c in one_region) > 1
