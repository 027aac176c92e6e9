// HistModel: the history of one histogram aggregation, built only from frames.
//
// Every column keeps the raw per-key buckets of its tick, so that anything the user asks for
// later (isolate a key, exclude keys, hue by key, the per-key breakdown of one cell) can be
// derived again without the server. From the raw entries and the current key filter each column
// derives dense arrays indexed by row: `total` (all keys), `shown` (keys passing the filter),
// `dom` (the key with the most events in the cell, for hue-by-key) and its summary statistics
// (average, p50/p90/p99 as fractional row positions, for the overlay lines).

import { rowSpaceFor, rowMid } from './rows.js';
import { keyText } from './util.js';

const ROW_MARGIN = 1;       // rows shown beyond the range that ever had data
const MIN_VISIBLE_ROWS = 6; // never zoom in further than this many rows
export const PERCENTILES = [0.5, 0.9, 0.99];
const RAW_STRIDE = 4;       // numbers per raw entry: key id, lo, hi, count

/** A column's raw entries as [keyId, lo, hi, count] with null open ends, as received. */
export function* entries(raw) {
  for (let i = 0; i < raw.length; i += RAW_STRIDE) {
    const lo = raw[i + 1], hi = raw[i + 2];
    yield [raw[i], lo === -Infinity ? null : lo, hi === Infinity ? null : hi, raw[i + 3]];
  }
}

/**
 * A histogram aggregation with its series packed as raw entries (see HistModel.rawOf), the key
 * slot holding an index into `keys` (key texts, in series order; a series without buckets still
 * names its key): `{packed: true, name, kind, layout, keys, raw}`. Empty and malformed buckets
 * are left out. Packing a frame as soon as it is parsed lets the parsed series die young.
 */
export function packHist(agg) {
  const series = (agg && Array.isArray(agg.series)) ? agg.series : [];
  let n = 0;
  for (const s of series) if (s && Array.isArray(s.buckets)) n += s.buckets.length;
  let raw = new Float64Array(n * RAW_STRIDE);
  const keys = new Array(series.length);
  let at = 0;
  for (let j = 0; j < series.length; j++) {
    const s = series[j];
    keys[j] = keyText(s && s.key);
    if (!s || !Array.isArray(s.buckets)) continue;
    for (const b of s.buckets) {
      if (!Array.isArray(b) || b.length < 3 || !(b[2] > 0)) continue;
      const lo = b[0], hi = b[1];
      raw[at] = j; raw[at + 1] = lo == null ? -Infinity : lo; raw[at + 2] = hi == null ? Infinity : hi; raw[at + 3] = b[2];
      at += RAW_STRIDE;
    }
  }
  if (at < raw.length) raw = raw.slice(0, at);
  return { packed: true, name: agg?.name, kind: agg?.kind, layout: agg?.layout, keys, raw };
}

/** Two packed aggregations of one column as one (histograms add: the entries go together). */
export function mergePacked(a, b) {
  const raw = new Float64Array(a.raw.length + b.raw.length);
  raw.set(a.raw);
  raw.set(b.raw, a.raw.length);
  for (let i = a.raw.length; i < raw.length; i += RAW_STRIDE) raw[i] += a.keys.length;
  return { ...a, keys: a.keys.concat(b.keys), raw };
}

export class HistModel {
  constructor(name, kind, layout, capacity) {
    this.name = name;
    this.kind = kind;
    this.layout = layout || null;
    this.capacity = capacity;
    this.space = rowSpaceFor(kind, layout);
    this.cols = [];          // {meta, raw (see rawOf), total, shown, dom, stats}
    this.pushed = 0;         // columns ever pushed: absolute index of cols[0] is pushed - cols.length
    this.keyIds = new Map(); // key text → id
    this.keys = [];          // id → {id, name, total (events in the history window)}
    this.isolate = null;     // key id shown alone, or null
    this.exclude = new Set(); // key ids hidden (when nothing is isolated)
    this.seenMin = null;     // lowest bucket lo that ever had data (any key)
    this.seenMax = null;
  }

  get rows() { return this.space.rows; }
  get columns() { return this.cols.map((c) => Array.from(c.shown)); }
  get length() { return this.cols.length; }

