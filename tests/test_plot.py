"""`tokrl plot`: one PNG per logged curve, and the pixels of each line go where the logged numbers say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokrl.cli import main
from tokrl.reports.plots import plot_run, series
from tokrl.diagnostics.token_dump import append_jsonl

C0 = np.array([31, 119, 180]) / 255.0  # matplotlib's first colour, which every curve uses


def write_metrics(run_dir, n=20):
    """reward rises, loss falls, kept fraction is flat; a final summary line repeats the last step."""
    records = [{"step": s, "reward": s / n, "loss": 1.0 - s / n, "weights/kept_frac": 0.2,
                "entropy": 0.5 + 0.01 * s, "weights/entropy_threshold": 1.0} for s in range(1, n + 1)]
    records.append({"step": n, "train_runtime": 3.0, "train_loss": 0.4})
    append_jsonl(run_dir / "metrics.jsonl", records)


def line_rows(path):
    """Mean pixel row of the curve's colour in the left and right tenths of the plotted line, and its row spread."""
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    hits = np.argwhere(np.abs(img - C0).max(axis=-1) < 0.06)
    assert len(hits) > 100, f"{path.name}: the curve is missing"
    cols = hits[:, 1]
    lo, hi = cols.min(), cols.max()
    left = hits[cols < lo + 0.1 * (hi - lo), 0].mean()
    right = hits[cols > hi - 0.1 * (hi - lo), 0].mean()
    return left, right, hits[:, 0].max() - hits[:, 0].min()


def test_plot_writes_one_png_per_curve_with_the_right_shape(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_metrics(run)
    assert main(["plot", str(run)]) == 0
    printed = capsys.readouterr().out.split()
    names = ["reward", "kept_frac", "loss", "entropy", "weights_entropy_threshold"]
    assert printed == [str(run / "plots" / f"{n}.png") for n in names]
    for name in names:
        data = (run / "plots" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # image rows grow downwards: a rising curve ends higher (smaller row) than it starts
    left, right, _ = line_rows(run / "plots" / "reward.png")
    assert right < left - 100
    left, right, _ = line_rows(run / "plots" / "loss.png")
    assert right > left + 100
    _, _, spread = line_rows(run / "plots" / "kept_frac.png")
    assert spread < 12  # a flat line (plus its markers)


def test_series_keeps_the_last_value_of_a_repeated_step():
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 1, "loss": 3.0}, {"step": 3, "x": 1}]
    assert series(history, "loss") == ([1, 2], [3.0, 1.0])


def test_falls_back_to_the_newest_checkpoint_state(tmp_path):
    for step, reward in ((2, 0.1), (10, 0.9)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        history = [{"step": s, "reward": reward, "loss": 1.0} for s in range(1, step + 1)]
        (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    paths = plot_run(tmp_path, tmp_path / "out")
    assert [p.name for p in paths] == ["reward.png", "loss.png"]


def test_missing_metrics_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    append_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "lr": 0.1}])
    with pytest.raises(ValueError, match="none of reward, weights/kept_frac, loss, entropy was logged"):
        plot_run(tmp_path)
