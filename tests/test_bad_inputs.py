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
    ("treg-missing-data-file", "treg", "treg_ultrafeedback.yaml", {"pairs.path": "/no/such/pairs.jsonl"}, [], ["/no/such/pairs.jsonl"]),
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


# ---- issue 14: values as users write them, ranges, model and data sources, eval settings -----------------------------
# Each case is an argv for `tokrl` in which {R} is the recipes folder and {T} a scratch folder holding FILES; the run
# (if any) may write only under {T}/run. `python tests/test_bad_inputs.py docs/bad_inputs.md` writes the table of
# every case with the error it gives now.

FILES = {
    "empty.jsonl": "",
    "blank.jsonl": "\n\n",
    "pairs_no_rejected.jsonl": '{"prompt": "a", "chosen": "b"}\n',
    "questions_no_question.jsonl": '{"q": "1+1?", "answer": "2"}\n',
    "notes.txt": "some text\n",
    "dup.yaml": "method: grpo\nmodel: tiny\ntrainer:\n  max_steps: 2\n  seed: 0\n  max_steps: 5\n",
    "trainer_int.yaml": "method: grpo\nmodel: tiny\ntrainer: 5\n",
    "top_max_steps.yaml": "method: grpo\nmodel: tiny\nmax_steps: 5\n",
    "top_batch_size.yaml": "method: grpo\nmodel: tiny\neval:\n  before: false\nbatch_size: 4\n",
    "eval_list.yaml": "method: grpo\nmodel: tiny\neval: [before]\n",
    "tab.yaml": "method: grpo\nmodel: tiny\ntrainer:\n\tmax_steps: 2\n",
    "empty.yaml": "",
    "list.yaml": "- method: grpo\n",
    "python_tag.yaml": "method: !!python/object/apply:os.system ['true']\nmodel: tiny\n",
    "emptymodel/.keep": None,  # None: an empty directory
    "rundir/final/config.json": "{}",
    "model_no_tokenizer/config.json": '{"model_type": "llama"}',
}
G = "{R}/grpo_arithmetic.yaml"
THR = "{R}/thr_grpo_arithmetic.yaml"
NEW_CASES = [
    # values and YAML
    ("duplicate-key", ["validate", "{T}/dup.yaml"], ["dup.yaml: line 6", "duplicate key 'max_steps' (first given on line 4)"]),
    ("section-not-mapping", ["validate", "{T}/trainer_int.yaml"], ["trainer_int.yaml", "'trainer' must be a mapping", "got int 5"]),
    ("top-level-trainer-key", ["validate", "{T}/top_max_steps.yaml"], ["unknown key 'max_steps'", "'trainer.max_steps'"]),
    ("top-level-eval-key", ["validate", "{T}/top_batch_size.yaml"], ["unknown key 'batch_size'", "'eval.batch_size'"]),
    ("eval-as-list", ["validate", "{T}/eval_list.yaml"], ["'eval' must be a mapping", "got list"]),
    ("tab-indent", ["validate", "{T}/tab.yaml"], ["tab.yaml: line 4 invalid YAML"]),
    ("empty-recipe", ["validate", "{T}/empty.yaml"], ["empty.yaml", "missing required key 'method'"]),
    ("recipe-is-list", ["validate", "{T}/list.yaml"], ["list.yaml", "must be a YAML mapping, got list"]),
    ("python-tag", ["validate", "{T}/python_tag.yaml"], ["python_tag.yaml: line 1 invalid YAML"]),
    ("recipe-is-dir", ["validate", "{R}"], ["is a directory; give a recipe file"]),
    ("override-bad-yaml", ["validate", G, "trainer.max_steps=[1"], ["override 'trainer.max_steps=[1': invalid value"]),
    ("override-into-scalar", ["validate", G, "trainer.max_steps.x=1"], ["override 'trainer.max_steps.x'", "'max_steps' is not a mapping"]),
    ("override-unknown-key", ["validate", G, "trainer.lr=1e-5"], ["unknown key 'trainer.lr'"]),
    ("fractional-int", ["validate", G, "trainer.max_steps=2.5"], ["'trainer.max_steps' must be int, got float 2.5"]),
    ("model-null", ["validate", G, "model="], ["missing required key 'model'"]),
    # ranges TRL does not check
    ("temperature-zero", ["validate", G, "trainer.temperature=0"], ["'trainer.temperature' must be > 0"]),
    ("negative-lr", ["validate", G, "trainer.learning_rate=-1e-5"], ["'trainer.learning_rate' must be >= 0, got -1e-05"]),
    ("zero-batch", ["validate", G, "trainer.per_device_train_batch_size=0"], ["'trainer.per_device_train_batch_size' must be >= 1"]),
    ("zero-completion-length", ["validate", G, "trainer.max_completion_length=0"], ["'trainer.max_completion_length' must be >= 1"]),
    ("negative-beta", ["validate", G, "trainer.beta=-1"], ["'trainer.beta' must be >= 0"]),
    ("zero-max-steps", ["validate", G, "trainer.max_steps=0"], ["'trainer.max_steps' must be >= 1 (or -1"]),
    ("top-p-zero", ["validate", G, "trainer.top_p=0"], ["'trainer.top_p' must be in (0, 1]"]),
    ("negative-seed", ["validate", G, "trainer.seed=-1"], ["'trainer.seed' must be >= 0"]),
    ("bf16-on-cpu", ["validate", G, "trainer.bf16=true"], ["invalid 'trainer' settings", "bf16"]),
    ("report-to-missing", ["validate", G, "trainer.report_to=wandb"], ["'trainer.report_to': wandb is not installed"]),
    ("resume-missing", ["validate", G, "trainer.resume_from_checkpoint={T}/no_ckpt"], ["'trainer.resume_from_checkpoint': no checkpoint directory"]),
    ("lora-dropout-one", ["validate", "{R}/cdpo_arithmetic.yaml", "train.lora={r: 4, lora_dropout: 1.0}"], ["'train.lora.lora_dropout' must be in [0, 1)"]),
    ("lora-key-typo", ["validate", "{R}/cdpo_arithmetic.yaml", "contrast.lora={rank: 4}"], ["unknown key 'contrast.lora.rank'"]),
    ("treg-lora-r-zero", ["validate", "{R}/treg_arithmetic.yaml", "train.lora={r: 0}"], ["'train.lora.r' must be >= 1"]),
    ("cdpo-negative-beta", ["validate", "{R}/cdpo_arithmetic.yaml", "trainer.beta=-0.1"], ["'trainer.beta' must be >= 0"]),
    ("clean-negative-lr", ["validate", "{R}/token_cleaning_arithmetic.yaml", "trainer.learning_rate=-1"], ["'trainer.learning_rate' must be >= 0"]),
    ("task-ops", ["validate", G, "task={name: arithmetic, ops: ['^']}"], ["task.ops: unknown operator"]),
    ("task-range", ["validate", G, "task={name: arithmetic, max_value: -3}"], ["task.max_value must be >= task.min_value"]),
    ("reward-not-a-function", ["validate", G, "reward=[tokrl.models:tiny_model]"], ["reward 'tokrl.models:tiny_model'"]),
    ("reward-missing-module", ["validate", G, "reward=[no_such_module:fn]"], ["reward 'no_such_module:fn'"]),
    ("dpo-weighter-need-unfilled", ["validate", "{R}/dpo_weights_from_data.yaml", "weighting={name: thr}"],
     ["invalid 'weighting'", "WeightedDPOTrainer cannot give weighter", "'advantages'"]),
    # eval settings
    ("eval-batch-zero", ["validate", G, "eval.batch_size=0"], ["eval.batch_size must be a whole number >= 1, got 0"]),
    ("eval-pass-k-zero", ["validate", THR, "eval.pass_k=[0, 8]"], ["eval.pass_k must be a whole number >= 1, got 0"]),
    ("eval-pass-k-scalar", ["validate", G, "eval.pass_k=8"], ["eval.pass_k must be a list of k values"]),
    ("eval-samples-below-k", ["validate", THR, "eval.num_samples=4"], ["eval.num_samples (4) must be >= the largest pass@k k (8)"]),
    ("eval-temperature-zero", ["validate", THR, "eval.temperature=0"], ["eval.temperature must be a number > 0"]),
    ("eval-cli-pass-k-zero", ["eval", "--model", "{T}/emptymodel", "--pass-k", "0"], ["--pass-k must be a whole number >= 1, got 0"]),
    ("eval-cli-batch-zero", ["eval", "--model", "{T}/emptymodel", "--batch-size", "0"], ["--batch-size must be a whole number >= 1"]),
    ("eval-cli-num-prompts-zero", ["eval", "--model", "{T}/emptymodel", "--num-prompts", "0"], ["--num-prompts must be a whole number >= 1"]),
    # model sources
    ("model-empty-dir", ["eval", "--model", "{T}/emptymodel"], ["emptymodel has no config.json", "(it is empty)"]),
    ("model-is-run-dir", ["eval", "--model", "{T}/rundir"], ["rundir has no config.json", "its trained model is in final/"]),
    ("model-is-file", ["eval", "--model", "{T}/notes.txt"], ["notes.txt is a file"]),
    ("model-no-tokenizer", ["eval", "--model", "{T}/model_no_tokenizer"], ["could not load a tokenizer from", "model_no_tokenizer"]),
    ("cdpo-model-empty-dir", ["validate", "{R}/cdpo_arithmetic.yaml", "model={T}/emptymodel"], ["cdpo_arithmetic.yaml", "emptymodel has no config.json"]),
    ("clean-model-empty-dir", ["validate", "{R}/token_cleaning_arithmetic.yaml", "model={T}/emptymodel"], ["emptymodel has no config.json"]),
    # data files
    ("treg-empty-jsonl", ["validate", "{R}/treg_ultrafeedback.yaml", "pairs.path={T}/empty.jsonl"], ["pairs.path: ", "empty.jsonl is empty (no rows)"]),
    ("treg-blank-jsonl", ["validate", "{R}/treg_ultrafeedback.yaml", "pairs.path={T}/blank.jsonl"], ["blank.jsonl is empty (no rows)"]),
    ("treg-missing-column", ["validate", "{R}/treg_ultrafeedback.yaml", "pairs.path={T}/pairs_no_rejected.jsonl"], ["missing column 'rejected'"]),
    ("treg-txt-file", ["validate", "{R}/treg_ultrafeedback.yaml", "pairs.path={T}/notes.txt"], ["notes.txt: unsupported file type '.txt'"]),
    ("treg-data-missing", ["validate", "{R}/treg_ultrafeedback.yaml", "pairs.path={T}/nope.jsonl"], ["nope.jsonl: no such file or directory"]),
    ("cdpo-empty-jsonl", ["validate", "{R}/cdpo_gsm8k.yaml", "data.path={T}/empty.jsonl", "data.hub=false"], ["cdpo_gsm8k.yaml: data: ", "empty.jsonl is empty (no rows)"]),
    ("cdpo-missing-column", ["validate", "{R}/cdpo_gsm8k.yaml", "data.path={T}/questions_no_question.jsonl", "data.hub=false"], ["no column 'question'"]),
    ("cdpo-prompts-missing", ["validate", "{R}/cdpo_gsm8k.yaml", "data.path={T}/nope", "data.hub=false"], ["data: ", "nope' not found"]),
]


