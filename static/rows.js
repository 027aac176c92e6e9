// Row spaces: how histogram buckets map onto heatmap rows. A row space owns `rows`, an
// ascending array of inclusive [lo, hi] bounds (null = open end), and maps a bucket's lower
// bound to a row index (0 = lowest values). `ensure()` grows the space and returns true when
// the rows changed (existing indices may shift, so the model re-derives its columns).
//
//   lhist (linear)   fixed rows from the layout in `started`, open rows below min and above max
//   hist (log2)      one row per power of two, grown to the range seen, so rows are equally tall
//                    per doubling (a log axis)
//   anything else    (llquantize's log-linear buckets, lhist without a layout, quantize) the sorted
//                    union of buckets seen: DTrace's llquantize buckets already step linearly
//                    within each power of the factor, so one row per bucket is log-linear.

const MAX_LINEAR_ROWS = 4096; // larger lhist layouts fall back to the union of seen buckets

export class LinearRows {
  static fits(layout) {
    if (!layout) return false;
    const { min, max, step } = layout;
    return [min, max, step].every(Number.isFinite) && step > 0 && max > min &&
      (max - min) / step <= MAX_LINEAR_ROWS;
  }

  constructor({ min, max, step }) {
    this.kind = 'linear';
    this.min = min; this.max = max; this.step = step;
    this.rows = [[null, min - 1]];
    for (let lo = min; lo < max; lo += step) this.rows.push([lo, Math.min(lo + step, max) - 1]);
    this.rows.push([max, null]);
  }

  ensure() { return false; }

  index(lo) {
    if (lo == null || lo < this.min) return 0;
    if (lo >= this.max) return this.rows.length - 1;
    return 1 + Math.floor((lo - this.min) / this.step);
  }
}

export class Log2Rows {
  constructor() {
    this.kind = 'log2'; this.low = null; this.high = null; this.rows = [];
    // Logical index of an open top bucket ([2^31, null] from bpftrace 0.17's hist), if seen.
    this.open = null;
  }

  // logical index: -1 negatives, 0 → [0,0], p+1 → [2^p, 2^(p+1)-1]
  static logical(lo) {
    if (lo == null || lo < 0) return -1;
    if (lo === 0) return 0;
    return Math.floor(Math.log2(lo) + 1e-9) + 1;
  }

  static bounds(l) {
    if (l < 0) return [null, -1];
    if (l === 0) return [0, 0];
    const a = 2 ** (l - 1);
    return [a, 2 * a - 1];
  }

  ensure(lo, hi) {
    const l = Log2Rows.logical(lo);
    const opens = lo != null && lo > 0 && hi === null && this.open !== l;
    if (!opens && this.low !== null && l >= this.low && l <= this.high) return false;
    if (opens) this.open = l;
    this.low = this.low === null ? l : Math.min(this.low, l);
    this.high = this.high === null ? l : Math.max(this.high, l);
    this.rows = [];
    for (let i = this.low; i <= this.high; i++) {
      const [a, b] = Log2Rows.bounds(i);
      this.rows.push(i === this.open ? [a, null] : [a, b]);
    }
    return true;
  }

  index(lo) { return Log2Rows.logical(lo) - this.low; }
}

export class UnionRows {
  constructor() { this.kind = 'union'; this.rows = []; this.byLo = new Map(); }

  static k(lo) { return lo == null ? -Infinity : lo; }

  ensure(lo, hi) {
    const k = UnionRows.k(lo);
    if (this.byLo.has(k)) return false;
    this.rows.push([lo ?? null, hi ?? null]);
    this.rows.sort((a, b) => UnionRows.k(a[0]) - UnionRows.k(b[0]));
    this.byLo = new Map(this.rows.map((r, i) => [UnionRows.k(r[0]), i]));
    return true;
  }

  index(lo) { return this.byLo.get(UnionRows.k(lo)) ?? -1; }
}

export function rowSpaceFor(kind, layout) {
  // D's lquantize announces the same layout as lhist: rows [null,min-1] … [max,null].
  if ((kind === 'lhist' || kind === 'lquantize') && LinearRows.fits(layout)) return new LinearRows(layout);
  if (kind === 'hist' || kind === 'quantize') return new Log2Rows();
  return new UnionRows();
}

/** A representative value of a row for averages: its midpoint, or its bound when open. */
export function rowMid([lo, hi]) {
  if (lo == null) return hi ?? 0;
  if (hi == null) return lo;
  return (lo + hi + 1) / 2;
}
