"""The token heatmap: one self-contained HTML file (inline CSS/JS, data as compact JSON, no network).

Only the current page of samples is turned into DOM nodes, so 1,000 samples x 512 tokens stay responsive: the
data is parsed once and a page (20 samples by default) is rendered with a single `innerHTML` assignment. Hover
uses one delegated listener, not one per token. Colours come from `tokrl.reports.colors`, whose Python and
JavaScript halves compute the same RGB.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tokrl.reports.colors import SCALE_JS, value_scale

PREFERRED = ("weight", "token_weights", "thr", "token_rewards", "advantage", "token_scores", "entropy")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:14px 20px 8px;background:#fff;border-bottom:1px solid #ddd}
h1{font-size:19px;margin:0 0 6px}
table.kv{border-collapse:collapse;font-size:13px}
table.kv th{text-align:left;font-weight:600;padding:1px 12px 1px 0;color:#555;vertical-align:top}
table.kv td{padding:1px 12px 1px 0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
details.config{margin-top:6px}
#controls{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ddd;padding:8px 20px;
 display:flex;flex-wrap:wrap;gap:10px;align-items:center}
#controls label{color:#555}
#legend{display:flex;align-items:center;gap:8px;padding:6px 20px;background:#fff;border-bottom:1px solid #ddd;
 font-size:13px}
#legend .bar{width:260px;height:14px;border:1px solid #bbb}
#legend .swatch{display:inline-block;width:14px;height:14px;border:1px solid #bbb;vertical-align:middle}
#legend .lname{font-weight:600}
main{padding:10px 20px 40px}
.sample{background:#fff;border:1px solid #e2e2e2;border-radius:6px;margin:0 0 12px;padding:8px 12px}
.shead{font-size:12.5px;color:#555;margin-bottom:4px}
.shead b{color:#222}
.prompt pre{white-space:pre-wrap;margin:4px 0;color:#666;font-size:12.5px}
.toks{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13.5px;white-space:pre-wrap;word-break:break-word;
 line-height:1.7}
.tok{border-radius:2px;padding:1px 0;cursor:default;box-shadow:inset -1px 0 rgba(255,255,255,.75)}
.tok:hover,.tok.pinned{outline:1.5px solid #000}
.tok.empty::after{content:"\\00b7";color:#999}
.ctl{color:#888}
#tip{position:fixed;z-index:5;background:#222;color:#fff;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
 padding:6px 8px;border-radius:4px;pointer-events:none;max-width:420px;white-space:pre}
#tip b{color:#ffd27f}
.empty-page{color:#888;padding:20px}
"""

