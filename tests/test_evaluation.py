"""pass@k estimator, generation-based evaluation and `tokrl eval` on the tiny model."""

import json
import math

import pytest
import torch

from tokrl.cli import main
from tokrl.evaluation import evaluate, generate, pass_at_k


def test_pass_at_k_matches_hand_values():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 8) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_is_the_probability_a_random_k_subset_has_a_correct_sample():
    import itertools

    samples = [1, 0, 0, 1, 0, 0]
    subsets = list(itertools.combinations(samples, 3))
    brute = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(6, 2, 3) == pytest.approx(brute)


def test_evaluate_counts_correct_completions_with_a_controlled_reward(tiny):
    from tokrl.data import make_arithmetic_dataset

    model, tokenizer = tiny
    data = make_arithmetic_dataset(num_train=4, num_eval=6)["eval"]
    completions = generate(model, tokenizer, list(data["prompt"]), max_new_tokens=4, batch_size=4)
    assert len(completions) == 6 and all(len(c) == 1 for c in completions)
    first = completions[0][0]

    def reward(completions, answer, **kw):  # 1 only for the first prompt's greedy completion
        assert all(c[0]["role"] == "assistant" for c in completions)  # TRL's conversational completions
        return [float(c[0]["content"] == first) for c in completions]

    result = evaluate(model, tokenizer, data, max_new_tokens=4, batch_size=4, reward=reward, k=(1, 2),
                      num_samples=3)
    assert result["accuracy"] == pytest.approx(sum(c[0] == first for c in completions) / 6)
    assert 0.0 <= result["pass@1"] <= result["pass@2"] <= 1.0
    # generation is deterministic for a fixed seed and restores the global RNG
    state = torch.random.get_rng_state()
    again = evaluate(model, tokenizer, data, max_new_tokens=4, batch_size=4, reward=reward, k=(1, 2), num_samples=3)
    assert again == result
    assert torch.equal(torch.random.get_rng_state(), state)
    # per-prompt scores: one per eval prompt, in order, averaging to the headline numbers
    detailed = evaluate(model, tokenizer, data, max_new_tokens=4, batch_size=4, reward=reward, k=(1, 2),
                        num_samples=3, per_prompt=True)
    assert detailed["per_prompt"]["accuracy"] == [float(c[0] == first) for c in completions]
    assert len(detailed["per_prompt"]["pass@2"]) == 6
    assert sum(detailed["per_prompt"]["pass@2"]) / 6 == pytest.approx(result["pass@2"])
    assert {k: v for k, v in detailed.items() if k != "per_prompt"} == result


def test_evaluate_passes_columns_to_every_reward_and_sums_them(tiny):
    """Rewards see every dataset column, as in TRL; accuracy is the first reward, mean_reward the sum's mean."""
    from datasets import Dataset

    model, tokenizer = tiny
    data = Dataset.from_dict({"prompt": ["ab", "cd", "ef", "gh"], "answer": ["1", "2", "3", "4"],
                              "bonus": [0.5, 0.0, 2.0, 1.0]})
    seen = {}

    def first(completions, answer, **kw):
        seen.update(kw, answer=answer, completions=completions)
        return [float(a in ("1", "3")) for a in answer]

    def second(completions, bonus, **kw):
        return [b for b in bonus]

    result = evaluate(model, tokenizer, data, max_new_tokens=2, batch_size=4, reward=[first, second])
    assert result["accuracy"] == 0.5
    assert result["mean_reward"] == pytest.approx((1.5 + 0.0 + 3.0 + 1.0) / 4)
    assert seen["bonus"] == [0.5, 0.0, 2.0, 1.0] and seen["prompts"] == ["ab", "cd", "ef", "gh"]
    assert all(isinstance(c, str) for c in seen["completions"])  # text prompts give text completions


def test_eval_command_on_a_saved_tiny_model(tmp_path, capsys):
    from tokrl.models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "m")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model_dir), "--num-prompts", "4", "--max-new-tokens", "3",
                 "--pass-k", "1", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_prompts"] == 4 and set(result) >= {"accuracy", "pass@1", "pass@2"}
