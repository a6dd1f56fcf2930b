"""Per-token rewards in GRPO: reward-function outputs -> token rewards -> per-token advantages, by hand and vs TRL."""

import inspect
import math

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from conftest import make_grpo_trainer
from tokrl.rewards.token_advantages import normalized_process_rewards, process_advantages, token_advantages
from tokrl.rewards.token_rewards import entry_to_tokens, spans_to_tokens, token_char_ends
from tokrl.trainers import WeightedGRPOConfig, WeightedGRPOTrainer

# One group of two completions, four token positions. Row 0 rewards tokens 1 and 3, row 1 token 2; row 1 has
# three completion tokens.
REWARDS = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, -1.0, 0.0]])
REWARDED = torch.tensor([[False, True, False, True], [False, False, True, False]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
SEQ_ADV = torch.tensor([0.5, -0.5])


def test_process_estimator_matches_the_deepseekmath_formula_by_hand():
    # R = {1, 2, -1}: mean 2/3, Bessel std sqrt(((1/3)^2 + (4/3)^2 + (5/3)^2) / 2) = sqrt(7/3); TRL adds 1e-4.
    s = math.sqrt(7 / 3) + 1e-4
    normalized = normalized_process_rewards(REWARDS, REWARDED, num_generations=2, scale="group")
    torch.testing.assert_close(normalized, torch.tensor([[0, 1 / 3 / s, 0, 4 / 3 / s], [0, 0, -5 / 3 / s, 0]]))
    # reward-to-go from each token on, plus the sequence advantage; 0 outside the completion
    expected = torch.tensor([[0.5 + 5 / 3 / s, 0.5 + 5 / 3 / s, 0.5 + 4 / 3 / s, 0.5 + 4 / 3 / s],
                             [-0.5 - 5 / 3 / s, -0.5 - 5 / 3 / s, -0.5 - 5 / 3 / s, 0.0]])
    torch.testing.assert_close(process_advantages(SEQ_ADV, normalized, MASK), expected)


def test_process_estimator_scales_none_and_batch():
    none = normalized_process_rewards(REWARDS, REWARDED, num_generations=2, scale="none")
    torch.testing.assert_close(none, torch.tensor([[0, 1 / 3, 0, 4 / 3], [0, 0, -5 / 3, 0]]))
    # two groups of one completion each: per-group means, one batch-wide std over all three rewarded positions
    batch = normalized_process_rewards(REWARDS, REWARDED, num_generations=1, scale="batch")
    s = math.sqrt(7 / 3) + 1e-4
    torch.testing.assert_close(batch, torch.tensor([[0, -0.5 / s, 0, 0.5 / s], [0, 0, 0.0, 0]]))


def test_token_estimator_is_the_token_rewards_alone():
    torch.testing.assert_close(token_advantages(REWARDS, MASK), REWARDS * MASK)


def test_spans_map_to_the_last_token_or_to_every_token_they_cover():
    # "The answer is 42" tokenised as "The", " answer", " is", " 4", "2": character ends 3, 10, 13, 15, 16
    ends = [3, 10, 13, 15, 16]
    values, rewarded = spans_to_tokens([((14, 16), 1.0), ((0, 3), -0.5)], ends, "last", "f")
    assert values == [-0.5, 0.0, 0.0, 0.0, 1.0] and rewarded == [True, False, False, False, True]
    values, rewarded = spans_to_tokens([((14, 16), 1.0), ((4, 11), 2.0)], ends, "all", "f")
    assert values == [0.0, 2.0, 2.0, 1.0, 1.0] and rewarded == [False, True, True, True, True]
    with pytest.raises(ValueError, match=r"span \(10, 17\) is outside"):
        spans_to_tokens([((10, 17), 1.0)], ends, "last", "f")


def test_char_ends_follow_the_sampled_ids_with_a_real_bpe_tokenizer():
    from tokrl.models import load_model

    _, tok = load_model("smollm2-135m-instruct")
    text = "The answer is 1234, thanks!"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ends = token_char_ends(tok, ids)
    assert ends[-1] == ends[-2] == len(text)  # EOS decodes to nothing (skip_special_tokens, as TRL decodes)
    pieces = [text[(ends[k - 1] if k else 0):ends[k]] for k in range(len(ids))]
    assert "".join(pieces) == text and pieces == [tok.decode([i], skip_special_tokens=True) for i in ids]
    start = text.index("1234")
    values, _ = entry_to_tokens([((start, start + 4), 1.0)], ids, tok, "all", "f")
    assert "".join(p for p, v in zip(pieces, values) if v) == "1234"


def test_bad_token_outputs_name_the_function_and_completion():
    with pytest.raises(ValueError, match="reward function 'f' completion 0: 2 token rewards for a completion of 3"):
        entry_to_tokens([1.0, 2.0], [5, 6, 7], None, "last", "reward function 'f' completion 0")


# ---- through the trainer --------------------------------------------------------------------------------------


def even_token_reward(completion_ids, **kwargs):
    """+1 on every token with an even id, -1 on the others: a per-token reward list."""
    return [[1.0 if t % 2 == 0 else -1.0 for t in ids] for ids in completion_ids]


def first_char_span(completions, **kwargs):
    """A process reward on the first character of each completion (0 for an empty one)."""
    return [[((0, 1), 1.0 if c[:1].isdigit() else -1.0)] if c else None for c in completions]


def generate(trainer, seed=0):
    rows = [trainer.train_dataset[i] for i in range(trainer.args.per_device_train_batch_size // 4)]
    inputs = [r for r in rows for _ in range(4)]  # as TRL's sampler repeats each prompt num_generations times
    torch.manual_seed(seed)
    return trainer._generate_and_score_completions(inputs)


def plain_prompts(data):
    return data.map(lambda r: {"prompt": r["question"]}, remove_columns=["prompt"])


def test_trainer_token_estimator_hands_the_token_rewards_to_the_loss(tiny, tmp_path):
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, token_advantage="token",
                                reward_funcs=[even_token_reward])
    out = generate(trainer)
    ids, mask = out["completion_ids"], out["completion_mask"]
    assert out["advantages"].shape == ids.shape
    torch.testing.assert_close(out["advantages"], torch.where(ids % 2 == 0, 1.0, -1.0) * mask)
    assert trainer.reward_weights.tolist() == [0.0]  # the per-completion sum is logged, not used as a reward
    sums = (torch.where(ids % 2 == 0, 1.0, -1.0) * mask).sum(1)
    assert trainer._metrics["train"]["rewards/even_token_reward/mean"][-1] == pytest.approx(sums.mean().item())


def test_trainer_process_estimator_adds_normalized_reward_to_go_to_trl_advantages(tiny, tmp_path):
    from tokrl.rewards import accuracy_reward

    kw = dict(per_device_train_batch_size=8, num_generations=4)
    plain = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, **kw)
    mixed = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, **kw,
                              reward_funcs=[accuracy_reward, even_token_reward])
    seq, out = generate(plain), generate(mixed)
    torch.testing.assert_close(out["completion_ids"], seq["completion_ids"])  # same samples, same TRL advantages
    ids, mask = out["completion_ids"], out["completion_mask"].float()
    expected = torch.zeros_like(mask)
    for g in range(0, 8, 4):  # by hand: per group, normalise all token rewards, then sum from t to the end
        r = torch.where(ids[g:g + 4] % 2 == 0, 1.0, -1.0)
        m = mask[g:g + 4].bool()
        vals = r[m]
        mean = vals.mean()
        std = math.sqrt(((vals - mean) ** 2).sum().item() / (vals.numel() - 1))
        norm = torch.where(m, (r - mean) / (std + 1e-4), torch.zeros_like(r))
        for i in range(4):
            for t in range(ids.shape[1]):
                expected[g + i, t] = (seq["advantages"][g + i] + norm[i, t:].sum()) * mask[g + i, t]
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-5, atol=1e-5)