def _make_files(root: Path) -> None:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text is not None:
            path.write_text(text)


def _snapshot(*roots: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))
            if p.is_file() and "run" not in p.relative_to(root).parts[:1]}


def run_case(argv: list[str], scratch: Path, capsys) -> tuple[int, str]:
    args = [a.replace("{R}", str(RECIPES)).replace("{T}", str(scratch)) for a in argv]
    code = main(args)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", NEW_CASES, ids=[c[0] for c in NEW_CASES])
def test_issue14_bad_input_gives_one_line_and_touches_nothing(case, tmp_path, capsys):
    case_id, argv, fragments = case
    _make_files(tmp_path)
    before = _snapshot(tmp_path, RECIPES)
    code, err = run_case(argv, tmp_path, capsys)
    assert code == 2, (case_id, err)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("tokrl")]
    assert len(lines) == 1 and lines[0].startswith("tokrl: error:") and "Traceback" not in err, err
    err = lines[0]  # (datasets may draw a progress bar while reading a file)
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert _snapshot(tmp_path, RECIPES) == before  # nothing outside the run dir was written


def test_the_catalogue_grew_by_at_least_forty_cases():
    assert len(NEW_CASES) >= 40 and len({c[0] for c in NEW_CASES}) == len(NEW_CASES)


