"""A recipe's `data:` section: where the prompts come from and how they are formatted, for every method.

    data:
      task: arithmetic                 # an embedded task by name (or {name: arithmetic, max_value: 50}), or
      path: my_problems.jsonl          # a local .jsonl/.json/.parquet/.csv file or a `save_to_disk` directory,
      hub: false                       #   or a hub dataset name with hub: true (never fetched otherwise)
      name: main                       # the hub dataset's config name
      split: train                     # eval rows: eval_split (of path, or of eval_path), eval_path, or
                                       #   eval_fraction (a seeded split of the train rows)
      filter: {level: [Level 4, Level 5]}   # keep rows whose column holds one of the values
      question_column: question        # default: the first of prompt / question / problem present
      answer_column: answer            # default: answer, else solution ("... #### 72" and \\boxed{72} give "72")
      template: "{question}"           # any {column} of the dataset
      system_prompt: null
      few_shot: null                   # text put before every formatted prompt (worked examples)
      chat_template: true              # conversational prompts (TRL's format); false: plain text prompts

Every row comes out with `prompt` (a list of messages, or a string with `chat_template: false`), `answer` (the
gold final answer as text, when the data has one) and all its other columns, which TRL hands to reward functions
as keyword arguments. Errors name the file, the column and the columns present.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from tokrl.data import TASKS
from tokrl.recipe import RecipeError, check_keys, type_ok
from tokrl.utils import did_you_mean

FILE_TYPES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
PROMPT_COLUMNS = ("prompt", "question", "problem")
ANSWER_COLUMNS = ("answer", "solution")
FORMAT_KEYS = ("template", "system_prompt", "few_shot", "chat_template")


@dataclass
class DataSpec:
    """The `data:` section, checked; `base_dir` is the recipe's folder (relative paths are tried there too)."""

    task: Any = None
    path: str | None = None
    hub: bool = False
    name: str | None = None
    split: str = "train"
    eval_split: str | None = None
    eval_path: str | None = None
    eval_fraction: float | None = None
    filter: dict | None = None
    num_train: int | None = None
    num_eval: int | None = None
    seed: int = 0
    prompt_column: str | None = None
    question_column: str | None = None
    answer_column: str | None = None
    template: str | None = None
    system_prompt: str | None = None
    few_shot: str | None = None
    chat_template: bool = True
    file: str = "<recipe>"
    base_dir: str | None = None
    formatting_set: bool = False  # whether any formatting key was given (an embedded task keeps its own prompts)

    def where(self) -> str:
        return f"{self.file}: data"


DATA_KEYS = tuple(f.name for f in dataclasses.fields(DataSpec) if f.name not in ("file", "base_dir",
                                                                                    "formatting_set"))


def data_spec(recipe: dict, file) -> DataSpec:
    """The recipe's `data:` section (or its `task:` shorthand, or the default arithmetic task) as a DataSpec."""
    section, task = recipe.get("data"), recipe.get("task")
    if section is not None and task is not None:
        raise RecipeError(f"{file}: set 'data' or its shorthand 'task', not both (use data.task: ...)")
    if section is None:
        section = {"task": task if task is not None else "arithmetic"}
    section = dict(check_keys(section, DATA_KEYS, "data", file))
    if section.get("task") is None and section.get("path") is None:
        raise RecipeError(f"{file}: data: set 'task' (an embedded task) or 'path' (a dataset file or directory)")
    if section.get("task") is not None and section.get("path") is not None:
        raise RecipeError(f"{file}: data: set 'task' or 'path', not both")
    kinds, hints = {f.name: f.type for f in dataclasses.fields(DataSpec)}, typing.get_type_hints(DataSpec)
    for key, value in section.items():
        if key not in ("task", "filter") and not type_ok(value, hints[key]):
            raise RecipeError(f"{file}: 'data.{key}' must be {kinds[key].replace(' | None', '')}, got {value!r}")
    fraction = section.get("eval_fraction")
    if fraction is not None and not 0 < fraction < 1:
        raise RecipeError(f"{file}: 'data.eval_fraction' must be in (0, 1), got {fraction!r}")
    sources = [k for k in ("eval_split", "eval_path", "eval_fraction") if section.get(k) is not None]
    if "eval_fraction" in sources and len(sources) > 1:
        raise RecipeError(f"{file}: data: set one of {', '.join(sources)} (where the eval rows come from)")
    rule = section.get("filter")
    if rule is not None and not (isinstance(rule, dict) and all(isinstance(v, list) for v in rule.values())):
        raise RecipeError(f"{file}: 'data.filter' maps a column to the list of values to keep, got {rule!r}")
    return DataSpec(**section, file=str(file), base_dir=str(Path(file).parent) if file else None,
                    formatting_set=any(k in section for k in FORMAT_KEYS))


