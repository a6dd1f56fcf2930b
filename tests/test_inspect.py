"""`tokrl inspect`: the HTML is self-contained and embeds the exact values, scales and header of its source."""

from __future__ import annotations

import json
import re

from tokrl.cli import main
from tokrl.reports.colors import colour
from tokrl.reports.sources import pair_columns
from tokrl.diagnostics.token_dump import append_jsonl
from tokrl.utils import write_json_atomic

# Three dumped completions. Hand-made so that every colour below can be computed by hand.
RECORDS = [
    {"step": 5, "sample": 0, "pieces": ["The", " answer", " is", " 42", "<|im_end|>"], "ids": [1, 2, 3, 4, 5],
     "values": {"weight": [0.0, 1.0, 0.25, 1.0, 0.5], "entropy": [0.1, 2.0, 0.3, 1.5, 0.05],
                "advantage": [-0.5] * 5, "thr": [-1.0, 0.5, 0.0, 2.0, -0.25]},
     "stats": {"entropy_threshold": 1.5}, "advantage": -0.5},
    {"step": 5, "sample": 1, "pieces": ["x", "<b>&", "\n", "y"], "ids": [6, 7, 8, 9],
     "values": {"weight": [1.0, 0.0, 0.0, 1.0], "entropy": [1.0, 0.2, 0.2, 1.7],
                "advantage": [1.5] * 4, "thr": [0.25, 0.0, 0.0, 1.0]},
     "stats": {"entropy_threshold": 1.0}, "advantage": 1.5},
    {"step": 10, "sample": 0, "pieces": ["7"], "ids": [10],
     "values": {"weight": [1.0], "entropy": [0.9], "advantage": [0.0], "thr": [0.5]},
     "stats": {"entropy_threshold": 0.9}, "advantage": 0.0},
]
RUN_INFO = {"method": "WeightedGRPOTrainer", "weighter": "EntropyQuantile(rho=0.2)", "model": "tiny-llama",
            "config": {"learning_rate": 1e-06, "num_generations": 4, "weighting": {"name": "entropy_quantile"}}}


def make_run_dir(path, records=RECORDS):
    path.mkdir(parents=True, exist_ok=True)
    append_jsonl(path / "token_values.jsonl", records)
    write_json_atomic(path / "run_info.json", RUN_INFO)
    append_jsonl(path / "metrics.jsonl", [{"step": 1, "reward": 0.25, "loss": 0.5}, {"step": 2, "reward": 0.75}])
    return path


def embedded(html: str) -> dict:
    m = re.search(r'<script id="tokrl-data" type="application/json">(.*?)</script>', html, re.S)
    assert m, "the data block is missing"
    return json.loads(m.group(1))