def write_catalogue(out: Path) -> None:
    """docs/bad_inputs.md: every case of this file's issue-14 catalogue with the one line it gives now."""
    import contextlib
    import io
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        _make_files(scratch)
        for case_id, argv, _ in NEW_CASES:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                main([a.replace("{R}", str(RECIPES)).replace("{T}", str(scratch)) for a in argv])
            line = err.getvalue().strip().splitlines()[-1].replace(str(scratch), "$T").replace(str(RECIPES), "recipes")
            line = line.replace(" (run with --debug for the traceback)", "")
            command = " ".join(argv).replace("{R}", "recipes").replace("{T}", "$T")
            rows.append(f"| {case_id} | `tokrl {command}` | {line.replace('|', '/')} |")
    out.write_text(
        "# Bad inputs and the one line each gives\n\n"
        "Generated by `python tests/test_bad_inputs.py docs/bad_inputs.md` from the issue-14 catalogue in\n"
        "tests/test_bad_inputs.py (each case is also a test: exit code 2, exactly one `tokrl: error:` line naming the\n"
        "key, file or column, and no file outside the run directory changed). `$T` is a scratch folder holding the\n"
        "files the cases name (an empty .jsonl, a run directory, a model directory without a tokenizer, ...). Every\n"
        "error ends with ` (run with --debug for the traceback)`, left out here.\n\n"
        f"{len(rows)} cases.\n\n| case | command | error |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    import sys

    write_catalogue(Path(sys.argv[1]))
