"""What the CLI prints: errors and summaries once per job (the main process), no third-party noise by default."""

from tokrl.cli import main


def test_only_the_main_process_prints_errors_and_summaries(tmp_path, capsys, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text("method: grpo\nmodel: tiny\ntrainer:\n  max_steps: many\n")
    monkeypatch.setenv("RANK", "1")  # what torchrun / accelerate launch set on the second process
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.count(f"tokrl: error: {path}: 'trainer.max_steps' must be int") == 1


def _validate_warnings(tmp_path, *flags):
    import warnings

    path = tmp_path / "r.yaml"
    path.write_text("method: grpo\nmodel: tiny\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*flags, "validate", str(path)]) == 0
    return [str(w.message) for w in caught]


def test_third_party_warnings_are_hidden(tmp_path):
    assert not [m for m in _validate_warnings(tmp_path) if "gradient_checkpointing" in m]


def test_verbose_keeps_third_party_warnings(tmp_path):
    assert [m for m in _validate_warnings(tmp_path, "--verbose") if "`gradient_checkpointing` is deprecated" in m]
