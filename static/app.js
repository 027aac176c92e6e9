// heat-actix browser UI — speaks websocket protocol v1 (docs/protocol.md).
//
// Plain ES module, no build step, no dependencies. Sections:
//   1. constants and small helpers
//   2. Connection   – the websocket, with reconnect and backoff
//   3. row spaces   – how histogram buckets map onto heatmap rows (linear / log2 / union)
//   4. HistModel    – history of merged columns for one histogram aggregation
//   5. HeatmapView  – canvas renderer (incremental scroll), axes, legend, tooltip
//   6. ScalarsView  – numbers per key for the scalar aggregations
//   7. App          – protocol handling, controls, top bar, `window.heat`

// ───────────────────────────── 1. constants and helpers ─────────────────────────────

const PROTOCOL = 1;
const HIST_KINDS = new Set(['hist', 'lhist', 'quantize', 'lquantize', 'llquantize']);
const SCALAR_KINDS = new Set(['count', 'sum', 'avg', 'min', 'max', 'stats', 'stddev']);
const DEFAULT_HISTORY = 120;
const ROW_MARGIN = 1;          // rows shown beyond the range that ever had data
const MIN_VISIBLE_ROWS = 6;    // never zoom in further than this many rows
const MAX_LINEAR_ROWS = 4096;  // larger lhist layouts fall back to the union of seen buckets
const MAX_OUTPUT_LINES = 500;
const CUSTOM = '';             // value of the "custom script" entry of #preset

const EXAMPLE_SCRIPT = `// syscall latency in microseconds, by syscall id
tracepoint:raw_syscalls:sys_enter {
  @ts[tid] = nsecs;
}
tracepoint:raw_syscalls:sys_exit /@ts[tid]/ {
  $us = (nsecs - @ts[tid]) / 1000;
  @us[args.id] = lhist($us, 0, 64, 2);
  @calls = count();
  delete(@ts[tid]);
}
`;

// Colour ramp for log(count) on a dark background: deep wine → red → orange → yellow → pale.
const RAMP = [
  [0.00, [78, 14, 38]],
  [0.22, [150, 24, 36]],
  [0.45, [222, 72, 16]],
  [0.68, [250, 150, 0]],
  [0.86, [255, 212, 59]],
  [1.00, [255, 250, 220]],
];
const LUT = buildLut(RAMP, 256);

function buildLut(stops, n) {
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

function rampCss() {
  return 'linear-gradient(to right, ' +
    RAMP.map(([t, c]) => `rgb(${c.join(',')}) ${(t * 100).toFixed(0)}%`).join(', ') + ')';
}

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const store = {
  get(k, d = null) { try { const v = localStorage.getItem('heat.' + k); return v == null ? d : v; } catch { return d; } },
  set(k, v) { try { localStorage.setItem('heat.' + k, String(v)); } catch { /* private mode */ } },
};

function clampInt(v, lo, hi, dflt) {
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n)) return dflt;
  return Math.min(hi, Math.max(lo, n));
}

const numFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const fmtNum = (v) => (typeof v === 'number' && Number.isFinite(v) ? numFmt.format(v) : String(v ?? '–'));

