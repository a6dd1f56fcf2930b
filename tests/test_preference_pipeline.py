"""Shared preference pairs: sampling on the tiny model with a reward we control, selection rules by hand."""

import json
import random

import pytest
from datasets import Dataset

from tokrl.models import tiny_model
from tokrl.rewards import extract_answer
from tokrl.pipelines.preference import (
    SampleSettings,
    SelectRules,
    load_preference_dataset,
    sample_stage,
    select_row,
    select_stage,
    selection_stats,
)
from tokrl.pipelines.stage import read_manifest


def even_length(completions, **kwargs):
    """A reward we control: 1 when the completion has an even number of characters."""
    return [float(len(c) % 2 == 0) for c in completions]


def _prompts(n=3):
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)} for i in range(n)]
    )


def test_sample_grades_every_completion_and_is_deterministic(tmp_path):
    model, tokenizer = tiny_model(seed=1)
    settings = SampleSettings(num_samples=4, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=2, seed=3)
    kw = dict(model_id="tiny", reward_id="even_length", shard_size=2)
    out = sample_stage(tmp_path / "a", model, tokenizer, _prompts(), even_length, settings, **kw)
    assert out["answer"] == ["1", "2", "3"]
    assert [len(c) for c in out["completions"]] == [4, 4, 4]
    for completions, rewards in zip(out["completions"], out["rewards"]):
        assert rewards == even_length(completions)
    flat = [c for cs in out["completions"] for c in cs]
    assert len(set(flat)) > 1  # sampled, not greedy
    assert 0 < sum(sum(r) for r in out["rewards"]) < 12  # the random model gives both kinds here
    # same settings elsewhere -> identical samples (per-shard seeds); shard 1 alone -> same as its part above
    again = sample_stage(tmp_path / "b", model, tokenizer, _prompts(), even_length, settings, **kw)
    assert again.to_dict() == out.to_dict()
    # a finished stage is not resampled
    manifest = read_manifest(tmp_path / "a")
    assert manifest["done"] and manifest["num_shards"] == 2
    assert sample_stage(tmp_path / "a", model, tokenizer, _prompts(), even_length, settings, **kw).to_dict() \
        == out.to_dict()


def test_reward_sees_dataset_columns_per_completion(tmp_path):
    model, tokenizer = tiny_model(seed=1)
    seen = {}

    def reward(completions, answer, prompts, **kwargs):
        seen["answer"], seen["n"] = list(answer), len(completions)
        return [0.0] * len(completions)

    settings = SampleSettings(num_samples=2, max_new_tokens=3, batch_size=4)
    sample_stage(tmp_path, model, tokenizer, _prompts(2), reward, settings, model_id="tiny", reward_id="r")
    assert seen == {"answer": ["1", "1", "2", "2"], "n": 4}


