// Colour scales. A scale maps a cell count to t in [0, 1]; a palette maps t to RGB through a
// 256-entry lookup table, so colouring a cell is one multiply and three array reads.
//
//   log     t = ln(count) / ln(max): the default, because latency distributions span decades
//   linear  t = count / max: shows where the bulk of the events are, hides the tail
//   rank    t = rank of the count among all non-empty cells of the history (a percentile), the
//           Cloud Analytics "colour by rank": every colour step holds the same number of cells,
//           so structure shows even when a few cells dwarf the rest.

// heat: deep wine → red → orange → yellow → pale, readable on the dark background.
const HEAT = [
  [0.00, [78, 14, 38]],
  [0.22, [150, 24, 36]],
  [0.45, [222, 72, 16]],
  [0.68, [250, 150, 0]],
  [0.86, [255, 212, 59]],
  [1.00, [255, 250, 220]],
];

// Distinct hues for keys (by rank of their event count); later keys share the last, grey.
export const KEY_HUES = [
  [255, 159, 28], [64, 196, 255], [126, 231, 135], [255, 92, 138], [190, 140, 255],
  [255, 230, 90], [80, 227, 194], [255, 128, 64], [140, 170, 255], [220, 220, 220],
];
export const OTHER_HUE = [130, 138, 155];

function buildLut(stops, n = 256) {
  const lut = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    const t = i / (n - 1);
    let k = 1;
    while (k < stops.length - 1 && stops[k][0] < t) k++;
    const [t0, c0] = stops[k - 1];
    const [t1, c1] = stops[k];
    const f = t1 === t0 ? 0 : (t - t0) / (t1 - t0);
    for (let j = 0; j < 3; j++) lut[i * 4 + j] = Math.round(c0[j] + (c1[j] - c0[j]) * f);
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

export const HEAT_LUT = buildLut(HEAT);

/** A hue ramp from dim to the full hue to a pale tint: intensity still reads as brightness. */
const hueLuts = new WeakMap(); // keyed by the palette entry itself: no string work per cell
export function hueLut(rgb) {
  let lut = hueLuts.get(rgb);
  if (!lut) {
    const dim = rgb.map((c) => Math.round(c * 0.3));
    const pale = rgb.map((c) => Math.round(c + (255 - c) * 0.55));
    lut = buildLut([[0, dim], [0.6, rgb], [1, pale]]);
    hueLuts.set(rgb, lut);
  }
  return lut;
}

export const rampCss = (rgbStops = HEAT) => 'linear-gradient(to right, ' +
  rgbStops.map(([t, c]) => `rgb(${c.join(',')}) ${(t * 100).toFixed(0)}%`).join(', ') + ')';

export const rgbCss = (c) => `rgb(${c.join(',')})`;

export const SCALES = {
  log: 'log',
  linear: 'linear',
  rank: 'rank',
};

/**
 * The count → t mapping for one redraw. Rank keeps sorted breakpoints of the history's
 * non-empty cells; new columns are placed against those until the next full redraw.
 */
export class Scale {
  constructor(kind, max, cells) {
    this.kind = kind;
    this.max = Math.max(1, max);
    this.logMax = Math.log(this.max);
    this.sorted = null;
    if (kind === 'rank') {
      this.sorted = Float64Array.from(cells).sort();
    }
  }

  t(c) {
    if (this.kind === 'linear') return Math.min(1, c / this.max);
    if (this.kind === 'rank') {
      const s = this.sorted;
      if (!s.length) return 1;
      let lo = 0, hi = s.length; // number of cells with a count < c, and ≤ c: take the midpoint
      while (lo < hi) { const m = (lo + hi) >> 1; if (s[m] < c) lo = m + 1; else hi = m; }
      let up = lo;
      while (up < s.length && s[up] === c) up++;
      return Math.min(1, (lo + up) / 2 / s.length + 0.5 / s.length);
    }
    return this.logMax > 0 ? Math.min(1, Math.log(c) / this.logMax) : 1;
  }

  /** Words for the legend: what the colours mean. */
  describe() {
    if (this.kind === 'linear') return ['colour ∝ count', '0', String(this.max)];
    if (this.kind === 'rank') return ['colour = rank among non-empty cells', 'lowest', 'highest'];
    return ['colour ∝ log(count)', '1', String(this.max)];
  }
}