/** Compact bucket bound: exact below 10 000, else k/M/G (Ki/Mi/Gi for bytes). */
function fmtBound(v, unit) {
  if (v == null) return '∞';
  const a = Math.abs(v);
  if (a < 10000) return String(v);
  const steps = unit === 'bytes'
    ? [[2 ** 50, 'Pi'], [2 ** 40, 'Ti'], [2 ** 30, 'Gi'], [2 ** 20, 'Mi'], [2 ** 10, 'Ki']]
    : [[1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [d, s] of steps) {
    if (a >= d) {
      const x = v / d;
      const txt = Math.abs(x) >= 100 || Number.isInteger(x) ? String(Math.round(x)) : x.toFixed(1).replace(/\.0$/, '');
      return txt + s;
    }
  }
  return String(v);
}

/** Power-of-two bound the way bpftrace prints it: 512, 1K, 2K, … 1M (binary multiples). */
function fmtPow2(v) {
  if (v == null) return '∞';
  for (const [d, s] of [[2 ** 60, 'E'], [2 ** 50, 'P'], [2 ** 40, 'T'], [2 ** 30, 'G'], [2 ** 20, 'M'], [2 ** 10, 'K']]) {
    if (Math.abs(v) >= d && v % d === 0) return `${v / d}${s}`;
  }
  return String(v);
}

/**
 * Short label for an axis row. Log2 rows read like bpftrace ("1K–2K", exclusive upper end);
 * other large ranges use the exclusive upper bound too ("10k–20k"); small ones are exact.
 */
function rowLabel([lo, hi], unit, log2 = false) {
  if (lo == null && hi == null) return 'all';
  if (lo == null) return `< ${log2 ? fmtPow2(hi + 1) : fmtBound(hi + 1, unit)}`;
  if (hi == null) return `≥ ${log2 ? fmtPow2(lo) : fmtBound(lo, unit)}`;
  if (lo === hi) return log2 ? fmtPow2(lo) : fmtBound(lo, unit);
  if (log2 && lo >= 1024) return `${fmtPow2(lo)}–${fmtPow2(hi + 1)}`;
  if (!log2 && Math.abs(hi) >= 10000) return `${fmtBound(lo, unit)}–${fmtBound(hi + 1, unit)}`;
  return `${fmtBound(lo, unit)}–${fmtBound(hi, unit)}`;
}

/** Exact, inclusive description of a bucket for the tooltip. */
function rangeText([lo, hi], unit) {
  const u = unit ? ' ' + unit : '';
  if (lo == null && hi == null) return 'any value' + u;
  if (lo == null) return `≤ ${fmtNum(hi)}${u}`;
  if (hi == null) return `≥ ${fmtNum(lo)}${u}`;
  if (lo === hi) return `${fmtNum(lo)}${u}`;
  return `${fmtNum(lo)} … ${fmtNum(hi)}${u}`;
}

const keyText = (key) => (Array.isArray(key) && key.length ? key.join(', ') : '(no key)');

function niceCeil(x) {
  if (!(x > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

const fmtClock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

function fmtAgo(sec) {
  if (sec < 0.5) return 'now';
  if (sec < 120) return `${Math.round(sec)} s ago`;
  return `${(sec / 60).toFixed(1).replace(/\.0$/, '')} min ago`;
}

// ───────────────────────────── 2. Connection ─────────────────────────────

/** One websocket with automatic reconnect (exponential backoff with jitter). */
class Connection {
  constructor(url, { onState, onMessage }) {
    this.url = url;
    this.onState = onState;
    this.onMessage = onMessage;
    this.ws = null;
    this.state = 'closed';
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.lastClose = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = 0;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      console.debug('heat: websocket constructor failed', e);
      this.scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    ws.onopen = () => { if (ws === this.ws) this.setState('open'); };
    ws.onmessage = (ev) => {
      if (ws !== this.ws || typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { console.debug('heat: ignoring non-JSON message'); return; }
      if (msg && typeof msg === 'object' && !Array.isArray(msg)) this.onMessage(msg);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.lastClose = { code: ev.code, reason: ev.reason || '' };
      this.setState('closed');
      this.scheduleReconnect(ev.code);
    };
  }

  /** Called once the server proved healthy (hello received): reset the backoff. */
  healthy() { this.attempt = 0; }

  scheduleReconnect(code) {
    let delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    if (code === 1013) delay = Math.max(delay, 5000); // server full: try again later
    this.attempt = Math.min(this.attempt + 1, 10);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.onState(this.state);
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  setState(s) {
    this.state = s;
    this.onState(s);
  }
}

// ───────────────────────────── 3. row spaces ─────────────────────────────
// A row space turns a bucket [lo, hi] into a row index (0 = lowest values) and owns `rows`,
// an ascending array of [lo, hi]. `ensure()` grows the space and returns true when the rows
// changed (indices of existing rows may shift, so callers re-derive their dense columns).

/** lhist with a known layout: fixed rows [null,min-1], [min,min+step-1], …, [max,null]. */
class LinearRows {
  static fits(layout) {
    if (!layout) return false;
    const { min, max, step } = layout;
    return [min, max, step].every(Number.isFinite) && step > 0 && max > min &&
      (max - min) / step <= MAX_LINEAR_ROWS;
  }

  constructor({ min, max, step }) {
    this.min = min; this.max = max; this.step = step;
    this.fixed = true;
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

/** log2 hist: one row per power of two plus [0,0] and a row for negatives; grows as data arrives. */
class Log2Rows {
  constructor() { this.fixed = false; this.low = null; this.high = null; this.rows = []; }

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

  ensure(lo) {
    const l = Log2Rows.logical(lo);
    if (this.low !== null && l >= this.low && l <= this.high) return false;
    this.low = this.low === null ? l : Math.min(this.low, l);
    this.high = this.high === null ? l : Math.max(this.high, l);
    this.rows = [];
    for (let i = this.low; i <= this.high; i++) this.rows.push(Log2Rows.bounds(i));
    return true;
  }

  index(lo) { return Log2Rows.logical(lo) - this.low; }
}

/** Anything else: the sorted union of distinct bucket lower bounds seen. */
class UnionRows {
  constructor() { this.fixed = false; this.rows = []; this.byLo = new Map(); }

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

function rowSpaceFor(kind, layout) {
  // D's lquantize announces the same layout as lhist: rows [null,min-1] … [max,null].
  if ((kind === 'lhist' || kind === 'lquantize') && LinearRows.fits(layout)) return new LinearRows(layout);
  if (kind === 'hist') return new Log2Rows();
  return new UnionRows();
}

// ───────────────────────────── 4. HistModel ─────────────────────────────

/**
 * History of one histogram aggregation: per tick, all series merged into one column
 * (counts summed per bucket). Keeps `raw` merged buckets so that the dense `columns`
 * can be re-derived when the row space grows.
 */
class HistModel {
  constructor(name, kind, layout, capacity) {
    this.name = name;
    this.kind = kind;
    this.layout = layout || null;
    this.capacity = capacity;
    this.space = rowSpaceFor(kind, layout);
    this.raw = [];      // per column: [[lo, hi, count], …]
    this.columns = [];  // per column: counts, one per row of this.space.rows
    this.meta = [];     // per column: {seq, ts, interval, gap, series}
    this.seenMin = null; // lowest bucket [lo,hi] that ever had data
    this.seenMax = null; // highest
    this._rowsCache = null;
  }

  get rows() {
    if (!this._rowsCache) this._rowsCache = this.space.rows.map((r) => [r[0], r[1]]);
    return this._rowsCache;
  }

  /** Adds one tick. Returns true when the row layout changed. */
  push(agg, meta) {
    const merged = new Map();
    for (const s of (agg && Array.isArray(agg.series)) ? agg.series : []) {
      for (const b of Array.isArray(s.buckets) ? s.buckets : []) {
        if (!Array.isArray(b) || b.length < 3) continue;
        const [lo, hi, c] = b;
        if (!(c > 0)) continue;
        const k = lo == null ? '-' : String(lo);
        const e = merged.get(k);
        if (e) e[2] += c; else merged.set(k, [lo ?? null, hi ?? null, c]);
      }
    }
    const raw = [...merged.values()];
    let changed = false;
    for (const [lo, hi] of raw) {
      changed = this.space.ensure(lo, hi) || changed;
      const k = UnionRows.k(lo);
      if (!this.seenMin || k < UnionRows.k(this.seenMin[0])) this.seenMin = [lo, hi];
      if (!this.seenMax || k > UnionRows.k(this.seenMax[0])) this.seenMax = [lo, hi];
    }
    this.raw.push(raw);
    this.meta.push({ ...meta, series: agg && Array.isArray(agg.series) ? agg.series : [] });
    if (changed) {
      this._rowsCache = null;
      this.columns = this.raw.map((r) => this.dense(r));
    } else {
      this.columns.push(this.dense(raw));
    }
    while (this.raw.length > this.capacity) {
      this.raw.shift(); this.meta.shift(); this.columns.shift();
    }
    return changed;
  }

  dense(raw) {
    const col = new Array(this.space.rows.length).fill(0);
    for (const [lo, hi, c] of raw) {
      const i = this.space.index(lo, hi);
      if (i >= 0 && i < col.length) col[i] += c;
    }
    return col;
  }

  /** [first, last] row indices to display: rows that ever had data plus a margin. */
  visibleRange() {
    const n = this.space.rows.length;
    if (!n) return null;
    if (!this.seenMin) return [0, n - 1];
    let a = this.space.index(this.seenMin[0], this.seenMin[1]) - ROW_MARGIN;
    let b = this.space.index(this.seenMax[0], this.seenMax[1]) + ROW_MARGIN;
    while (b - a + 1 < MIN_VISIBLE_ROWS && (a > 0 || b < n - 1)) {
      if (a > 0) a--;
      if (b - a + 1 < MIN_VISIBLE_ROWS && b < n - 1) b++;
    }
    return [Math.max(0, a), Math.min(n - 1, b)];
  }

  maxCount() {
    let m = 0;
    for (const col of this.columns) for (const c of col) if (c > m) m = c;
    return m;
  }

  /** Per-key contributions to one cell, largest first. */
  breakdown(colIndex, row) {
    const meta = this.meta[colIndex];
    if (!meta) return [];
    const out = [];
    for (const s of meta.series) {
      let sum = 0;
      for (const b of Array.isArray(s.buckets) ? s.buckets : []) {
        if (Array.isArray(b) && b[2] > 0 && this.space.index(b[0], b[1]) === row) sum += b[2];
      }
      if (sum > 0) out.push([keyText(s.key), sum]);
    }
    return out.sort((x, y) => y[1] - x[1]);
  }
}

// ───────────────────────────── 5. HeatmapView ─────────────────────────────

/**
 * Draws a HistModel. The heat image lives in an offscreen canvas with one pixel per cell
 * (capacity × visible rows). A new tick shifts that image left by one pixel (drawImage of the
 * canvas onto itself) and writes only the new column; the image is then scaled onto the
 * visible canvas without smoothing. Everything is rebuilt only when the rows, the visible
 * range, the colour scale, the size or the model change.
 */
class HeatmapView {
  constructor({ canvas, wrap, tooltip, empty, legend, legendMax, legendRamp, capacity }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.wrap = wrap;
    this.tooltip = tooltip;
    this.empty = empty;
    this.legend = legend;
    this.legendMax = legendMax;
    this.capacity = capacity;
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d', { willReadFrequently: false });
    this.model = null;
    this.unit = null;
    this.tickMs = 1000;
    this.scaleMax = 1;
    this.range = null;     // [first, last] visible row indices
    this.g = null;         // geometry in device pixels
    this.hover = null;     // {x, y} in CSS pixels relative to the canvas
    this.emptyText = 'Pick a program and press Start.';
    this.fullRedraws = 0;
    this.incrementalDraws = 0;
    legendRamp.style.background = rampCss();

    // Size the backing store in device pixels. devicePixelContentBoxSize is exact on real
    // screens; it is ignored when it disagrees with CSS size × devicePixelRatio (emulation).
    const resize = (entry) => {
      const cssW = entry ? entry.contentRect.width : canvas.clientWidth;
      const cssH = entry ? entry.contentRect.height : canvas.clientHeight;
      const dpr = window.devicePixelRatio || 1;
      let w = Math.round(cssW * dpr), h = Math.round(cssH * dpr);
      const box = entry && entry.devicePixelContentBoxSize && entry.devicePixelContentBoxSize[0];
      if (box && Math.abs(box.inlineSize - w) <= 2 && Math.abs(box.blockSize - h) <= 2) { w = box.inlineSize; h = box.blockSize; }
      if (w !== canvas.width || h !== canvas.height) {
        canvas.width = Math.max(1, w);
        canvas.height = Math.max(1, h);
        this.full();
      }
    };
    const ro = new ResizeObserver((entries) => resize(entries[entries.length - 1]));
    try { ro.observe(canvas, { box: 'device-pixel-content-box' }); } catch { ro.observe(canvas); }
    const watchDpr = () => {
      const mq = matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
      mq.addEventListener('change', () => { resize(null); watchDpr(); }, { once: true });
    };
    watchDpr();

    canvas.addEventListener('mousemove', (ev) => {
      const r = canvas.getBoundingClientRect();
      this.hover = { x: ev.clientX - r.left, y: ev.clientY - r.top };
      this.blit();
      this.updateTooltip();
    });
    canvas.addEventListener('mouseleave', () => {
      this.hover = null;
      this.blit();
      this.updateTooltip();
    });
  }

  setModel(model) { this.model = model; this.scaleMax = 1; this.full(); }
  setUnit(unit) { this.unit = unit || null; this.full(); }
  setTick(ms) { if (ms > 0 && ms !== this.tickMs) { this.tickMs = ms; this.full(); } }
  setEmptyText(t) { this.emptyText = t; this.syncEmpty(); }

  /** Called after the model received one column. */
  update(rowsChanged) {
    const m = this.model;
    if (!m) return;
    const range = m.visibleRange();
    const scaleChanged = this.adjustScale();
    if (rowsChanged || scaleChanged || !this.g || !sameRange(range, this.range)) { this.full(); return; }
    this.incrementalDraws++;
    const V = this.range[1] - this.range[0] + 1;
    const ctx = this.offCtx;
    ctx.globalCompositeOperation = 'copy';
    ctx.drawImage(this.off, -1, 0);
    ctx.globalCompositeOperation = 'source-over';
    this.writeColumn(this.capacity - 1, m.columns[m.columns.length - 1], V);
    this.blit();
    this.drawXAxis();
    this.updateTooltip();
  }

  adjustScale() {
    const m = this.model;
    const max = m ? m.maxCount() : 0;
    let next = this.scaleMax;
    if (max > this.scaleMax) next = niceCeil(max);
    else if (max > 0 && max * 8 < this.scaleMax) next = niceCeil(max);
    if (next === this.scaleMax) return false;
    this.scaleMax = next;
    return true;
  }

  /** Rebuild the whole picture. */
  full() {
    this.fullRedraws++;
    const m = this.model;
    if (m) this.adjustScale();
    this.legendMax.textContent = fmtNum(this.scaleMax);
    this.range = m ? m.visibleRange() : null;
    this.layout();
    const V = this.range ? this.range[1] - this.range[0] + 1 : 0;
    const N = this.capacity;
    if (V > 0) {
      this.off.width = N;
      this.off.height = V;
      this.offCtx.clearRect(0, 0, N, V);
      const cols = m.columns;
      const first = N - cols.length;
      for (let i = 0; i < cols.length; i++) this.writeColumn(first + i, cols[i], V);
    }
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.syncEmpty();
    if (!m) { this.updateTooltip(); return; }
    this.drawYAxis();
    this.blit();
    this.drawXAxis();
    this.updateTooltip();
  }

  writeColumn(x, col, V) {
    if (!col || V <= 0) return;
    const img = this.offCtx.createImageData(1, V);
    const d = img.data;
    const a = this.range[0];
    const logMax = Math.log(this.scaleMax);
    for (let r = 0; r < V; r++) {
      const c = col[a + r];
      if (!(c > 0)) continue;
      const t = logMax > 0 ? Math.min(1, Math.log(c) / logMax) : 1;
      const li = Math.round(t * 255) * 4;
      const p = (V - 1 - r) * 4; // row 0 (lowest values) at the bottom
      d[p] = LUT[li]; d[p + 1] = LUT[li + 1]; d[p + 2] = LUT[li + 2]; d[p + 3] = 255;
    }
    this.offCtx.putImageData(img, x, 0);
  }

  /** Geometry (device pixels) from the canvas size and the label widths. */
  layout() {
    const dpr = this.canvas.width / Math.max(1, this.canvas.clientWidth || 1) || devicePixelRatio || 1;
    const cs = getComputedStyle(this.canvas);
    const fontPx = parseFloat(cs.fontSize) || 13;
    const family = cs.fontFamily || 'system-ui, sans-serif';
    const fs = Math.round(fontPx * dpr);
    const font = `${fs}px ${family}`;
    const ctx = this.ctx;
    ctx.font = font;
    let labelW = ctx.measureText('≥ 0000').width;
    const rows = this.model ? this.model.space.rows : [];
    const log2 = !!this.model && this.model.space instanceof Log2Rows;
    if (this.range) {
      for (let i = this.range[0]; i <= this.range[1]; i++) {
        labelW = Math.max(labelW, ctx.measureText(rowLabel(rows[i], this.unit, log2)).width);
      }
    }
    const W = this.canvas.width;
    const H = this.canvas.height;
    const padL = Math.round(labelW + 14 * dpr);
    const padR = Math.round(10 * dpr);
    const padT = Math.round(8 * dpr);
    const padB = Math.round(fs * 2.1);
    this.g = {
      dpr, fs, font, W, H,
      x: padL, y: padT,
      w: Math.max(1, W - padL - padR),
      h: Math.max(1, H - padT - padB),
    };
  }

  rowY(r, V) { // top edge (device px) of visible row r (0 = bottom row); r = V gives the top of the plot
    const g = this.g;
    return g.y + g.h - Math.round((r * g.h) / V);
  }

  colX(slot) { const g = this.g; return g.x + Math.round((slot * g.w) / this.capacity); }

  /** Copy the heat image onto the visible canvas, plus grid and hover highlight. */
  blit() {
    const g = this.g;
    if (!g || !this.model) return;
    const ctx = this.ctx;
    ctx.save();
    ctx.fillStyle = '#0e1118';
    ctx.fillRect(g.x, g.y, g.w, g.h);
    const V = this.range ? this.range[1] - this.range[0] + 1 : 0;
    if (V > 0) {
      const filled = this.model.columns.length;
      if (filled < this.capacity) { // no history yet: a shade darker than "zero events"
        ctx.fillStyle = '#0a0c11';
        ctx.fillRect(g.x, g.y, this.colX(this.capacity - filled) - g.x, g.h);
      }
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.off, 0, 0, this.capacity, V, g.x, g.y, g.w, g.h);
      const rowH = g.h / V;
      if (rowH >= 9 * g.dpr) { // faint separators between rows
        ctx.fillStyle = 'rgba(14,17,24,0.42)';
        for (let r = 1; r < V; r++) ctx.fillRect(g.x, this.rowY(r, V), g.w, Math.max(1, Math.round(g.dpr)));
      }
      const hit = this.hitTest();
      if (hit) {
        ctx.strokeStyle = 'rgba(255,255,255,0.9)';
        ctx.lineWidth = Math.max(1, Math.round(g.dpr));
        const x0 = this.colX(hit.slot), x1 = this.colX(hit.slot + 1);
        const yTop = this.rowY(hit.r + 1, V), yBot = this.rowY(hit.r, V);
        ctx.strokeRect(x0 + 0.5, yTop + 0.5, Math.max(1, x1 - x0 - 1), Math.max(1, yBot - yTop - 1));
      }
    }
    ctx.restore();
  }

  drawYAxis() {
    const g = this.g;
    const ctx = this.ctx;
    ctx.clearRect(0, 0, g.x, g.H);
    if (!this.range) return;
    const rows = this.model.space.rows;
    const V = this.range[1] - this.range[0] + 1;
    const rowH = g.h / V;
    const every = Math.max(1, Math.ceil((g.fs * 1.25) / rowH));
    ctx.save();
    ctx.font = g.font;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let r = 0; r < V; r++) {
      if (r % every !== 0) continue;
      const yc = (this.rowY(r, V) + this.rowY(r + 1, V)) / 2;
      ctx.fillStyle = '#3a4152';
      ctx.fillRect(g.x - Math.round(5 * g.dpr), Math.round(yc), Math.round(4 * g.dpr), Math.max(1, Math.round(g.dpr)));
      ctx.fillStyle = '#a9b1c2';
      ctx.fillText(rowLabel(rows[this.range[0] + r], this.unit, this.model.space instanceof Log2Rows), g.x - Math.round(8 * g.dpr), yc);
    }
    ctx.restore();
  }

  /** X axis: "seconds ago" labels (static) and markers for dropped frames (scroll). */
  drawXAxis() {
    const g = this.g;
    if (!g || !this.model) return;
    const ctx = this.ctx;
    const top = g.y + g.h;
    ctx.clearRect(0, top, g.W, g.H - top);
    ctx.save();
    ctx.font = g.font;
    ctx.textBaseline = 'top';
    const N = this.capacity;
    const colW = g.w / N;
    const secPerCol = this.tickMs / 1000;
    const minPx = Math.max(90 * g.dpr, g.fs * 7); // room for a label
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
    let stepSec = steps[steps.length - 1];
    for (const s of steps) if ((s / secPerCol) * colW >= minPx) { stepSec = s; break; }
    const ly = top + Math.round(6 * g.dpr);
    for (let sec = 0; sec / secPerCol <= N - 0.5; sec += stepSec) {
      const ago = Math.round(sec / secPerCol); // columns ago
      const x = g.x + g.w - (ago + 0.5) * colW;
      ctx.fillStyle = '#3a4152';
      ctx.fillRect(Math.round(x), top, Math.max(1, Math.round(g.dpr)), Math.round(4 * g.dpr));
      ctx.fillStyle = '#a9b1c2';
      ctx.textAlign = sec === 0 ? 'right' : 'center';
      const label = sec === 0 ? 'now' : `−${sec >= 120 ? `${sec / 60} min` : `${sec} s`}`;
      ctx.fillText(label, sec === 0 ? g.x + g.w : x, ly);
    }
    if (this.unit) {
      ctx.textAlign = 'right';
      ctx.fillStyle = '#6f788b';
      ctx.fillText(this.unit, g.x - Math.round(8 * g.dpr), ly);
    }
    // dropped-frame markers under the columns that follow a gap in seq
    const m = this.model;
    if (m) {
      const first = N - m.meta.length;
      ctx.fillStyle = '#ff5c5c';
      m.meta.forEach((meta, i) => {
        if (!meta.gap) return;
        const x = this.colX(first + i);
        ctx.fillRect(x, top, Math.max(2, Math.round(2 * g.dpr)), Math.round(5 * g.dpr));
      });
    }
    ctx.restore();
  }

  syncEmpty() {
    const m = this.model;
    const hasData = m && m.seenMin;
    this.empty.hidden = !!hasData;
    this.legend.hidden = !m;
    if (!hasData) this.empty.textContent = m ? `Waiting for data in ${m.name}…` : this.emptyText;
  }

  /** The cell under the mouse: {slot, col (index into model.columns), r (visible row), row}. */
  hitTest() {
    const g = this.g, m = this.model, h = this.hover;
    if (!g || !m || !h || !this.range) return null;
    const x = h.x * g.dpr, y = h.y * g.dpr;
    if (x < g.x || x >= g.x + g.w || y < g.y || y >= g.y + g.h) return null;
    const slot = Math.min(this.capacity - 1, Math.floor(((x - g.x) * this.capacity) / g.w));
    const col = slot - (this.capacity - m.columns.length);
    if (col < 0) return null;
    const V = this.range[1] - this.range[0] + 1;
    const r = Math.min(V - 1, Math.floor(((g.y + g.h - y) * V) / g.h));
    return { slot, col, r, row: this.range[0] + r };
  }

  updateTooltip() {
    const tip = this.tooltip;
    const hit = this.hitTest();
    if (!hit) { tip.hidden = true; return; }
    const m = this.model;
    const meta = m.meta[hit.col];
    const newest = m.meta[m.meta.length - 1];
    const count = m.columns[hit.col][hit.row] || 0;
    const ago = newest && meta ? (newest.ts - meta.ts) / 1000 : 0;
    tip.replaceChildren(
      el('div', { class: 'tt-time' }, `${fmtClock(meta.ts)}`, el('span', { class: 'muted', text: ` · ${fmtAgo(ago)}` })),
      el('div', { class: 'tt-range', text: rangeText(m.space.rows[hit.row], this.unit) }),
      el('div', { class: 'tt-count' }, el('b', { text: fmtNum(count) }), el('span', { class: 'muted', text: count === 1 ? ' event' : ' events' })),
    );
    const parts = count > 0 ? m.breakdown(hit.col, hit.row) : [];
    if (parts.length > 1 || (parts.length === 1 && parts[0][0] !== '(no key)')) {
      const tbl = el('table', { class: 'tt-keys' });
      for (const [k, v] of parts.slice(0, 6)) tbl.append(el('tr', {}, el('td', { text: k }), el('td', { text: fmtNum(v) })));
      if (parts.length > 6) tbl.append(el('tr', {}, el('td', { class: 'muted', text: `+${parts.length - 6} more` }), el('td')));
      tip.append(tbl);
    }
    tip.hidden = false;
    // keep inside the wrapper
    const wrapR = this.wrap.getBoundingClientRect();
    const canR = this.canvas.getBoundingClientRect();
    const px = this.hover.x + (canR.left - wrapR.left);
    const py = this.hover.y + (canR.top - wrapR.top);
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = px + 16, top = py + 16;
    if (left + tw > wrapR.width - 4) left = px - tw - 16;
    if (top + th > wrapR.height - 4) top = py - th - 16;
    tip.style.left = `${Math.max(4, left)}px`;
    tip.style.top = `${Math.max(4, top)}px`;
  }
}

function sameRange(a, b) {
  return a === b || (!!a && !!b && a[0] === b[0] && a[1] === b[1]);
}

// ───────────────────────────── 6. ScalarsView ─────────────────────────────

/** One card per scalar aggregation; a big number for an unkeyed value, else a table per key. */
class ScalarsView {
  constructor(root) { this.root = root; this.known = []; }

  /** Placeholders from `started.aggregations`, before the first frame arrives. */
  announce(aggs) {
    this.known = aggs.filter((a) => SCALAR_KINDS.has(a.kind)).map((a) => ({ name: a.name, kind: a.kind, series: [] }));
    this.render(this.known, null);
  }

  clear() { this.known = []; this.render([], null); }

  render(aggs, intervalMs) {
    if (!aggs.length) {
      this.root.replaceChildren(el('p', { class: 'muted empty-note', text: 'No scalar aggregations.' }));
      return;
    }
    this.root.replaceChildren(...aggs.map((a) => this.card(a, intervalMs)));
  }

  card(agg, intervalMs) {
    const series = Array.isArray(agg.series) ? agg.series : [];
    const head = el('div', { class: 'sc-head' }, el('span', { class: 'sc-name', text: agg.name }), el('span', { class: 'sc-kind', text: agg.kind }));
    const card = el('div', { class: 'sc-card', 'data-name': agg.name });
    card.append(head);
    const perSec = (agg.kind === 'count' || agg.kind === 'sum') && intervalMs > 0;
    if (!series.length) {
      card.append(el('div', { class: 'sc-none muted', text: 'nothing this tick' }));
      return card;
    }
    if (series.length === 1 && (!series[0].key || series[0].key.length === 0)) {
      const s = series[0];
      const big = el('div', { class: 'sc-big' }, el('span', { class: 'sc-value', text: fmtNum(s.value) }));
      if (perSec) big.append(el('span', { class: 'muted sc-rate', text: `${fmtNum((s.value * 1000) / intervalMs)}/s` }));
      card.append(big);
      if (agg.kind === 'stats') card.append(el('div', { class: 'muted sc-sub', text: `count ${fmtNum(s.count)} · total ${fmtNum(s.total)}` }));
      return card;
    }
    const isStats = agg.kind === 'stats';
    const cols = ['key', isStats ? 'avg' : agg.kind, ...(isStats ? ['count', 'total'] : []), ...(perSec ? ['per s'] : [])];
    const table = el('table', { class: 'sc-table' }, el('thead', {}, el('tr', {}, ...cols.map((c, i) => el('th', { class: i ? 'num' : null, text: c })))));
    const body = el('tbody');
    const sorted = [...series].sort((x, y) => (y.value ?? 0) - (x.value ?? 0));
    const LIMIT = 12;
    for (const s of sorted.slice(0, LIMIT)) {
      const tr = el('tr', {}, el('td', { class: 'sc-key', text: keyText(s.key) }), el('td', { class: 'num', text: fmtNum(s.value) }));
      if (isStats) tr.append(el('td', { class: 'num', text: fmtNum(s.count) }), el('td', { class: 'num', text: fmtNum(s.total) }));
      if (perSec) tr.append(el('td', { class: 'num muted', text: fmtNum((s.value * 1000) / intervalMs) }));
      body.append(tr);
    }
    if (sorted.length > LIMIT) body.append(el('tr', {}, el('td', { class: 'muted', colspan: cols.length, text: `+${sorted.length - LIMIT} more keys` })));
    table.append(body);
    card.append(table);
    return card;
  }
}

// ───────────────────────────── 7. App ─────────────────────────────

const params = new URLSearchParams(location.search);
const HISTORY = clampInt(params.get('columns'), 10, 3600, DEFAULT_HISTORY);

const ui = {
  status: $('status'), retry: $('retry'), run: $('run'), session: $('session'), backend: $('backend'),
  tickInfo: $('tick-ms'), frames: $('frames'), dropped: $('dropped'),
  preset: $('preset'), presetHint: $('preset-hint'), script: $('script'), tick: $('tick'),
  start: $('start'), stop: $('stop'), error: $('error'), aggregation: $('aggregation'),
  heatMeta: $('heat-meta'), live: $('live'), scalars: $('scalars'),
  outputPanel: $('output-panel'), output: $('output'), outputCount: $('output-count'),
  toggle: $('toggle-controls'),
};

const S = {
  state: 'connecting',   // connection: connecting | open | closed
  run: 'idle',           // program: idle | starting | running | stopped
  stopReason: null,
  hello: null,
  presets: [],           // hello.presets
  started: null,
  session: null,
  backend: null,
  tick: null,
  unit: null,
  frames: 0,
  dropped: 0,
  expectSeq: 1,
  lastFrame: null,
  models: new Map(),     // histogram aggregations of the running program, by name
  selected: null,        // name of the aggregation shown in the heatmap
  outputLines: [],
};

const view = new HeatmapView({
  canvas: $('heatmap'), wrap: $('heat-wrap'), tooltip: $('tooltip'), empty: $('heat-empty'),
  legend: $('legend'), legendMax: $('legend-max'), legendRamp: $('legend-ramp'), capacity: HISTORY,
});
const scalars = new ScalarsView(ui.scalars);

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const conn = new Connection(wsUrl, { onState, onMessage });

// ── protocol ──

function onState(state) {
  S.state = state;
  if (state === 'closed' && (S.run === 'running' || S.run === 'starting')) {
    S.run = 'stopped'; // the server stops a session's program when its socket closes
    S.stopReason = 'disconnected';
  }
  renderTop();
}

function onMessage(msg) {
  switch (msg.type) {
    case 'hello': return onHello(msg);
    case 'started': return onStarted(msg);
    case 'frame': return onFrame(msg);
    case 'stopped': return onStopped(msg);
    case 'error': return onError(msg);
    default: console.debug('heat: ignoring message type', msg.type);
  }
}

function onHello(msg) {
  conn.healthy();
  S.hello = msg;
  S.session = msg.session ?? null;
  S.backend = Array.isArray(msg.backends) ? msg.backends.join(', ') : null;
  S.tick = msg.tick_ms ?? null;
  S.started = null;
  S.unit = null;
  S.run = 'idle';
  S.stopReason = null;
  S.frames = 0;
  S.dropped = 0;
  S.expectSeq = 1;
  S.lastFrame = null;
  resetRun([]);
  clearError();
  if (msg.protocol !== PROTOCOL) showError('protocol', `server speaks protocol ${msg.protocol}; this page speaks ${PROTOCOL}`);
  fillPresets(Array.isArray(msg.presets) ? msg.presets : []);
  const [lo, hi] = Array.isArray(msg.tick_ms_range) ? msg.tick_ms_range : [100, 10000];
  ui.tick.min = lo;
  ui.tick.max = hi;
  ui.tick.value = clampInt(store.get('tick'), lo, hi, clampInt(msg.tick_ms, lo, hi, 1000));
  if (msg.tick_ms) view.setTick(msg.tick_ms);
  renderTop();
}

function onStarted(msg) {
  S.started = msg;
  S.run = 'running';
  S.stopReason = null;
  S.backend = msg.engine ? `${msg.backend} · ${msg.engine}` : (msg.backend ?? S.backend);
  S.tick = msg.tick_ms ?? S.tick;
  S.session = msg.session ?? S.session;
  S.unit = msg.unit ?? null;
  S.expectSeq = 1;
  clearError();
  resetRun(Array.isArray(msg.aggregations) ? msg.aggregations : []);
  if (S.tick) view.setTick(S.tick);
  view.setUnit(S.unit);
  renderPresetHint();
  renderTop();
}

function onFrame(msg) {
  S.frames++;
  S.lastFrame = msg;
  let gap = 0;
  if (Number.isInteger(msg.seq)) {
    if (msg.seq > S.expectSeq) gap = msg.seq - S.expectSeq;
    S.dropped += gap;
    S.expectSeq = Math.max(S.expectSeq, msg.seq + 1);
  }
  if (S.run !== 'running' && S.run !== 'stopped') S.run = 'running';
  const meta = { seq: msg.seq, ts: Number.isFinite(msg.ts_ms) ? msg.ts_ms : Date.now(), interval: msg.interval_ms, gap };
  if (msg.interval_ms > 0 && !S.tick) view.setTick(msg.interval_ms);

  const aggs = Array.isArray(msg.aggregations) ? msg.aggregations : [];
  const present = new Set();
  const scalarAggs = [];
  let selectedChanged = false;
  let listChanged = false;
  for (const a of aggs) {
    if (!a || typeof a.name !== 'string') continue;
    if (HIST_KINDS.has(a.kind)) {
      let m = S.models.get(a.name);
      if (!m) { m = addModel(a.name, a.kind, a.layout); listChanged = true; }
      present.add(a.name);
      const changed = m.push(a, meta);
      if (a.name === S.selected) selectedChanged = changed;
    } else if (SCALAR_KINDS.has(a.kind)) {
      scalarAggs.push(a);
    }
  }
  for (const [name, m] of S.models) {
    if (present.has(name)) continue;
    const changed = m.push(null, meta); // keep every history aligned in time
    if (name === S.selected) selectedChanged = changed;
  }
  if (listChanged) fillAggregations();
  else view.update(selectedChanged);
  scalars.render(scalarAggs.length ? scalarAggs : scalars.known, msg.interval_ms);
  if (Array.isArray(msg.output) && msg.output.length) appendOutput(msg.output);
  renderHeatMeta();
  renderTop();
}

function onStopped(msg) {
  S.run = 'stopped';
  S.stopReason = msg.reason ?? null;
  renderTop();
}

function onError(msg) {
  showError(msg.code || 'error', typeof msg.message === 'string' ? msg.message : JSON.stringify(msg.message ?? ''));
  if (S.run === 'starting') S.run = 'idle';
  renderTop();
}

// ── run state ──

function resetRun(aggs) {
  S.models = new Map();
  for (const a of aggs) if (a && HIST_KINDS.has(a.kind)) addModel(a.name, a.kind, a.layout);
  scalars.announce(aggs);
  S.outputLines = [];
  ui.output.textContent = '';
  ui.outputPanel.hidden = true;
  fillAggregations();
}

function addModel(name, kind, layout) {
  const m = new HistModel(name, kind, layout, HISTORY);
  S.models.set(name, m);
  return m;
}

function fillAggregations() {
  const names = [...S.models.keys()];
  const wanted = [S.selected, store.get('aggregation'), names[0]].find((n) => n && S.models.has(n)) ?? null;
  ui.aggregation.replaceChildren(...(names.length
    ? names.map((n) => el('option', { value: n, text: `${n}  (${S.models.get(n).kind})` }))
    : [el('option', { value: '', text: 'no histogram' })]));
  ui.aggregation.disabled = names.length === 0;
  ui.aggregation.value = wanted ?? '';
  selectAggregation(wanted);
}

function selectAggregation(name) {
  S.selected = name && S.models.has(name) ? name : null;
  view.setEmptyText(S.run === 'running' ? 'This program has no histogram aggregation.' : 'Pick a program and press Start.');
  view.setModel(S.selected ? S.models.get(S.selected) : null);
  renderHeatMeta();
}

function renderHeatMeta() {
  const m = S.selected ? S.models.get(S.selected) : null;
  const parts = [];
  if (m) {
    const r = m.visibleRange();
    parts.push(`${m.rows.length} buckets${r && (r[1] - r[0] + 1) < m.rows.length ? `, ${r[1] - r[0] + 1} shown` : ''}`);
    if (S.unit) parts.push(S.unit);
    parts.push(`${m.columns.length}/${HISTORY} ticks`);
  }
  if (S.started && S.started.preset) parts.unshift(S.started.preset);
  ui.heatMeta.textContent = parts.join(' · ');
}

// ── controls ──

function fillPresets(presets) {
  const saved = store.get('preset');
  const opts = presets.map((p) => el('option', { value: p.name, title: p.description || null, text: p.name }));
  opts.push(el('option', { value: CUSTOM, text: 'Custom script (bpftrace)…' }));
  ui.preset.replaceChildren(...opts);
  S.presets = presets;
  const names = presets.map((p) => p.name);
  ui.preset.value = saved === CUSTOM || names.includes(saved) ? saved : (names[0] ?? CUSTOM);
  renderPresetHint();
}

function renderPresetHint() {
  const p = S.presets.find((x) => x.name === ui.preset.value);
  ui.presetHint.replaceChildren();
  if (p) {
    ui.presetHint.append(p.description || '');
    const tags = [p.lang, p.unit && `unit: ${p.unit}`].filter(Boolean).join(' · ');
    if (tags) ui.presetHint.append(el('span', { class: 'tags', text: tags }));
  } else {
    ui.presetHint.append('Runs the script below with bpftrace, or as D (compiled to bpftrace) when it looks like D. Ctrl+Enter starts it.');
    // What a D translation only approximates, as `started.notes` says.
    const notes = S.started && Array.isArray(S.started.notes) ? S.started.notes : [];
    if (notes.length) ui.presetHint.append(el('ul', { class: 'notes' }, ...notes.map((n) => el('li', { text: n }))));
  }
  ui.script.classList.toggle('inactive', !!p);
}

function startMessage() {
  const lo = Number(ui.tick.min) || 100, hi = Number(ui.tick.max) || 10000;
  const tick = clampInt(ui.tick.value, lo, hi, S.hello?.tick_ms ?? 1000);
  ui.tick.value = tick;
  store.set('tick', tick);
  if (ui.preset.value !== CUSTOM) return { type: 'start', preset: ui.preset.value, tick_ms: tick };
  return { type: 'start', lang: looksLikeD(ui.script.value) ? 'd' : 'bpftrace', script: ui.script.value, tick_ms: tick };
}

/** D's probe syntax and aggregating functions have no bpftrace spelling. */
function looksLikeD(script) {
  return /:::|\bself->|\bthis->|\b(l|ll)?quantize\s*\(|\b(tick|profile)-\d|\bsyscall::/.test(script);
}

function start() {
  const msg = startMessage();
  if (msg.script !== undefined && !msg.script.trim()) { showError('client', 'The script is empty.'); return; }
  const before = S.run;
  S.run = 'starting'; // before sending: the answer may arrive before send() returns
  ui.error.classList.add('stale');
  if (!conn.send(msg)) {
    S.run = before;
    showError('client', 'Not connected; the page reconnects by itself.');
  }
  renderTop();
}

function stop() {
  conn.send({ type: 'stop' });
}

function showError(code, message) {
  ui.error.dataset.code = code;
  ui.error.textContent = message;
  ui.error.classList.remove('stale');
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  delete ui.error.dataset.code;
  ui.error.classList.remove('stale');
  ui.error.hidden = true;
}

function appendOutput(lines) {
  S.outputLines.push(...lines.map(String));
  if (S.outputLines.length > MAX_OUTPUT_LINES) S.outputLines.splice(0, S.outputLines.length - MAX_OUTPUT_LINES);
  ui.output.textContent = S.outputLines.join('\n');
  ui.output.scrollTop = ui.output.scrollHeight;
  ui.outputCount.textContent = `(${S.outputLines.length} lines)`;
  ui.outputPanel.hidden = false;
}

// ── top bar ──

function renderTop() {
  ui.status.textContent = S.state;
  ui.status.dataset.state = S.state;
  document.body.dataset.conn = S.state;
  renderRetry();
  const runText = S.run === 'stopped' && S.stopReason ? `stopped (${S.stopReason.replace(/_/g, ' ')})` : S.run;
  const what = S.run === 'running' && S.started ? S.started.preset || 'custom script' : null;
  ui.run.textContent = what ? `running ${what}` : runText;
  ui.run.dataset.run = S.run;
  ui.live.textContent = S.run === 'running' ? 'live' : runText;
  ui.live.dataset.live = S.run;
  ui.session.textContent = S.session ?? '–';
  ui.backend.textContent = S.backend ?? '–';
  ui.tickInfo.textContent = S.tick ? `${S.tick} ms` : '–';
  ui.frames.textContent = fmtNum(S.frames);
  ui.dropped.textContent = fmtNum(S.dropped);
  ui.dropped.classList.toggle('bad', S.dropped > 0);
  const open = S.state === 'open' && !!S.hello;
  ui.start.disabled = !open;
  ui.stop.disabled = !open; // stop is harmless when nothing runs
}

function renderRetry() {
  let t = '';
  if (S.state === 'closed') {
    const close = conn.lastClose;
    const why = close && close.code === 1013 ? `${close.reason || 'server full'} · ` : '';
    const secs = conn.retryAt ? Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) : null;
    t = ` ${why}${secs != null ? `retry in ${secs} s` : ''}`;
  }
  ui.retry.textContent = t;
}

// ── wiring ──

function setControlsHidden(hidden) {
  document.body.classList.toggle('kiosk', hidden);
  ui.toggle.textContent = hidden ? 'Show controls' : 'Hide controls';
  ui.toggle.setAttribute('aria-expanded', String(!hidden));
  store.set('kiosk', hidden ? '1' : '0');
}

ui.script.value = store.get('script') || EXAMPLE_SCRIPT;
ui.script.addEventListener('input', () => {
  store.set('script', ui.script.value);
  if (ui.preset.value !== CUSTOM) { ui.preset.value = CUSTOM; store.set('preset', CUSTOM); renderPresetHint(); }
});
ui.script.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); start(); }
  if (ev.key === 'Tab' && !ev.shiftKey && !ev.ctrlKey && !ev.altKey) { // indent instead of leaving
    ev.preventDefault();
    ui.script.setRangeText('  ', ui.script.selectionStart, ui.script.selectionEnd, 'end');
  }
});
ui.preset.addEventListener('change', () => { store.set('preset', ui.preset.value); renderPresetHint(); });
ui.tick.addEventListener('change', () => store.set('tick', ui.tick.value));
ui.start.addEventListener('click', start);
ui.stop.addEventListener('click', stop);
ui.aggregation.addEventListener('change', () => {
  store.set('aggregation', ui.aggregation.value);
  selectAggregation(ui.aggregation.value);
});
ui.toggle.addEventListener('click', () => setControlsHidden(!document.body.classList.contains('kiosk')));
if (params.has('kiosk') || store.get('kiosk') === '1') setControlsHidden(true);
setInterval(renderRetry, 500);

fillPresets([]);
renderTop();
conn.connect();

// ── test / console API ──

const heat = {
  get state() { return S.state; },
  get run() { return S.run; },
  get session() { return S.session; },
  get backend() { return S.backend; },
  get tick() { return S.tick; },
  get unit() { return S.unit; },
  get frames() { return S.frames; },
  get dropped() { return S.dropped; },
  get lastFrame() { return S.lastFrame; },
  get hello() { return S.hello; },
  get started() { return S.started; },
  get aggregation() { return S.selected; },
  get aggregations() { return [...S.models.keys()]; },
  get columns() { const m = S.models.get(S.selected); return m ? m.columns : []; },
  get rows() { const m = S.models.get(S.selected); return m ? m.rows : []; },
  get visibleRows() { const m = S.models.get(S.selected); return m ? m.visibleRange() : null; },
  get times() { const m = S.models.get(S.selected); return m ? m.meta.map((x) => x.ts) : []; },
  get scaleMax() { return view.scaleMax; },
  get draws() { return { full: view.fullRedraws, incremental: view.incrementalDraws }; },
  history: HISTORY,
  model: (name) => S.models.get(name ?? S.selected) ?? null,
  redraw: () => view.full(),
  select(name) { ui.aggregation.value = name; selectAggregation(name); },
  send: (msg) => conn.send(msg),
  start,
  stop,
};
window.heat = heat;