JS = SCALE_JS + r"""
const D = JSON.parse(document.getElementById('tokrl-data').textContent);
const S = D.samples;
const st = {value: D.initial, group: '', page: 0, size: D.page_size, idx: S.map((_, i) => i), tok: null};
const $ = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const fmt = x => (x === null || x === undefined) ? 'n/a'
  : (typeof x === 'number' ? String(Number(x.toPrecision(4))) : String(x));
const rgb = c => 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')';
const shown = p => p.replace(/\n/g, '\u21b5\n').replace(/\t/g, '\u2192\t');

function setup() {
  const sel = $('value');
  sel.innerHTML = D.names.map(n => '<option value="' + esc(n) + '">' + esc(n) + '</option>').join('');
  sel.value = st.value;
  sel.onchange = () => { st.value = sel.value; render(); };
  const g = $('group');
  g.innerHTML = '<option value="">all</option>' + D.groups.map(x => '<option>' + esc(x) + '</option>').join('');
  g.onchange = () => { filterGroup(g.value); st.page = 0; render(); };
  $('size').value = String(st.size);
  $('size').onchange = () => { st.size = +$('size').value; st.page = 0; render(); };
  $('prev').onclick = () => go(st.page - 1);
  $('next').onclick = () => go(st.page + 1);
  $('jump').onchange = () => {
    const k = st.idx.indexOf(+$('jump').value);
    if (k >= 0) { go(Math.floor(k / st.size)); const el = $('s' + $('jump').value); if (el) el.scrollIntoView(); }
  };
  document.addEventListener('keydown', e => {
    if (/INPUT|SELECT/.test(e.target.tagName)) return;
    if (e.key === 'ArrowRight') go(st.page + 1);
    if (e.key === 'ArrowLeft') go(st.page - 1);
  });
  const box = $('samples'), tip = $('tip');
  box.addEventListener('mouseover', e => {
    const t = e.target.closest('.tok'); if (!t) { tip.hidden = true; return; }
    tip.innerHTML = tipHtml(+t.dataset.s, +t.dataset.k); tip.hidden = false;
  });
  box.addEventListener('mousemove', e => {
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 430) + 'px'; tip.style.top = (e.clientY + 16) + 'px';
  });
  box.addEventListener('mouseleave', () => { tip.hidden = true; });
}

// the hover box: the token's text, id and every value at full stored precision
function tipHtml(i, k) {
  const s = S[i];
  let h = 'sample #' + i + ', token ' + k + ' of ' + s.p.length + (s.i ? '  id ' + s.i[k] : '') + '\n' +
    esc(JSON.stringify(s.p[k])) + '\n';
  for (const n of Object.keys(s.v)) {
    const v = s.v[n][k];
    const line = esc(n) + ' = ' + esc(v === null || v === undefined ? 'n/a' : v);
    h += (n === st.value ? '<b>' + line + '</b>' : line) + '\n';
  }
  return h.trimEnd();
}

// "#tok=3:17" pins the hover box on token 17 of sample 3 (a link to one token)
function pinToken() {
  const m = /^(\d+):(\d+)$/.exec(st.tok || '');
  if (!m || !S[+m[1]] || +m[2] >= S[+m[1]].p.length) return;
  const pos = st.idx.indexOf(+m[1]);
  if (pos < 0) return;
  if (Math.floor(pos / st.size) !== st.page) { st.page = Math.floor(pos / st.size); render(); }
  const el = document.querySelector('.tok[data-s="' + m[1] + '"][data-k="' + m[2] + '"]');
  el.classList.add('pinned'); el.scrollIntoView({block: 'center'});
  const r = el.getBoundingClientRect(), tip = $('tip');
  tip.innerHTML = tipHtml(+m[1], +m[2]); tip.hidden = false;
  tip.style.left = Math.min(r.left, window.innerWidth - 430) + 'px'; tip.style.top = (r.bottom + 6) + 'px';
}

function filterGroup(g) {
  st.group = g;
  st.idx = S.map((_, i) => i).filter(i => st.group === '' || String(S[i].g) === st.group);
}

// "#value=thr&group=step%2010&page=2" opens the report there (and is kept up to date: links can be shared)
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has('value') && D.names.includes(h.get('value'))) { st.value = h.get('value'); $('value').value = st.value; }
  if (h.has('group') && D.groups.includes(h.get('group'))) { filterGroup(h.get('group')); $('group').value = st.group; }
  st.tok = h.get('tok');
  if (h.has('page')) st.page = Math.max(0, Math.min(Math.ceil(st.idx.length / st.size) - 1, (+h.get('page') || 1) - 1));
}

function writeHash() {
  const h = new URLSearchParams({value: st.value, page: String(st.page + 1)});
  if (st.group) h.set('group', st.group);
  if (st.tok) h.set('tok', st.tok);
  try { history.replaceState(null, '', '#' + h.toString()); } catch (e) { /* some file:// contexts refuse */ }
}

function go(p) {
  const pages = Math.max(1, Math.ceil(st.idx.length / st.size));
  st.tok = null;
  st.page = Math.min(pages - 1, Math.max(0, p)); render(); window.scrollTo(0, 0);
}

function legend(sc) {
  const stops = sc.stops.map(s => rgb(s[1]) + ' ' + (100 * s[0]) + '%').join(',');
  const mid = sc.kind === 'diverging' ? 0 : (sc.lo + sc.hi) / 2;
  $('legend').innerHTML = '<span class="lname">' + esc(st.value) + '</span>' +
    '<span class="kind">(' + sc.kind + ')</span>' +
    '<span class="lo">' + fmt(sc.lo) + '</span>' +
    '<div class="bar" style="background:linear-gradient(to right,' + stops + ')"></div>' +
    '<span class="hi">' + fmt(sc.hi) + '</span><span class="mid ctl">centre ' + fmt(mid) + '</span>' +
    '<span class="ctl">observed min ' + fmt(sc.min) + ', max ' + fmt(sc.max) + '</span>' +
    '<span><span class="swatch" style="background:rgb(221,221,221)"></span> no value</span>';
}

function render() {
  const sc = D.scales[st.value];
  legend(sc);
  const pages = Math.max(1, Math.ceil(st.idx.length / st.size));
  $('pageinfo').textContent = 'page ' + (st.page + 1) + ' / ' + pages + ' (' + st.idx.length + ' samples)';
  const out = [];
  for (const i of st.idx.slice(st.page * st.size, (st.page + 1) * st.size)) {
    const s = S[i], vals = s.v[st.value];
    let sum = 0, cnt = 0, nz = 0;
    const toks = s.p.map((p, k) => {
      const v = vals ? vals[k] : null;
      if (v !== null && v !== undefined) { sum += v; cnt++; if (v !== 0) nz++; }
      const c = colourOf(v, sc);
      const dark = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140;
      return '<span class="tok' + (p === '' ? ' empty' : '') + '" data-s="' + i + '" data-k="' + k +
        '" style="background:' +
        rgb(c) + (dark ? ';color:#fff' : '') + '">' + esc(shown(p)) + '</span>';
    }).join('');
    const info = Object.entries(s.m || {}).map(([k, v]) => esc(k) + ' <b>' + esc(fmt(v)) + '</b>').join(' \u00b7 ');
    const summ = cnt
      ? ' \u00b7 mean ' + esc(st.value) + ' <b>' + fmt(sum / cnt) + '</b> \u00b7 non-zero <b>' + nz + '/' + cnt + '</b>'
      : ' \u00b7 no ' + esc(st.value);
    out.push('<section class="sample" id="s' + i + '"><div class="shead"><b>#' + i + '</b> ' + esc(s.l) +
      (info ? ' \u00b7 ' + info : '') + ' \u00b7 ' + s.p.length + ' tokens' + summ + '</div>' +
      (s.q ? '<details class="prompt"><summary>prompt</summary><pre>' + esc(s.q) + '</pre></details>' : '') +
      '<div class="toks">' + toks + '</div></section>');
  }
  $('samples').innerHTML = out.length ? out.join('') : '<div class="empty-page">no samples</div>';
  writeHash();
}

setup();
readHash();
render();
pinToken();
"""


