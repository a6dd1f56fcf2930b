"""Recipes and overrides read values as users write them: YAML 1.2 / Python numbers, no silent duplicate keys."""

import pytest

from tokrl.recipe import RecipeError, apply_overrides, build_config, load_yaml, parse_yaml


@pytest.mark.parametrize("text, expected", [
    ("1e-5", 1e-5), ("1e3", 1000.0), (".5", 0.5), ("-1E+3", -1000.0), ("+.5", 0.5), ("1.0e-5", 1e-5),
    ("5.", 5.0), ("1_000", 1000), ("010", 10), ("0x1f", 31), ("0o17", 15), ("-3", -3),
])
def test_numbers_read_as_yaml_1_2_and_python_do(text, expected):
    value = parse_yaml(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1:30", "1e", "a1e3", "1.2.3", "v1.0"])
def test_things_that_are_not_numbers_stay_strings(text):
    assert parse_yaml(text) == text


def test_duplicate_key_is_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("method: grpo\ntrainer:\n  max_steps: 2\n  seed: 0\n  max_steps: 5\n")
    with pytest.raises(RecipeError) as info:
        load_yaml(path)
    assert str(info.value) == f"{path}: line 5 invalid YAML: duplicate key 'max_steps' (first given on line 3)"


def test_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: &b {seed: 1, lr: 2}\ntrainer:\n  <<: *b\n  lr: 3\n")
    assert load_yaml(path)["trainer"] == {"seed": 1, "lr": 3}


def test_python_object_tags_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_yaml(path)


def test_overrides_parse_numbers_like_the_recipe():
    recipe = apply_overrides({"trainer": {}}, ["trainer.learning_rate=1e-5", "trainer.max_steps=1e3", "eval.x=.5"])
    assert recipe == {"trainer": {"learning_rate": 1e-5, "max_steps": 1000.0}, "eval": {"x": 0.5}}


def test_a_whole_float_is_taken_where_an_int_is_expected_and_a_fraction_is_not(tmp_path):
    from tokrl.trainers import WeightedGRPOConfig

    config = build_config(WeightedGRPOConfig, {"learning_rate": 1e-5, "max_steps": 1e3, "num_generations": 2,
                                               "per_device_train_batch_size": 2}, "r.yaml",
                          output_dir=str(tmp_path), report_to="none")
    assert config.learning_rate == 1e-5 and config.max_steps == 1000 and type(config.max_steps) is int
    with pytest.raises(RecipeError, match=r"r.yaml: 'trainer.max_steps' must be int, got float 2.5"):
        build_config(WeightedGRPOConfig, {"max_steps": 2.5}, "r.yaml", output_dir=str(tmp_path))


def test_recipe_and_override_with_1e_5_validate_through_the_cli(tmp_path, capsys):
    from tokrl.cli import main

    path = tmp_path / "r.yaml"
    path.write_text("method: grpo\nmodel: tiny\ntrainer:\n  learning_rate: 1e-5\n  max_steps: 1e3\n")
    assert main(["validate", str(path)]) == 0
    assert main(["validate", str(path), "trainer.learning_rate=3e-6", "trainer.max_steps=2e1"]) == 0
    assert "ok" in capsys.readouterr().out