def test_run_dir_report_is_self_contained_with_exact_values(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run")
    out = tmp_path / "report.html"
    assert main(["inspect", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    # one file: no external script, stylesheet, image or font, and no URL at all
    assert re.search(r"<(script|link|img|iframe)[^>]*(src|href)=", html) is None
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert "<b>&" not in html  # a token's text never reaches the page unescaped
    data = embedded(html)
    assert data["names"] == ["weight", "entropy", "advantage", "thr"] and data["initial"] == "weight"
    assert [s["p"] for s in data["samples"]] == [r["pieces"] for r in RECORDS]
    assert data["samples"][0]["v"]["thr"] == [-1.0, 0.5, 0.0, 2.0, -0.25]
    assert data["samples"][1]["m"] == {"advantage": 1.5, "entropy_threshold": 1.0}
    assert data["groups"] == ["step 5", "step 10"] and data["page_size"] == 20

    weight, adv, thr = (data["scales"][k] for k in ("weight", "advantage", "thr"))
    assert (weight["kind"], weight["lo"], weight["hi"]) == ("sequential", 0.0, 1.0)
    # signed values: diverging and symmetric around 0, with the observed range kept for the legend
    assert (adv["kind"], adv["lo"], adv["hi"], adv["min"], adv["max"]) == ("diverging", -1.5, 1.5, -0.5, 1.5)
    assert (thr["lo"], thr["hi"]) == (-2.0, 2.0)
    # colours, by hand from the stops: weight 1 is the darkest orange, 0.25 the second stop, 0 white
    assert colour(1.0, weight) == (166, 54, 3)
    assert colour(0.25, weight) == (254, 230, 206)
    assert colour(0.0, weight) == (255, 255, 255)
    # advantage -0.5 sits at x = 1/3, a third of the way from (103,169,207) to (247,247,247)
    assert colour(-0.5, adv) == (151, 195, 220)
    assert colour(0.0, thr) == (247, 247, 247) and colour(2.0, thr) == (178, 24, 43)
    assert colour(None, thr) == (221, 221, 221)

    header = html[html.index('<header'):html.index('</header>')]
    for text in ("WeightedGRPOTrainer", "EntropyQuantile(rho=0.2)", "tiny-llama", "learning_rate", "1e-06",
                 "last reward", "0.75", "5 to 10 (2 dumps)"):
        assert text in header
    assert f"wrote {out}" in capsys.readouterr().out


def test_value_flag_and_limits(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run")
    out = tmp_path / "r.html"
    assert main(["inspect", str(run), "--out", str(out), "--value", "thr", "--max-samples", "2",
                 "--page-size", "7"]) == 0
    data = embedded(out.read_text())
    assert data["initial"] == "thr" and data["page_size"] == 7
    # two whole dumps do not fit in 2 samples: the latest two records
    assert [s["l"] for s in data["samples"]] == ["step 5 \u00b7 completion 1", "step 10 \u00b7 completion 0"]
    assert main(["inspect", str(run), "--out", str(out), "--value", "nope"]) == 2
    assert "'nope' is not in the data; available: weight, entropy, advantage, thr" in capsys.readouterr().err


def _tiny_ids(text):
    from tokrl.models import tiny_tokenizer

    return tiny_tokenizer()(text, add_special_tokens=False)["input_ids"]


def test_scored_dataset_on_disk_pairs_columns_by_prefix(tmp_path):
    from datasets import Dataset

    rows = {
        "prompt": ["What is 2+2?", "What is 3+4?"],
        "chosen_input_ids": [_tiny_ids("4"), _tiny_ids("7")],
        "rejected_input_ids": [_tiny_ids("22"), _tiny_ids("34!")],
        "chosen_token_rewards": [[0.5], [0.25]],
        "rejected_token_rewards": [[-1.0, 0.1], [-0.5, -0.25, 0.0]],
        "rejected_token_weights": [[1.0, 0.5], [0.0, 1.0, 0.5]],
        "misaligned_scores": [[1.0, 2.0, 3.0, 4.0], [1.0]],
        "margin": [0.5, 1.5],
    }
    ds = Dataset.from_dict(rows)
    ds.info.description = json.dumps({"tokenizer": "tiny", "method": "cdpo", "beta": 0.1})
    ds.save_to_disk(str(tmp_path / "scored"))
    out = tmp_path / "ds.html"
    assert main(["inspect", str(tmp_path / "scored"), "--out", str(out), "--value", "token_rewards"]) == 0
    html = out.read_text()
    data = embedded(html)
    labels = [s["l"] for s in data["samples"]]
    assert labels == ["row 0 \u00b7 chosen", "row 0 \u00b7 rejected", "row 1 \u00b7 chosen", "row 1 \u00b7 rejected"]
    rejected1 = data["samples"][3]
    assert rejected1["p"] == ["3", "4", "!"]  # decoded with the tokenizer named in the metadata
    assert rejected1["v"] == {"token_rewards": [-0.5, -0.25, 0.0], "token_weights": [0.0, 1.0, 0.5]}
    assert rejected1["m"] == {"margin": 1.5} and rejected1["q"] == "What is 3+4?"
    assert data["groups"] == ["chosen", "rejected"]
    # chosen and rejected rewards share one scale: diverging, +-1 from the rejected -1.0
    rewards = data["scales"]["token_rewards"]
    assert (rewards["kind"], rewards["lo"], rewards["hi"], rewards["max"]) == ("diverging", -1.0, 1.0, 0.5)
    header = html[html.index('<header'):html.index('</header>')]
    assert "misaligned_scores" in header and "cdpo" in header and "tiny (from metadata &#x27;tokenizer&#x27;)" in header


def test_parquet_with_generic_ids_and_a_boolean_mask(tmp_path):
    from datasets import Dataset

    ids = _tiny_ids("a+b")
    Dataset.from_dict({"input_ids": [ids], "token_mask": [[False, True, True]],
                       "token_scores": [[0.5, 2.0, 1.0]]}).to_parquet(str(tmp_path / "clean.parquet"))
    out = tmp_path / "p.html"
    assert main(["inspect", str(tmp_path / "clean.parquet"), "--out", str(out), "--tokenizer", "tiny"]) == 0
    data = embedded(out.read_text())
    (sample,) = data["samples"]
    assert sample["p"] == ["a", "+", "b"] and sample["i"] == ids
    assert sample["v"] == {"token_mask": [0.0, 1.0, 1.0], "token_scores": [0.5, 2.0, 1.0]}
    scores = data["scales"]["token_scores"]
    assert (scores["kind"], scores["lo"], scores["hi"]) == ("sequential", 0.5, 2.0)
    assert colour(1.25, scores) == (253, 174, 107)  # the middle stop


def test_pair_columns_prefers_the_same_prefix_then_generic_ids():
    cols = {"input_ids": [[1, 2]], "chosen_ids": [[3, 4]], "chosen_w": [[0.1, 0.2]], "token_scores": [[1.0, 2.0]],
            "odd": [[1.0]], "text": ["ab"]}
    pairs, unpaired = pair_columns(cols)
    assert pairs == {"input_ids": ["token_scores"], "chosen_ids": ["chosen_w"]} and unpaired == ["odd"]


def test_errors_name_the_source(tmp_path, capsys):
    from datasets import Dataset

    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    Dataset.from_dict({"input_ids": [[1, 2]], "label": [1]}).save_to_disk(str(tmp_path / "plain"))
    assert main(["inspect", str(tmp_path / "plain")]) == 2
    assert "no per-token columns" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    append_jsonl(tmp_path / "run" / "metrics.jsonl", [{"step": 1, "loss": 1.0}])
    assert main(["inspect", str(tmp_path / "run")]) == 2
    assert "no token_values.jsonl (set token_dump_steps > 0" in capsys.readouterr().err


def test_preference_rows_without_ids_are_tokenised_like_trl(tmp_path):
    """cDPO/T-REG datasets may carry only text + `chosen_*`/`rejected_*` columns: ids come from the tokenizer,
    as TRL's DPOTrainer makes them (plain text gets the EOS appended)."""
    from datasets import Dataset

    Dataset.from_dict({
        "prompt": ["What is 2+2? "], "chosen": ["4"], "rejected": ["22"],
        "chosen_token_weights": [[0.0, 0.0]], "rejected_token_weights": [[1.0, 0.25, 0.0]],
        "rejected_ce_prob": [[0.125, 0.5, 0.75]],
        "token_columns_meta": [json.dumps({"tokenizer": "0123abcd", "evaluator": "tiny-pair"})],
    }).to_json(str(tmp_path / "cdpo.jsonl"))
    out = tmp_path / "c.html"
    assert main(["inspect", str(tmp_path / "cdpo.jsonl"), "--out", str(out), "--tokenizer", "tiny"]) == 0
    html = out.read_text()
    chosen, rejected = embedded(html)["samples"]
    assert chosen["p"] == ["4", "<|im_end|>"] and chosen["v"] == {"token_weights": [0.0, 0.0]}
    assert rejected["p"] == ["2", "2", "<|im_end|>"]
    assert rejected["v"] == {"token_weights": [1.0, 0.25, 0.0], "ce_prob": [0.125, 0.5, 0.75]}
    assert "tiny-pair" in html[html.index('<header'):html.index('</header>')]


def test_a_long_run_is_sampled_at_evenly_spaced_dumps(tmp_path):
    records = [{"step": step, "sample": k, "pieces": ["a"], "values": {"weight": [1.0]}}
               for step in range(10, 110, 10) for k in range(3)]
    run = make_run_dir(tmp_path / "run", records)
    out = tmp_path / "r.html"
    assert main(["inspect", str(run), "--out", str(out), "--max-samples", "12"]) == 0
    data = embedded(out.read_text())
    # 12 samples = 4 whole dumps of 3, at steps spread from the first to the last: 10, 40, 70, 100
    assert [s["l"] for s in data["samples"]][::3] == [f"step {s} \u00b7 completion 0" for s in (10, 40, 70, 100)]
    assert "12 of 30" in out.read_text()


def test_pipeline_stage_dir_with_tokenizer_in_its_metadata(tmp_path):
    """A token-cleaning-like stage: `input_ids` with `token_scores` and a `token_mask`, written in two shards."""
    from datasets import Dataset

    from tokrl.pipelines.stage import run_stage

    texts = ["1+1=2", "9-3=6", "2*4=8"]
    inputs = Dataset.from_dict({"text": texts})

    def score(shard, index):
        ids = [_tiny_ids(t) for t in shard["text"]]
        return {"input_ids": ids, "token_scores": [[0.5 * k - 1.0 for k in range(len(i))] for i in ids],
                "token_mask": [[k >= 2 for k in range(len(i))] for i in ids]}

    run_stage("score", tmp_path / "stage", score, inputs, {"ratio": 0.6}, shard_size=2,
              metadata={"tokenizer": "tiny", "method": "token_cleaning"})
    out = tmp_path / "s.html"
    assert main(["inspect", str(tmp_path / "stage"), "--out", str(out)]) == 0
    html = out.read_text()
    data = embedded(html)
    assert ["".join(s["p"]) for s in data["samples"]] == texts
    assert data["samples"][2]["v"] == {"token_scores": [-1.0, -0.5, 0.0, 0.5, 1.0],
                                       "token_mask": [0.0, 0.0, 1.0, 1.0, 1.0]}
    assert data["initial"] == "token_scores"
    header = html[html.index('<header'):html.index('</header>')]
    assert "token_cleaning" in header and "ratio" in header and "tiny (from metadata" in header