def _kv_rows(items) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in items
        if v is not None and v != ""
    )


def choose_initial(names: list[str], requested: str | None) -> str:
    """The value to colour by first: the requested one (error listing the choices if absent), else a preferred one."""
    if requested is not None:
        if requested not in names:
            raise ValueError(f"--value {requested!r} is not in the data; available: {', '.join(names)}")
        return requested
    for name in PREFERRED:
        if name in names:
            return name
    return names[0]


def build_payload(samples: list[dict], meta: dict, initial: str | None = None, page_size: int = 20) -> dict:
    """The JSON embedded in the page: samples in compact form, one colour scale per value name."""
    names = list(dict.fromkeys(name for s in samples for name in s["values"]))
    if not names:
        raise ValueError("no per-token values to show")
    scales = {n: value_scale(v for s in samples for v in s["values"].get(n, [])) for n in names}
    groups = list(dict.fromkeys(str(s["group"]) for s in samples if s.get("group") is not None))
    compact = []
    for s in samples:
        n = len(s["pieces"])
        for name, vals in s["values"].items():
            if len(vals) != n:
                raise ValueError(f"sample '{s.get('label')}': value '{name}' has {len(vals)} entries for {n} tokens")
        item = {"l": s.get("label", ""), "p": s["pieces"], "v": s["values"], "m": s.get("info", {})}
        if s.get("ids") is not None:
            item["i"] = s["ids"]
        if s.get("prompt"):
            item["q"] = s["prompt"]
        if s.get("group") is not None:
            item["g"] = str(s["group"])
        compact.append(item)
    return {
        "meta": meta,
        "names": names,
        "initial": choose_initial(names, initial),
        "scales": scales,
        "groups": groups,
        "page_size": int(page_size),
        "samples": compact,
    }


def render_html(samples: list[dict], meta: dict, initial: str | None = None, page_size: int = 20) -> str:
    """The whole report as one HTML string."""
    payload = build_payload(samples, meta, initial, page_size)
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = data.replace("<", "\\u003c")  # no "</script>" can end the data block early
    summary = meta.get("summary", {})
    config = meta.get("config") or {}
    sizes = "".join(f'<option value="{n}">{n}</option>' for n in sorted({10, 20, 50, 100, int(page_size)}))
    title = html.escape(str(meta.get("title", "tokrl token heatmap")))
    config_html = (
        f'<details class="config"><summary>config</summary><table class="kv" id="config">{_kv_rows(config.items())}'
        "</table></details>" if config else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>{CSS}</style></head>
<body>
<header id="header"><h1>{title}</h1>
<table class="kv" id="summary">{_kv_rows(summary.items())}</table>
{config_html}
</header>
<nav id="controls">
<label>colour by <select id="value"></select></label>
<label>group <select id="group"></select></label>
<button id="prev" title="previous page (left arrow)">&#9664;</button><span id="pageinfo"></span>
<button id="next" title="next page (right arrow)">&#9654;</button>
<label>per page <select id="size">{sizes}</select></label>
<label>go to sample # <input id="jump" type="number" min="0" style="width:6em"></label>
</nav>
<div id="legend"></div>
<main id="samples"><noscript>This report needs JavaScript to draw the tokens.</noscript></main>
<div id="tip" hidden></div>
<script id="tokrl-data" type="application/json">{data}</script>
<script>{JS}</script>
</body></html>
"""


def write_report(
    path: str | Path, samples: list[dict], meta: dict, initial: str | None = None, page_size: int = 20
) -> Path:
    """Render and write the report; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(samples, meta, initial, page_size), encoding="utf-8")
    return path