ROW = {
    "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
    "answer": "5",
    "completions": ["5", "It is 5", "5.", "4", "4", "four 4", "4!", "6", "6 ", "7", "no idea"],
    "rewards": [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
}


def test_select_rules_by_hand():
    picked = select_row(ROW, SelectRules(), random.Random(0))
    assert len(picked["pairs"]) == 1
    chosen, rejected = picked["pairs"][0]
    assert chosen in ("5", "It is 5", "5.") and rejected in ("4", "four 4", "4!")
    assert picked["positive"] == [chosen]  # the positive SFT example is the pair's chosen representative
    # wrong groups (no-answer dropped): "4" x4, "6" x2, "7" x1 of 7; top_p 0.5 -> "4" alone covers 4/7
    assert picked["negative"] == [rejected]
    wider = select_row(ROW, SelectRules(negative_top_p=0.9), random.Random(0))
    assert len(wider["negative"]) == 2 and wider["negative"][1] in ("6", "6 ")  # then the singleton "7" is refused
    # no correct answer -> negatives but no pair and no positive
    none_right = dict(ROW, rewards=[0] * 11)
    picked = select_row(none_right, SelectRules(negative_top_p=1.0), random.Random(0))
    assert picked["pairs"] == [] and picked["positive"] == []
    # "4" x4, "5" x3, "6" x2 in size order; the singleton "7" is refused
    assert [extract_answer(p) for p in picked["negative"]] == ["4", "5", "6"]


def test_select_ties_are_broken_by_the_seeded_shuffle():
    row = dict(ROW, completions=["5", "1", "2"], rewards=[1, 0, 0])
    firsts = {select_row(row, SelectRules(), random.Random(s))["pairs"][0][1] for s in range(20)}
    assert firsts == {"1", "2"}


def test_select_stages_write_pairs_and_sft_sets(tmp_path):
    samples = Dataset.from_list([ROW, dict(ROW, answer="9", rewards=[0] * 11)])
    from tokrl.pipelines.stage import run_stage

    run_stage("sample", tmp_path / "sample", lambda s, i: s, samples, {})
    pairs = select_stage(tmp_path / "pairs", samples, tmp_path / "sample", "pairs", SelectRules())
    pos = select_stage(tmp_path / "pos", samples, tmp_path / "sample", "positive", SelectRules())
    neg = select_stage(tmp_path / "neg", samples, tmp_path / "sample", "negative", SelectRules())
    assert len(pairs) == 1 and set(pairs.column_names) == {"prompt", "chosen", "rejected", "answer"}
    assert pairs[0]["chosen"][0]["role"] == "assistant" and pairs[0]["answer"] == "5"
    assert pos[0]["completion"] == pairs[0]["chosen"]  # same seeded choices in every selection stage
    assert len(neg) == 3 and neg[0]["completion"] == pairs[0]["rejected"]  # 1 + ("4" x4, "5" x3 cover 7 of 10)
    stats = selection_stats(samples, SelectRules())
    assert stats["prompts_with_a_wrong_answer"] == 2 and stats["pairable_prompts"] == 1
    assert stats["mean_wrong_per_prompt"] == pytest.approx((8 + 11) / 2)


def test_load_preference_dataset_from_local_files(tmp_path):
    rows = [{"prompt": "Q: 1+1?", "chosen": "2", "rejected": "3"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "d"))
    for path in ("p.jsonl", "p.parquet", "d"):
        assert load_preference_dataset(str(tmp_path / path)).to_list() == rows
    Dataset.from_list([{"prompt": "x", "chosen": "y"}]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="missing column 'rejected'"):
        load_preference_dataset(str(tmp_path / "bad"))
    with pytest.raises(FileNotFoundError, match="pairs.hub"):
        load_preference_dataset("someone/some-dataset")


def test_question_answer_prompts_gsm8k_style(tmp_path):
    from tokrl.pipelines.preference import cut_at_stop, recipe_prompts

    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
            {"question": "What is 10 - 1?", "answer": "#### 9"}]
    (tmp_path / "gsm.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"path": str(tmp_path / "gsm.jsonl"), "few_shot": "Q: 1+1?\nA: 2\n\n",
            "template": "Question: {question}\nAnswer: ", "chat_template": False}
    built = recipe_prompts({"data": spec}, "r.yaml")
    assert list(built["train"]["answer"]) == ["7", "9"]
    assert built["train"][1]["prompt"] == "Q: 1+1?\nA: 2\n\nQuestion: What is 10 - 1?\nAnswer: "
    assert built["train"][1]["train_prompt"] == "Question: What is 10 - 1?\nAnswer: "
    # pairs and SFT sets are stored with the zero-shot train prompt
    sample = dict(built["train"][0], completions=["7", "8"], rewards=[1.0, 0.0])
    from tokrl.pipelines.stage import run_stage

    ds = Dataset.from_list([sample])
    run_stage("sample", tmp_path / "s", lambda s, i: s, ds, {})
    pairs = select_stage(tmp_path / "p", ds, tmp_path / "s", "pairs", SelectRules())
    assert pairs[0]["prompt"] == "Question: Tom has 3 apples and buys 4. How many?\nAnswer: "
    assert pairs[0]["chosen"] == "7" and pairs[0]["rejected"] == "8" and "train_prompt" not in pairs.column_names
    assert cut_at_stop("The answer is 7.\n\nQuestion: next", ["\n\nQuestion:"]) == "The answer is 7."
    with pytest.raises(Exception, match=r"r.yaml: data \(.*gsm.jsonl\): .*no column 'q'"):
        recipe_prompts({"data": dict(spec, template=None, question_column="q")}, "r.yaml")
    with pytest.raises(Exception, match="'prompts' moved to 'data'"):
        recipe_prompts({"prompts": spec}, "r.yaml")
    Dataset.from_list([{"prompt": "x", "chosen": "y", "rejected": "z"}]).to_json(str(tmp_path / "p.jsonl"))
    with pytest.raises(Exception, match="a preference dataset goes under 'pairs'"):
        recipe_prompts({"data": {"path": str(tmp_path / "p.jsonl")}}, "r.yaml")
