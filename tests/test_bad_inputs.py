"""The catalogue of bad inputs: each gives one readable line naming the file, key or column (issue: reliability).

Recipe cases go through the real CLI (`tokrl validate`/`train`/`cdpo`/`treg`/`clean`) and must print exactly one
`tokrl: error:` line, no traceback. Data cases call the library and check the exception's first line.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from tokrl.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe(name: str, **changes) -> dict:
    """A shipped recipe with dotted-key changes (None deletes the key)."""
    data = yaml.safe_load((RECIPES / name).read_text())
    for dotted, value in changes.items():
        node, parts = data, dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return data


# (id, command, recipe file, recipe content or raw text, extra CLI args, fragments the one-line error must contain)
CLI_CASES = [
    ("unknown-top-key", "validate", "grpo_arithmetic.yaml", {"modle": "x"}, [], ["unknown key 'modle'", "did you mean 'model'"]),
    ("missing-method", "validate", "grpo_arithmetic.yaml", {"method": None}, [], ["missing required key 'method'"]),
    ("unknown-method", "validate", "grpo_arithmetic.yaml", {"method": "grpoo"}, [], ["unknown method 'grpoo'", "did you mean 'grpo'"]),
    ("trainer-typo", "validate", "grpo_arithmetic.yaml", {"trainer.learnig_rate": 1e-5}, [], ["'trainer.learnig_rate'", "did you mean 'learning_rate'"]),
    ("wrong-type-float", "validate", "grpo_arithmetic.yaml", {"trainer.learning_rate": "high"}, [], ["'trainer.learning_rate' must be float"]),
    ("wrong-type-int", "validate", "grpo_arithmetic.yaml", {"trainer.max_steps": "ten"}, [], ["'trainer.max_steps' must be int"]),
    ("wrong-type-bool", "validate", "grpo_arithmetic.yaml", {"trainer.bf16": "yes please"}, [], ["'trainer.bf16' must be bool"]),
    ("zero-generations", "validate", "grpo_arithmetic.yaml", {"trainer.num_generations": 0}, [], ["num_generations must be >= 2"]),
    ("negative-quantile", "validate", "forking_grpo_arithmetic.yaml", {"weighting.rho": -0.2}, [], ["rho must be in [0, 1]"]),
    ("moved-preset-key", "validate", "forking_grpo_arithmetic.yaml", {"trainer.forking_rho": 0.5}, [], ["trainer.forking_rho moved to weighting.rho"]),
    ("quantile-above-one", "validate", "grpo_arithmetic.yaml", {"weighting": {"name": "entropy_quantile", "rho": 1.2}}, [], ["invalid 'weighting'", "rho must be in [0, 1]"]),
    ("unknown-weighter", "validate", "grpo_arithmetic.yaml", {"weighting": {"name": "forking"}}, [], ["unknown weighter 'forking'"]),
    ("weighter-option-typo", "validate", "grpo_arithmetic.yaml", {"weighting": {"name": "entropy_quantile", "scop": "global"}}, [], ["no option 'scop'", "did you mean 'scope'"]),
    ("bad-scope", "validate", "forking_grpo_arithmetic.yaml", {"weighting.scope": "node"}, [], ["scope must be one of"]),
    ("unknown-task", "validate", "grpo_arithmetic.yaml", {"task.name": "algebra"}, [], ["unknown task 'algebra'"]),
    ("task-typo", "validate", "grpo_arithmetic.yaml", {"task.num_trian": 5}, [], ["unknown key 'task.num_trian'", "did you mean 'num_train'"]),
    ("empty-train-split", "validate", "grpo_arithmetic.yaml", {"task.num_train": 0}, [], ["task.num_train must be >= 1"]),
    ("unknown-reward", "validate", "grpo_arithmetic.yaml", {"reward": ["exact"]}, [], ["unknown reward 'exact'"]),
    ("eval-typo", "validate", "grpo_arithmetic.yaml", {"eval.pass_kk": [8]}, [], ["unknown key 'eval.pass_kk'", "did you mean 'pass_k'"]),
    ("pipeline-method-in-train", "train", "grpo_arithmetic.yaml", {"method": "treg"}, [], ["unknown key 'weighting'"]),
    ("missing-model-dir", "train", "grpo_arithmetic.yaml", {"model": "/no/such/model/dir", "eval.before": False}, [], ["model '/no/such/model/dir': no such directory"]),
    ("cdpo-stage-typo", "validate", "cdpo_arithmetic.yaml", {"sampel": {"n": 2}}, [], ["unknown key 'sampel'", "did you mean 'sample'"]),
    ("cdpo-trainer-typo", "validate", "cdpo_arithmetic.yaml", {"trainer.betta": 0.1}, [], ["betta"]),
    ("treg-trainer-typo", "validate", "treg_arithmetic.yaml", {"trainer.treg_alpah": 0.1}, [], ["treg_alpah"]),
    ("treg-missing-data-file", "treg", "treg_ultrafeedback.yaml", {"data.path": "/no/such/pairs.jsonl"}, [], ["/no/such/pairs.jsonl"]),
    ("clean-ratio-above-one", "validate", "token_cleaning_arithmetic.yaml", {"cleaning.keep_ratio": 1.5}, [], ["cleaning.keep_ratio must be in (0, 1]"]),
    ("clean-key-typo", "validate", "token_cleaning_arithmetic.yaml", {"cleaning.keep_ration": 0.5}, [], ["unknown key 'cleaning.keep_ration'"]),
    ("invalid-yaml", "validate", "grpo_arithmetic.yaml", "method: grpo\ntrainer: [1, 2\n", [], ["invalid YAML"]),
    ("not-a-mapping", "validate", "grpo_arithmetic.yaml", "- grpo\n- forking\n", [], ["must be a YAML mapping"]),
    ("bad-override", "validate", "grpo_arithmetic.yaml", {}, ["--", "trainer.max_steps"], None),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_gives_one_line_naming_it(case, tmp_path, capsys):
    case_id, command, base, content, extra, fragments = case
    path = tmp_path / f"{case_id}.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(recipe(base, **content), sort_keys=False))
    if case_id == "bad-override":
        assert main(["train", str(path), "trainer.max_steps"]) == 2
        fragments = ["override 'trainer.max_steps' must look like key=value"]
    else:
        assert main([command, str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tokrl: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    if "unknown key" in err or "' must be " in err:
        assert str(path) in err  # recipe errors name the file


def test_missing_recipe_file_names_it(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "gone.yaml")]) == 2
    assert f"{tmp_path / 'gone.yaml'}: recipe file not found" in capsys.readouterr().err


# ---- data-level cases: library calls, first line of the exception ---------------------------------------------------


def _pref_dataset(rejected_weights):
    return Dataset.from_dict({
        "prompt_ids": [[1, 2, 3], [1, 2]],
        "chosen_ids": [[4, 5], [6]],
        "rejected_ids": [[7, 8, 9], [4]],
        "chosen_token_weights": [[1.0, 1.0], [1.0]],
        "rejected_token_weights": rejected_weights,
    })


def case_dpo_column_length():
    from tokrl.trainers.token_columns import check_columns

    check_columns(_pref_dataset([[1.0, 1.0, 1.0], [1.0, 0.5]]), ["token_weights"], None, "keep_start")


def case_dpo_missing_column():
    from tokrl.trainers.token_columns import check_columns

    check_columns(_pref_dataset([[1.0, 1.0, 1.0], [1.0]]).remove_columns("chosen_token_weights"), ["token_weights"],
                  None, "keep_start")


def case_sft_mask_length():
    from tokrl.trainers.token_cleaning_sft import prepare_weighted_dataset
    from tokrl.weighting import DatasetColumn

    data = Dataset.from_dict({"input_ids": [[1, 2, 3, 4], [1, 2, 3]], "completion_mask": [[0, 0, 1, 1], [0, 1, 1]],
                              "token_mask": [[0, 0, 1, 1], [0, 1]]})
    prepare_weighted_dataset(data, DatasetColumn("token_mask"), max_length=None)


def case_sft_missing_column():
    from tokrl.trainers.token_cleaning_sft import prepare_weighted_dataset
    from tokrl.weighting import DatasetColumn

    data = Dataset.from_dict({"input_ids": [[1, 2, 3]], "completion_mask": [[0, 1, 1]]})
    prepare_weighted_dataset(data, DatasetColumn("token_mask"), max_length=None)


def case_mismatched_tokenizers():
    from tokrl.models import tiny_tokenizer
    from tokrl.trainers.token_columns import check_metadata, token_columns_metadata

    other = tiny_tokenizer()
    other.add_tokens(["<extra>"])
    data = Dataset.from_dict({"token_columns_meta": [token_columns_metadata(other)]})
    check_metadata(data, tiny_tokenizer())


def case_scorer_missing_key():
    from tokrl.models import tiny_model
    from tokrl.scoring import score_tokens

    score_tokens(tiny_model()[0], [{"prompt_ids": [1, 2]}])


def case_weighter_missing_column():
    from tokrl.weighting import DatasetColumn, TokenView

    mask = torch.ones(1, 3)
    DatasetColumn("critical_weights")(TokenView(completion_ids=mask.long(), completion_mask=mask))


def case_empty_eval_dataset():
    from tokrl.evaluation import evaluate
    from tokrl.models import tiny_model

    model, tokenizer = tiny_model()
    evaluate(model, tokenizer, Dataset.from_dict({"prompt": [], "answer": []}))


DATA_CASES = [
    ("dpo-column-length", case_dpo_column_length, ["column 'rejected_token_weights' row 1", "2 values"]),
    ("dpo-missing-column", case_dpo_missing_column, ["no column 'chosen_token_weights'"]),
    ("sft-mask-length", case_sft_mask_length, ["row 1", "'token_mask'"]),
    ("sft-missing-column", case_sft_missing_column, ["token_mask"]),
    ("mismatched-tokenizers", case_mismatched_tokenizers, ["column 'token_columns_meta'", "tokenizer"]),
    ("scorer-missing-key", case_scorer_missing_key, ["example 0: missing key 'completion_ids'"]),
    ("weighter-missing-column", case_weighter_missing_column, ["per-token column 'critical_weights"]),
    ("empty-eval-dataset", case_empty_eval_dataset, ["evaluation dataset is empty"]),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_bad_input_names_the_column_or_row(case):
    _, fn, fragments = case
    with pytest.raises((ValueError, KeyError, TypeError)) as info:
        fn()
    message = str(info.value).strip("'\"")
    first = message.splitlines()[0]
    for fragment in fragments:
        assert fragment in first, (fragment, first)


def test_the_catalogue_has_at_least_thirty_cases():
    assert len(CLI_CASES) + len(DATA_CASES) + 1 >= 30
