"""THRGRPOTrainer on the tiny model: hidden-state alignment, both hidden-state paths, parity with TRL's GRPO loss, a
2-step run and a 2-step recipe run."""

import copy
import dataclasses
import inspect
import math
import re

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from tokrl.data.arithmetic import ArithmeticTask
from tokrl.models import save_tiny_model, tiny_model
from tokrl.trainers.thr_grpo import THRGRPOConfig, THRGRPOTrainer
from tokrl.weighting.thr import THR_COLUMN, WEIGHT_COLUMN, THRWeighter, Unembedding, token_hidden_rewards

G = 4
THR_ARGS = ("p", "tau_beta", "tau_on", "mask_nondominant", "restrict_vocab", "include_self")


def parity_reward(completions, **kwargs):
    """A deterministic binary reward that mixes groups even for a random model: parity of the completion length."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t) % 2) for t in texts]


def dataset(n=16):
    return ArithmeticTask(num_train=n, num_eval=4, max_value=9).build()["train"]


def config(tmp_path, **kw):
    thr = {k: kw.pop(k) for k in THR_ARGS if k in kw}  # THR's arguments live in the weighting spec
    if thr:
        kw["weighting"] = {"name": "thr", **thr}
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=G,
                max_completion_length=8, max_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none",
                seed=0, temperature=1.0, beta=0.0, save_strategy="no", use_cpu=True)
    base.update(kw)
    return base


def make(tmp_path, cls=THRGRPOTrainer, cfg_cls=THRGRPOConfig, model=None, **kw):
    if model is None:
        model, tok = tiny_model(seed=0)
    else:
        tok = tiny_model(seed=0)[1]
    args = cfg_cls(**config(tmp_path, **kw))
    return cls(model=model, reward_funcs=[parity_reward], args=args, train_dataset=dataset(), processing_class=tok)


def generation_output(trainer):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer._generate_and_score_completions(batch)


def test_config_is_a_preset_and_validates_the_weighting_spec(tmp_path):
    """THRGRPOConfig only changes the default weighting; THR's arguments are the weighter's, checked at config time."""
    own = {f.name for f in dataclasses.fields(THRGRPOConfig)} - {f.name for f in dataclasses.fields(GRPOConfig)}
    assert own == {"weighting", "weight_normalizer", "token_dump_steps", "token_dump_samples", "rollout_state_source",
                   "token_advantage", "advantage_shaping"}
    assert THRGRPOConfig(**config(tmp_path)).weighting == {"name": "thr"}
    assert re.search(r"^\s+p: signed steering scalar", THRWeighter.__doc__, re.M)
    with pytest.raises(ValueError, match="p must be in"):
        THRGRPOConfig(**config(tmp_path, p=1.5))
    with pytest.raises(ValueError, match="thr' has no option 'tau'"):
        THRGRPOConfig(**config(tmp_path, weighting={"name": "thr", "tau": 1.0}))


def test_hidden_states_align_with_trainer_logps(tmp_path):
    trainer = make(tmp_path, p=0.2, temperature=0.8, rollout_state_source="forward")
    out = generation_output(trainer)
    assert trainer.thr_passes == {"reused": 0, "generation": 0, "extra": 1}
    hidden, logps = trainer.old_policy_states(out)
    model = trainer.model
    # lm_head(h) / temperature at the captured positions reproduces the per-token log-probs of the sampled tokens
    from_h = torch.log_softmax(model.lm_head(hidden) / 0.8, -1).gather(-1, out["completion_ids"].unsqueeze(-1))[..., 0]
    mask = out["completion_mask"].bool()
    torch.testing.assert_close(from_h[mask], logps[mask], rtol=1e-5, atol=1e-5)
    # ... and an independent full-logit forward agrees (no off-by-one, post final norm)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits[:, -ids.size(1) + out["prompt_ids"].size(1) - 1 : -1]
    full = torch.log_softmax(logits / 0.8, -1).gather(-1, out["completion_ids"].unsqueeze(-1))[..., 0]
    torch.testing.assert_close(full[mask], from_h[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generation_columns_match_the_weighter_on_old_policy_states(tmp_path, temperature):
    """Default path (states captured during generation, no extra forward) == THR on a full no-grad forward."""
    trainer = make(tmp_path, p=0.3, tau_beta=0.5, temperature=temperature)
    out = generation_output(trainer)
    assert trainer.thr_passes == {"reused": 0, "generation": 1, "extra": 0}
    mask = out["completion_mask"]
    assert out[WEIGHT_COLUMN].shape == mask.shape and out[THR_COLUMN].shape == mask.shape
    hidden, logps = trainer.old_policy_states(out)
    W = trainer.model.lm_head.weight.detach()
    res = token_hidden_rewards(out["completion_ids"], mask, hidden, out["advantages"],
                               torch.arange(mask.size(0)) // G,
                               Unembedding(lambda i: W[i], W.shape[0], temperature=temperature), logps, tau_beta=0.5)
    torch.testing.assert_close(out[THR_COLUMN], res.thr * mask, rtol=1e-4, atol=1e-5)
    expected = torch.where(res.dominant, 1 + 0.3 * torch.sign(res.thr), torch.ones_like(res.thr))
    expected = torch.where(res.scored, expected, torch.ones_like(expected)) * mask
    torch.testing.assert_close(out[WEIGHT_COLUMN], expected)
    assert res.taus, "the parity reward should give at least one mixed group"
    assert ((out[WEIGHT_COLUMN] - 1).abs() > 1e-6).any()


def test_reused_path_takes_states_from_trls_old_logprob_pass(tmp_path):
    trainer = make(tmp_path, p=0.3, num_iterations=2)
    out = generation_output(trainer)
    assert "old_per_token_logps" in out
    assert trainer.thr_passes == {"reused": 1, "generation": 0, "extra": 0}
    assert trainer._metrics["train"]["thr/extra_pass"] == [0.0]
    again = dict(out)
    trainer.add_thr_columns(again)  # forces the extra pass on the same batch
    assert trainer.thr_passes == {"reused": 1, "generation": 0, "extra": 1}
    torch.testing.assert_close(again[THR_COLUMN], out[THR_COLUMN], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again[WEIGHT_COLUMN], out[WEIGHT_COLUMN])


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_loss_equals_trl_grpo_with_weighted_advantages(tmp_path, p):
    """p = 0 reproduces TRL's GRPO loss and gradients exactly; p != 0 equals TRL with advantages A * w ([B, T])."""
    thr = make(tmp_path, p=p, tau_beta=0.5)
    out = generation_output(thr)
    ref_model = copy.deepcopy(thr.model)
    # the same precision as tokrl's CPU defaults (TRL's own defaults are bf16 + gradient checkpointing)
    trl = make(tmp_path / "trl", cls=GRPOTrainer, cfg_cls=GRPOConfig, model=ref_model, bf16=False,
               gradient_checkpointing=False)
    trl_inputs = {k: v for k, v in out.items() if not k.startswith("tokrl_")}
    if p != 0:
        trl_inputs["advantages"] = out["advantages"].unsqueeze(1) * out[WEIGHT_COLUMN]
    else:
        assert torch.equal(out[WEIGHT_COLUMN], out["completion_mask"].float())
    for t in (thr, trl):
        t.model.train()
        t.current_gradient_accumulation_steps = t.args.gradient_accumulation_steps  # set by Trainer's train loop
    loss_thr = thr.compute_loss(thr.model, out)
    loss_trl = trl.compute_loss(trl.model, trl_inputs)
    loss_thr.backward(), loss_trl.backward()
    assert thr.model.lm_head.weight.grad.abs().max() > 1e-4  # a real gradient (the loss itself is ~0 at ratio 1)
    if p == 0:
        assert torch.equal(loss_thr, loss_trl)
        for a, b in zip(thr.model.parameters(), trl.model.parameters()):
            assert torch.equal(a.grad, b.grad)
    else:
        torch.testing.assert_close(loss_thr, loss_trl, rtol=1e-6, atol=1e-7)
        for a, b in zip(thr.model.parameters(), trl.model.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert thr.last_view.values["thr"].shape == out["completion_mask"].shape


def test_two_step_run_logs_thr_metrics(tmp_path):
    trainer = make(tmp_path, p=-0.3, tau_beta=0.5)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    logged = [h for h in trainer.state.log_history if "thr/dominant_frac" in h]
    assert len(logged) == 2 and all(0 <= h["thr/dominant_frac"] <= 1 and h["thr/extra_pass"] == 0 for h in logged)
    assert trainer.thr_passes == {"reused": 0, "generation": 2, "extra": 0}


def test_composed_forking_times_thr_and_nthr(tmp_path):
    spec = {"name": "product", "weighters": [{"name": "entropy_quantile", "rho": 0.5}, {"name": "thr", "p": 0.3}]}
    trainer = make(tmp_path, weighting=spec)
    assert isinstance(trainer.thr_weighter, THRWeighter) and trainer.thr_weighter.p == 0.3
    out = generation_output(trainer)
    trainer.compute_loss(trainer.model, out)
    view = trainer.last_view
    entropy_mask = (view.entropies >= view.stats["entropy_threshold"]).float() * view.mask
    torch.testing.assert_close(view.values["weight"], entropy_mask * out[WEIGHT_COLUMN])
    nthr = make(tmp_path / "n", weighting="nthr")
    assert nthr.thr_weighter.mode == "nthr"
    with pytest.raises(ValueError, match="needs a 'thr' or 'nthr' weighter"):
        make(tmp_path / "u", weighting="uniform")


def test_two_step_recipe_run(tmp_path, monkeypatch):
    from tokrl.runs import train_recipe
    from tokrl.rewards import REWARDS

    monkeypatch.setitem(REWARDS, "parity", parity_reward)
    model_dir = save_tiny_model(tmp_path / "tiny")
    recipe = tmp_path / "thr.yaml"
    recipe.write_text(
        "method: thr_grpo\n"
        f"model: {model_dir}\n"
        "task: {name: arithmetic, max_value: 9, num_train: 16, num_eval: 4}\n"
        "reward: [parity]\n"
        f"output_dir: {tmp_path / 'run'}\n"
        "weighting: {name: thr, p: 0.2, tau_beta: 0.5}\n"
        "trainer: {per_device_train_batch_size: 8, num_generations: 4, max_completion_length: 8, max_steps: 2,\n"
        "          logging_steps: 1, save_strategy: 'no', use_cpu: true}\n"
        "eval: {before: false, after: false}\n"
    )
    result = train_recipe(recipe)
    trainer = result["trainer"]
    assert isinstance(trainer, THRGRPOTrainer) and trainer.thr_weighter.p == 0.2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert trainer.thr_passes["generation"] == 2


def test_trl_private_methods_we_override_keep_their_signature():
    """Pins TRL 1.16: THR hooks `_generate_and_score_completions(inputs)` and the old-log-prob pass's
    `_get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, batch_size, ...)` and
    reproduces TRL's condition for running that pass."""
    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert params[:6] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"]
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    assert list(inspect.signature(GRPOTrainer._generate).parameters) == ["self", "prompts"]
    assert "unwrapped_model.generate(" in inspect.getsource(GRPOTrainer._generate_single_turn)
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "if self.args.gradient_accumulation_steps % generate_every != 0 or (" in source
    assert "old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(" in source


@pytest.mark.parametrize("name", ["thr_grpo_arithmetic", "thr_grpo_explore_arithmetic", "forking_thr_grpo_arithmetic"])
def test_shipped_recipes_run_one_step_on_the_tiny_model(tmp_path, name):
    from pathlib import Path

    from tokrl.runs import train_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"
    model_dir = save_tiny_model(tmp_path / "tiny")
    overrides = [f"model={model_dir}", f"output_dir={tmp_path / 'run'}", "task.num_train=16", "eval.before=false",
                 "eval.after=false", "trainer.max_steps=1", "trainer.per_device_train_batch_size=8",
                 "trainer.num_generations=4", "trainer.max_completion_length=6", "trainer.save_strategy='no'"]
    trainer = train_recipe(recipe, overrides)["trainer"]
    assert isinstance(trainer, THRGRPOTrainer)
    expected_p = {"thr_grpo_arithmetic": 0.2, "thr_grpo_explore_arithmetic": -0.2, "forking_thr_grpo_arithmetic": 0.2}
    assert trainer.thr_weighter.p == expected_p[name]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 1 and math.isfinite(losses[0])