# ---- reading tables ---------------------------------------------------------------------------------------------


def resolve_path(path: str, base_dir: str | None) -> Path | None:
    """`path` as given (relative to the working directory), else relative to the recipe's folder; None if neither."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if base_dir and not p.is_absolute() and (Path(base_dir) / p).exists():
        return Path(base_dir) / p
    return None


def read_table(path: str, *, split: str = "train", name: str | None = None, hub: bool = False,
               base_dir: str | None = None, where: str = "data") -> Dataset:
    """One split of a local file, a `save_to_disk` directory, or (only with `hub=True`) a hub dataset."""
    local = resolve_path(str(path), base_dir)
    if local is None:
        if hub:
            return load_dataset(str(path), name, split=split)
        raise RecipeError(f"{where}: '{path}' not found (relative paths are read from the working directory or the "
                          "recipe's folder; a hub dataset needs hub: true)")
    if local.is_dir():
        try:
            ds = load_from_disk(str(local))
        except FileNotFoundError as exc:
            raise RecipeError(f"{where}: {local} is not a `save_to_disk` dataset directory ({exc})") from None
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise RecipeError(f"{where}: {local} has no split '{split}'{did_you_mean(split, ds)} "
                                  f"(splits: {list(ds)})")
            ds = ds[split]
        return ds
    kind = FILE_TYPES.get(local.suffix.lower())
    if kind is None:
        raise RecipeError(f"{where}: {local}: unsupported file type '{local.suffix}' (use {', '.join(FILE_TYPES)} or a "
                          "`save_to_disk` directory)")
    if not local.read_bytes()[:4096].strip():  # datasets would fail with a bare StopIteration
        raise RecipeError(f"{where}: {local} is empty (no rows)")
    try:
        return load_dataset(kind, data_files=str(local), split="train")
    except Exception as exc:  # a malformed file: say which one
        raise RecipeError(f"{where}: {local} could not be read as {kind}: {str(exc).splitlines()[0]}") from None


# ---- formatting ---------------------------------------------------------------------------------------------------

BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced), or None."""
    starts = [m.end() for m in BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None


def final_answer(text: str) -> str | None:
    """The final answer a solution states: after the last '####' (GSM8K), else in the last \\boxed{} (MATH)."""
    if "####" in text:
        return text.rsplit("####", 1)[1].strip() or None
    return last_boxed(text)


def gold_answer(value: Any) -> str:
    """A dataset's answer cell as the gold final answer: '... #### 72' -> '72', '... \\boxed{1/2}' -> '1/2'."""
    text = str(value)
    found = final_answer(text)
    return (found if found is not None else text).strip()


def _pick(columns: list[str], explicit: str | None, defaults: tuple[str, ...], key: str, where: str, split: str):
    if explicit is not None:
        if explicit not in columns:
            raise RecipeError(f"{where}: the {split} rows have no column '{explicit}' (data.{key}; columns: "
                              f"{columns})")
        return explicit
    return next((c for c in defaults if c in columns), None)


def format_split(ds: Dataset, spec: DataSpec, split: str, source: str) -> Dataset:
    """Add `prompt` (formatted) and `answer` (gold final answer) columns; every other column is kept."""
    where = f"{spec.file}: data ({source})"
    columns = list(ds.column_names)
    if spec.template is None:
        prompt_col = _pick(columns, spec.prompt_column or spec.question_column, PROMPT_COLUMNS,
                           "prompt_column" if spec.prompt_column else "question_column", where, split)
        if prompt_col is None:
            raise RecipeError(f"{where}: the {split} rows have none of the columns {list(PROMPT_COLUMNS)} (columns: "
                              f"{columns}); set data.question_column or data.template")
        template = "{" + prompt_col + "}"
    else:
        template = spec.template
        for field in re.findall(r"(?<!\{)\{([^{}:!]+)[^{}]*\}(?!\})", template):
            if field not in columns:
                raise RecipeError(f"{where}: data.template uses {{{field}}} but the {split} rows have no column "
                                  f"'{field}' (columns: {columns})")
    answer_col = _pick(columns, spec.answer_column, ANSWER_COLUMNS, "answer_column", where, split)
    keep_solution = answer_col == "answer" and "solution" not in columns

    def row_fn(row):
        body = template.format(**row) if spec.template is not None else row[template[1:-1]]
        out = {"prompt": make_prompt(body, spec)}
        if answer_col is not None:
            out["answer"] = gold_answer(row[answer_col])
            if keep_solution:
                out["solution"] = str(row[answer_col])
        return out

    drop = [c for c in ("prompt", "answer") if c in columns]
    return ds.map(row_fn, remove_columns=drop, desc=None)


def make_prompt(body, spec: DataSpec):
    """A conversational prompt (TRL's format) or a plain string, with the system prompt and few-shot prefix."""
    if isinstance(body, list):  # already a list of messages
        if spec.system_prompt and not (body and body[0].get("role") == "system"):
            body = [{"role": "system", "content": spec.system_prompt}, *body]
        return body
    text = (spec.few_shot or "") + str(body)
    if spec.chat_template:
        messages = [{"role": "user", "content": text}]
        if spec.system_prompt:
            messages.insert(0, {"role": "system", "content": spec.system_prompt})
        return messages
    return f"{spec.system_prompt}\n\n{text}" if spec.system_prompt else text


# ---- building the splits ------------------------------------------------------------------------------------------


def build_task(task: Any, file):
    """An embedded task from a name or a mapping {name: ..., field: value}; unknown names and fields are errors."""
    spec = {"name": task} if isinstance(task, str) else dict(task or {"name": "arithmetic"})
    name = spec.pop("name", "arithmetic")
    if name not in TASKS:
        raise RecipeError(f"{file}: unknown task '{name}'{did_you_mean(name, TASKS)}; known: {', '.join(TASKS)}")
    task_cls = TASKS[name]
    check_keys(spec, [f.name for f in dataclasses.fields(task_cls)], "task", file)
    try:
        return task_cls(**spec)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{file}: {exc}") from None


def build_data(spec: DataSpec) -> DatasetDict:
    """{"train", "eval"} datasets for the spec (eval may be empty); errors name the file and the column."""
    if spec.task is not None:
        built = build_task(spec.task, spec.file).build()
        train, evals = built["train"], built["eval"]
        if spec.formatting_set or "prompt" not in train.column_names:
            train = format_split(train.remove_columns(["prompt"]) if "prompt" in train.column_names else train,
                                 spec, "train", "task")
            evals = format_split(evals.remove_columns(["prompt"]) if "prompt" in evals.column_names else evals,
                                 spec, "eval", "task") if len(evals) else train.select([])
    else:
        read = dict(name=spec.name, hub=spec.hub, base_dir=spec.base_dir, where=spec.where())
        train = keep_rows(read_table(spec.path, split=spec.split, **read), spec, spec.path)
        if spec.eval_path is not None:
            evals = keep_rows(read_table(spec.eval_path, split=spec.eval_split or spec.split, **read), spec,
                              spec.eval_path)
        elif spec.eval_split is not None:
            evals = keep_rows(read_table(spec.path, split=spec.eval_split, **read), spec, spec.path)
        elif spec.eval_fraction is not None:
            parts = train.train_test_split(test_size=spec.eval_fraction, seed=spec.seed)
            train, evals = parts["train"], parts["test"]
        else:
            evals = train.select([])
        source = spec.path
        train = format_split(train, spec, spec.split, source)
        evals = format_split(evals, spec, spec.eval_split or "eval", spec.eval_path or source) if len(evals) else \
            train.select([])  # an empty map adds no columns: keep the train split's
    if len(train) == 0:
        raise RecipeError(f"{spec.where()}: the train split is empty")
    if spec.num_train is not None:
        train = train.select(range(min(spec.num_train, len(train))))
    if spec.num_eval is not None:
        evals = evals.select(range(min(spec.num_eval, len(evals))))
    return DatasetDict(train=train, eval=evals)


def keep_rows(ds: Dataset, spec: DataSpec, source: str) -> Dataset:
    """The rows `data.filter` keeps (each named column holds one of its listed values)."""
    for column, values in (spec.filter or {}).items():
        if column not in ds.column_names:
            raise RecipeError(f"{spec.file}: data ({source}): data.filter names column '{column}', which the rows "
                              f"lack (columns: {ds.column_names})")
        allowed = set(values)
        ds = ds.filter(lambda v: v in allowed, input_columns=[column])
    return ds


def is_local(spec: DataSpec) -> bool:
    """Whether building the data reads only this machine (an embedded task or local files): checks that read the
    data (validate, the reward signature check) run then; a hub dataset is fetched only when a run needs it."""
    paths = [spec.path, spec.eval_path]
    return spec.task is not None or not spec.hub or all(resolve_path(p, spec.base_dir) for p in paths if p)


def recipe_data(recipe: dict, file) -> DatasetDict:
    """The recipe's train and eval splits (`data:` or `task:`), formatted."""
    return build_data(data_spec(recipe, file))
