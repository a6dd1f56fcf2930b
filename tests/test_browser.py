"""The heatmap in a real browser: headless Chromium renders it, and the DOM and pixels show the right tokens.

Needs the Debian package `chromium` (or `TOKRL_CHROMIUM=/path/to/chrome`). Without it the tests skip with a
message on a user's machine; with `CI=true` a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from test_inspect import RECORDS, make_run_dir
from tokrl.commands.inspect import inspect
from tokrl.reports.colors import colour, value_scale

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,900"]


def find_chromium() -> str:
    for name in (os.environ.get("TOKRL_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        path = name and shutil.which(name)
        if path:
            return path
    message = "Chromium not found: install the Debian package `chromium` (apt-get install -y chromium) to run it"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    return find_chromium()


def browse(chromium, tmp_path, url, *action, timeout=120) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"  # a fresh profile per launch
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *action, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def drawn(dom: str) -> str:
    """The part of the DOM the page draws samples into."""
    return dom[dom.index('<main id="samples">'):dom.index("</main>")]


def token_span(s, k, piece, rgb):
    dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 140
    style = f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]})" + (";color:#fff" if dark else "")
    return f'<span class="tok" data-s="{s}" data-k="{k}" style="{style}">{piece}</span>'


def test_heatmap_renders_tokens_colours_and_legend(chromium, tmp_path):
    report = inspect(make_run_dir(tmp_path / "run"), tmp_path / "report.html")
    dom = browse(chromium, tmp_path, report.as_uri(), "--dump-dom").stdout
    weight = value_scale(v for r in RECORDS for v in r["values"]["weight"])
    # the tokens, in the colours the Python mirror of the page's scale computes (weight 1: darkest orange)
    assert token_span(0, 1, " answer", colour(1.0, weight)) in dom
    assert token_span(0, 2, " is", colour(0.25, weight)) in dom
    assert token_span(1, 1, "&lt;b&gt;&amp;", (255, 255, 255)) in dom
    assert token_span(1, 2, "\u21b5\n", (255, 255, 255)) in dom  # a newline is shown, then broken
    assert drawn(dom).count('<span class="tok') == sum(len(r["pieces"]) for r in RECORDS)
    legend = re.search(r'<div id="legend">(.*?)</div>\s*<main', dom, re.S).group(1)
    assert '<span class="lname">weight</span>' in legend and "(sequential)" in legend
    assert '<span class="lo">0</span>' in legend and '<span class="hi">1</span>' in legend
    assert "linear-gradient(to right,rgb(255,255,255) 0%" in legend and "no value" in legend
    assert "page 1 / 1 (3 samples)" in dom
    assert "mean weight <b>0.55</b> \u00b7 non-zero <b>4/5</b>" in dom  # (0 + 1 + .25 + 1 + .5) / 5

    shot = tmp_path / "shot.png"
    browse(chromium, tmp_path, report.as_uri(), f"--screenshot={shot}")
    import matplotlib.image as mpimg

    img = (mpimg.imread(shot)[..., :3] * 255).round().astype(int)
    assert img.shape[:2] == (900, 1280)
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 20, "the screenshot is blank or nearly so"
    darkest = np.all(img == np.array(colour(1.0, weight)), axis=-1).sum()
    assert darkest > 200, "no token is drawn in weight 1's colour"


def test_selector_and_navigation_state_from_the_url(chromium, tmp_path):
    report = inspect(make_run_dir(tmp_path / "run"), tmp_path / "report.html", page_size=1)
    dom = browse(chromium, tmp_path, report.as_uri() + "#value=advantage&page=2", "--dump-dom").stdout
    advantage = value_scale(v for r in RECORDS for v in r["values"]["advantage"])
    assert "page 2 / 3 (3 samples)" in dom and 'data-s="0"' not in dom  # only sample #1 is drawn
    assert token_span(1, 0, "x", colour(1.5, advantage)) in dom and colour(1.5, advantage) == (178, 24, 43)
    assert '<span class="lname">advantage</span><span class="kind">(diverging)</span>' in dom
    assert '<span class="lo">-1.5</span>' in dom and '<span class="mid ctl">centre 0</span>' in dom
    # a token link pins the hover box, which lists every value of that token exactly
    dom = browse(chromium, tmp_path, report.as_uri() + "#value=entropy&tok=0:2", "--dump-dom").stdout
    tip = re.search(r'<div id="tip"([^>]*)>(.*?)</div>', dom, re.S)
    assert "hidden" not in tip.group(1)
    assert tip.group(2) == ('sample #0, token 2 of 5  id 3\n" is"\nweight = 0.25\n<b>entropy = 0.3</b>\n'
                            'advantage = -0.5\nthr = 0')
    assert 'class="tok pinned" data-s="0" data-k="2"' in dom and "page 1 / 3" in dom
    dom = browse(chromium, tmp_path, report.as_uri() + "#group=step%2010", "--dump-dom").stdout
    assert "page 1 / 1 (1 samples)" in dom and token_span(2, 0, "7", colour(1.0, value_scale([0, 1]))) in dom


def test_thousand_samples_of_512_tokens_render_one_page(chromium, tmp_path):
    rng = np.random.default_rng(0)
    words = [" the", " cat", " 42", "=", " so", "\n", " x", "+", "7", "."]
    records = []
    for i in range(1000):
        w = rng.random(512)
        records.append({"step": i // 8, "sample": i % 8, "pieces": [words[j] for j in rng.integers(0, 10, 512)],
                        "ids": rng.integers(0, 50000, 512).tolist(),
                        "values": {"weight": (w > 0.8).astype(float).tolist(), "entropy": (3 * w).round(5).tolist(),
                                   "advantage": [float(rng.normal())] * 512}})
    start = time.monotonic()
    report = inspect(make_run_dir(tmp_path / "run", records), tmp_path / "big.html")
    written = time.monotonic() - start
    size_mb = report.stat().st_size / 1e6
    start = time.monotonic()
    dom = browse(chromium, tmp_path, report.as_uri(), "--dump-dom").stdout
    opened = time.monotonic() - start
    print(f"1000x512 report: {size_mb:.1f} MB written in {written:.1f} s, opened in Chromium in {opened:.1f} s")
    assert "page 1 / 50 (1000 samples)" in dom
    assert drawn(dom).count('<span class="tok') == 20 * 512  # only the current page becomes DOM nodes
    assert size_mb < 40 and opened < 60