  /** The id of a key, by its text (keyText). */
  keyId(name) {
    let id = this.keyIds.get(name);
    if (id === undefined) {
      id = this.keys.length;
      this.keyIds.set(name, id);
      this.keys.push({ id, name, total: 0 });
    }
    return id;
  }

  includes(id) { return this.isolate !== null ? id === this.isolate : !this.exclude.has(id); }
  get filtered() { return this.isolate !== null || this.exclude.size > 0; }

  /**
   * Adds one tick (agg may be null: nothing aggregated). `meta.missing` marks a placeholder: a
   * tick whose frame was skipped (a gap in `seq`), which `fill` may give its frame later.
   * Returns true when the rows changed.
   */
  push(agg, meta) {
    const { raw, changed } = this.rawOf(agg);
    const col = { meta, raw, total: null, shown: null, dom: null, stats: null };
    this.cols.push(col);
    this.pushed++;
    if (changed) this.rederive(); else this.derive(col);
    while (this.cols.length > this.capacity) this.evict();
    return changed;
  }

  /**
   * Gives the placeholder column of `meta.seq` its frame (agg may be null), in place: the
   * columns keep their order and absolute indices. Returns null when no placeholder of that
   * seq is held (a duplicate, or one that scrolled out), else whether the rows changed.
   */
  fill(agg, meta) {
    const i = this.indexOfSeq(meta.seq);
    if (i < 0 || !this.cols[i].meta.missing) return null;
    const { raw, changed } = this.rawOf(agg);
    const col = this.cols[i];
    col.raw = raw;
    col.meta = meta;
    if (changed) this.rederive(); else this.derive(col);
    return changed;
  }