def test_span_rewards_land_on_the_tokens_of_the_text(tiny, tmp_path):
    data_fn = plain_prompts
    trainer = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path, token_advantage="token",
                                reward_funcs=[first_char_span], dataset_fn=data_fn)
    out = generate(trainer)
    ids, mask = out["completion_ids"], out["completion_mask"]
    tok = trainer.processing_class
    assert (out["advantages"] != 0).sum() >= 2  # the samples do carry span rewards
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        text = tok.decode(ids[i, :n], skip_special_tokens=True)
        expected = torch.zeros(ids.shape[1])
        if text:  # the char tokenizer: character 0 is the first non-special token
            first = next(k for k in range(n) if tok.decode(ids[i, :k + 1], skip_special_tokens=True))
            expected[first] = 1.0 if text[0].isdigit() else -1.0
        torch.testing.assert_close(out["advantages"][i], expected)


def even_fraction(completion_ids, **kwargs):
    """A sequence reward (one number per completion) that varies within a group."""
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def test_without_token_rewards_training_equals_trl(tiny, tmp_path):
    """Numbers-only reward functions go through the wrapper untouched: two training steps give TRL's weights."""
    kw = dict(max_steps=2, learning_rate=1e-3, reward_funcs=[even_fraction])
    ours = make_grpo_trainer(WeightedGRPOTrainer, WeightedGRPOConfig, tiny, tmp_path / "a", **kw)
    ours.train()  # build and train one after the other: sampling draws from the global RNG
    trl = make_grpo_trainer(GRPOTrainer, GRPOConfig, tiny, tmp_path / "b", bf16=False, **kw)
    trl.train()
    moved = 0.0
    for (name, p), q, p0 in zip(ours.model.named_parameters(), trl.model.parameters(), tiny[0].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 1e-4  # the steps did train
    assert ours.state.log_history[0]["reward"] == trl.state.log_history[0]["reward"]


def test_trl_accepts_token_level_advantages_as_we_rely_on():
    """Pins TRL 1.16's `_compute_loss`: a [B, T] advantage is used as is, and it is read after the entropy hook."""
    src = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'advantages = inputs["advantages"]' in src
    assert "if advantages.dim() == 1:\n            advantages = advantages.unsqueeze(1)" in src
    assert src.index("self.get_high_entropy_mask(") < src.index('advantages = inputs["advantages"]')
    calc = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "completion_ids=completion_ids_list, **reward_kwargs" in calc
    gen = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)" in gen
