"""Colour scales for the token heatmap, mirrored exactly by the page's JavaScript (`SCALE_JS`).

A value's scale is chosen from its range over all samples: values of both signs get a diverging blue-white-red
scale symmetric around 0 (so 0 is white and the sign is the hue); one-signed values get a sequential
white-to-orange scale from their minimum to their maximum.
"""

from __future__ import annotations

import math

# (position in [0, 1], (r, g, b)); ColorBrewer RdBu and Oranges, reduced to five stops each.
DIVERGING = [(0.0, (33, 102, 172)), (0.25, (103, 169, 207)), (0.5, (247, 247, 247)), (0.75, (239, 138, 98)),
             (1.0, (178, 24, 43))]
SEQUENTIAL = [(0.0, (255, 255, 255)), (0.25, (254, 230, 206)), (0.5, (253, 174, 107)), (0.75, (241, 105, 19)),
              (1.0, (166, 54, 3))]
MISSING = (221, 221, 221)


def value_scale(values) -> dict:
    """The scale for one value name from all its numbers (None/NaN ignored): kind, domain and colour stops."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    lo = min(finite) if finite else 0.0
    hi = max(finite) if finite else 1.0
    if lo < 0.0 < hi:
        m = max(-lo, hi)
        return {"kind": "diverging", "lo": -m, "hi": m, "min": lo, "max": hi, "stops": DIVERGING}
    if hi <= lo:  # a constant c: positive c is shown at the top of [0, c], zero or negative c as white
        lo, hi = (0.0, hi) if hi > 0 else (lo, lo + 1.0)
    return {"kind": "sequential", "lo": lo, "hi": hi, "min": min(finite) if finite else None,
            "max": max(finite) if finite else None, "stops": SEQUENTIAL}


def colour(value, scale: dict) -> tuple[int, int, int]:
    """RGB of `value` on `scale` (linear interpolation between stops, clamped; MISSING for None/NaN)."""
    if value is None or not math.isfinite(float(value)):
        return MISSING
    span = scale["hi"] - scale["lo"]
    x = min(1.0, max(0.0, (float(value) - scale["lo"]) / span)) if span > 0 else 1.0
    stops = scale["stops"]
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if x <= p1:
            f = (x - p0) / (p1 - p0)
            return tuple(int(math.floor(a + (b - a) * f + 0.5)) for a, b in zip(c0, c1))
    return tuple(stops[-1][1])


# The same arithmetic in JavaScript (Math.round rounds half up, like floor(x + 0.5) above).
SCALE_JS = """
function colourOf(v, sc) {
  if (v === null || v === undefined || !isFinite(v)) return [221, 221, 221];
  const span = sc.hi - sc.lo;
  const x = span > 0 ? Math.min(1, Math.max(0, (v - sc.lo) / span)) : 1;
  const st = sc.stops;
  for (let i = 0; i + 1 < st.length; i++) {
    const p0 = st[i][0], p1 = st[i + 1][0];
    if (x <= p1) {
      const f = (x - p0) / (p1 - p0), c0 = st[i][1], c1 = st[i + 1][1];
      return [0, 1, 2].map(j => Math.floor(c0[j] + (c1[j] - c0[j]) * f + 0.5));
    }
  }
  return st[st.length - 1][1];
}
"""