  /** Index in `cols` of the column of `seq` (columns are in ascending seq order), or -1. */
  indexOfSeq(seq) {
    let lo = 0, hi = this.cols.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.cols[mid].meta.seq;
      if (s === seq) return mid;
      if (!(s < seq)) hi = mid - 1; else lo = mid + 1;
    }
    return -1;
  }

  /**
   * One aggregation's buckets as a column's raw entries; counts them into the key totals. The
   * entries are one flat Float64Array, RAW_STRIDE numbers each: key id, lo, hi, count (lo null
   * as -Infinity, hi null as +Infinity; JSON has neither), so that a day of columns is a few
   * hundred arrays for the garbage collector, not half a million. `entries(raw)` reads them back.
   * `agg` is a frame's aggregation, or one `packHist` made (an opened range or file packs each
   * frame as it is parsed); a packed aggregation's array becomes the column's, so it is used once.
   */
  rawOf(agg) {
    const p = agg && agg.packed ? agg : packHist(agg);
    const raw = p.raw ?? new Float64Array(0);
    p.raw = null; // the column owns it now
    const ids = p.keys.map((name) => this.keyId(name));
    let changed = false;
    let seenMin = this.seenMin ?? Infinity, seenMax = this.seenMax ?? -Infinity;
    const keys = this.keys, space = this.space;
    for (let i = 0; i < raw.length; i += RAW_STRIDE) {
      const id = ids[raw[i]], k = raw[i + 1], hi = raw[i + 2];
      raw[i] = id;
      keys[id].total += raw[i + 3];
      if (space.ensure(k === -Infinity ? null : k, hi === Infinity ? null : hi)) changed = true;
      if (k < seenMin) seenMin = k;
      if (k > seenMax) seenMax = k;
    }
    if (raw.length) { this.seenMin = seenMin; this.seenMax = seenMax; }
    return { raw, changed };
  }

  evict() {
    const old = this.cols.shift();
    const raw = old.raw;
    for (let i = 0; i < raw.length; i += RAW_STRIDE) this.keys[raw[i]].total -= raw[i + 3];
  }

  setCapacity(n) {
    this.capacity = n;
    while (this.cols.length > n) this.evict();
  }

  /** Re-derive every column (rows grew, or the key filter changed). */
  rederive() { for (const c of this.cols) this.derive(c); }

  derive(col) {
    const R = this.space.rows.length;
    const total = new Float64Array(R), shown = new Float64Array(R);
    const dom = new Int32Array(R).fill(-1), domC = new Float64Array(R);
    const raw = col.raw, space = this.space;
    const all = !this.filtered;
    for (let i = 0; i < raw.length; i += RAW_STRIDE) {
      const r = space.index(raw[i + 1]);
      if (r < 0 || r >= R) continue;
      const id = raw[i], c = raw[i + 3];
      total[r] += c;
      if (!all && !this.includes(id)) continue;
      shown[r] += c;
      if (c > domC[r]) { domC[r] = c; dom[r] = id; }
    }
    let max = 0;
    for (let r = 0; r < R; r++) if (shown[r] > max) max = shown[r];
    col.max = max; // so the colour scale's maximum costs one read per column, not per cell
    col.total = total;
    col.shown = shown;
    col.dom = dom;
    col.stats = columnStats(shown, this.space.rows);
  }

  setFilter({ isolate = this.isolate, exclude = this.exclude } = {}) {
    this.isolate = isolate;
    this.exclude = new Set(exclude);
    this.rederive();
  }

  /** [first, last] row indices to display: rows that ever had data plus a margin. */
  visibleRange() {
    const n = this.space.rows.length;
    if (!n) return null;
    if (this.seenMin === null) return [0, n - 1];
    const idx = (k) => this.space.index(k === -Infinity ? null : k);
    let a = idx(this.seenMin) - ROW_MARGIN;
    let b = idx(this.seenMax) + ROW_MARGIN;
    while (b - a + 1 < MIN_VISIBLE_ROWS && (a > 0 || b < n - 1)) {
      if (a > 0) a--;
      if (b - a + 1 < MIN_VISIBLE_ROWS && b < n - 1) b++;
    }
    return [Math.max(0, a), Math.min(n - 1, b)];
  }

  maxShown() {
    let m = 0;
    for (const c of this.cols) if (c.max > m) m = c.max;
    return m;
  }

  /** Keys seen in the history window, most events first (events of every key, filter aside). */
  keyList() {
    return this.keys.filter((k) => k.total > 0 || this.isolate === k.id || this.exclude.has(k.id))
      .sort((a, b) => b.total - a.total || a.name.localeCompare(b.name));
  }

  /** Per-key contributions to one cell, largest first: [{id, name, count, shown}]. */
  breakdown(colIndex, row) {
    const col = this.cols[colIndex];
    if (!col) return [];
    const by = new Map();
    const raw = col.raw;
    for (let i = 0; i < raw.length; i += RAW_STRIDE) {
      if (this.space.index(raw[i + 1]) !== row) continue;
      const id = raw[i];
      by.set(id, (by.get(id) || 0) + raw[i + 3]);
    }
    return [...by].map(([id, count]) => ({ id, name: this.keys[id].name, count, shown: this.includes(id) }))
      .sort((x, y) => y.count - x.count);
  }
}

/**
 * Summary of one column: event count, average (with each bucket at its midpoint) and the
 * percentiles, all as fractional row positions (row r spans [r, r+1)), linear inside a bucket.
 */
export function columnStats(counts, rows) {
  let n = 0, sum = 0;
  for (let r = 0; r < counts.length; r++) { n += counts[r]; sum += counts[r] * rowMid(rows[r]); }
  if (!(n > 0)) return null;
  const avg = sum / n;
  const pct = PERCENTILES.map((p) => {
    const target = p * n;
    let cum = 0;
    for (let r = 0; r < counts.length; r++) {
      if (counts[r] > 0 && cum + counts[r] >= target) return r + (target - cum) / counts[r];
      cum += counts[r];
    }
    return counts.length;
  });
  return { n, avg, avgPos: valuePos(avg, rows), pct };
}

/** Fractional row position of a value. */
export function valuePos(v, rows) {
  for (let r = 0; r < rows.length; r++) {
    const [lo, hi] = rows[r];
    if ((lo == null || v >= lo) && (hi == null || v < hi + 1)) {
      if (lo == null || hi == null) return r + 0.5;
      return r + (v - lo) / (hi + 1 - lo);
    }
  }
  return rows.length ? (v < (rows[0][0] ?? 0) ? 0 : rows.length) : 0;
}
