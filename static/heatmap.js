// HeatmapView: draws a HistModel on a canvas.
//
// Why it is fast: every column is a whole number of device pixels wide (the plot width is
// rounded down to a multiple of the history length), so a new tick scrolls the plot left by one
// column and paints only the new column: its cells, its row separators and the last segment of
// each overlay line. The plot lives in two offscreen canvases used in turn (drawing a canvas
// onto itself makes Chromium copy it first, ~10× slower): the current one is drawn shifted into
// the other, the new column is painted there, and the result is copied onto the page canvas. Hover
// and selection outlines and the overlay names live on a second, transparent canvas on top,
// so moving the mouse never repaints the heat. A one-pixel-per-cell offscreen image (history ×
// visible rows) is kept scrolled in step; full redraws scale it onto the plot. Nothing walks the
// history on a normal tick. The whole picture is rebuilt only when the rows, the visible range,
// the colour scale, the key filter, the size or the model change. (When the history has more
// columns than the plot has pixels, columns are fractional and each tick re-blits the image.)

import { HEAT_LUT, hueLut, KEY_HUES, OTHER_HUE, Scale } from './colour.js';
import { rowLabel, rangeText } from './units.js';
import { el, fmtNum, fmtPct, fmtClock, fmtAgo, niceCeil } from './util.js';
import { boxOf, cellsOf } from './select.js';

const DRAG_PX = 4;          // CSS px the pointer moves before a press becomes a box drag (less: a click)
const HANDLE_PX = 6;        // CSS px around a box edge that grab the edge (resize) rather than move
const BOX_COLOUR = '#5ee7ff';
const BASE_COLOUR = '#ffd43b'; // the compare baseline box
const BG = '#0e1118';       // a cell with zero events
const NO_DATA = '#090b10';  // before the first column of history
export const OVERLAYS = {
  avg: { label: 'avg', colour: '#5ee7ff' },
  p50: { label: 'p50', colour: '#ffffff' },
  p90: { label: 'p90', colour: '#c7a4ff' },
  p99: { label: 'p99', colour: '#ff6b9a' },
};

export class HeatmapView {
  constructor({ canvas, wrap, tooltip, empty, capacity, onLegend, onCellClick, onBox }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.wrap = wrap;
    this.tooltip = tooltip;
    this.empty = empty;
    this.capacity = capacity;
    this.onLegend = onLegend || (() => {});
    this.onCellClick = onCellClick || (() => {});
    this.onBox = onBox || (() => {}); // (box|null, done): a box drawn, moved or resized; done on release
    this.box = null;       // the selection {from, to, lo, hi} (see select.js), drawn on the layer
    this.baseBox = null;   // the compare baseline, drawn dashed
    this.drag = null;      // a press on the plot: {x0, y0, start cell, mode: new|move|resize, edges}
    this.suppressClick = false;
    this.layer = document.createElement('canvas'); // outlines and line names, over the heat
    this.layer.className = 'heat-layer';
    this.layer.setAttribute('aria-hidden', 'true');
    canvas.after(this.layer);
    this.layerCtx = this.layer.getContext('2d');
    this.lineLabels = []; // [{y, o}] where each overlay line ends, for the names on the layer
    this.plots = [document.createElement('canvas'), document.createElement('canvas')]; // ping-pong
    this.plotCur = 0;
    this.pc = null; // context being painted: a plot canvas, translated to page-canvas coordinates
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d');
    this.colImg = null;    // reusable 1 × V ImageData for the new column
    this.model = null;
    this.unit = null;
    this.tickMs = 1000;
    this.scaleKind = 'log';
    this.scale = new Scale('log', 1, []);
    this.scaleMax = 1;
    this.sinceRank = 0;    // columns drawn against the current rank breakpoints
    this.hueByKey = false;
    this.keyHue = () => OTHER_HUE;
    this.overlays = new Set(['p50', 'p99']);
    this.range = null;     // [first, last] visible row indices
    this.g = null;         // geometry in device pixels
    this.hover = null;     // {x, y} in CSS pixels relative to the canvas
    this.selected = null;  // {abs, row}: the clicked cell (absolute column index)
    this.frozen = false;   // paused: full redraws keep showing the same columns
    this.drawnPushed = 0;  // model.pushed when the image was last drawn (lags while paused)
    this.emptyText = 'Pick a program and press Start.';
    this.fullRedraws = 0;
    this.incrementalDraws = 0;
    this.held = 0;          // inside batch(): redraws wait for its end
    this.heldRedraw = false; // something asked for a redraw while held

    // Size the backing store in device pixels so that cells and text are crisp.
    const resize = (entry) => {
      const cssW = entry ? entry.contentRect.width : canvas.clientWidth;
      const cssH = entry ? entry.contentRect.height : canvas.clientHeight;
      const dpr = window.devicePixelRatio || 1;
      let w = Math.round(cssW * dpr), h = Math.round(cssH * dpr);
      const box = entry && entry.devicePixelContentBoxSize && entry.devicePixelContentBoxSize[0];
      if (box && Math.abs(box.inlineSize - w) <= 2 && Math.abs(box.blockSize - h) <= 2) { w = box.inlineSize; h = box.blockSize; }
      if (w !== canvas.width || h !== canvas.height) {
        canvas.width = this.layer.width = Math.max(1, w);
        canvas.height = this.layer.height = Math.max(1, h);
        this.full();
      }
    };
    const ro = new ResizeObserver((entries) => resize(entries[entries.length - 1]));
    try { ro.observe(canvas, { box: 'device-pixel-content-box' }); } catch { ro.observe(canvas); }

    canvas.addEventListener('mousemove', (ev) => {
      const r = canvas.getBoundingClientRect();
      this.hover = { x: ev.clientX - r.left, y: ev.clientY - r.top };
      if (this.drag) return; // the pointer handlers draw while dragging
      canvas.style.cursor = this.cursorAt(this.hover);
      this.paintLayer();
      this.updateTooltip();
    });
    canvas.addEventListener('pointerdown', (ev) => this.pressBox(ev));
    canvas.addEventListener('pointermove', (ev) => this.dragBox(ev));
    canvas.addEventListener('pointerup', (ev) => this.releaseBox(ev));
    canvas.addEventListener('pointercancel', () => { this.drag = null; });
    canvas.addEventListener('mouseleave', () => {
      this.hover = null;
      this.paintLayer();
      this.updateTooltip();
    });
    canvas.addEventListener('click', () => {
      if (this.suppressClick) { this.suppressClick = false; return; } // the end of a box drag
      const hit = this.hitTest();
      this.selected = hit ? { abs: this.absIndex(hit.col), row: hit.row } : null;
      this.paintLayer();
      this.onCellClick(hit ? this.cellInfo(hit) : null);
    });
  }

  setModel(model) { this.model = model; this.selected = null; this.drawnPushed = model ? model.pushed : 0; this.full(); }
  setUnit(unit) { this.unit = unit || null; this.full(); }
  setTick(ms) { if (ms > 0 && ms !== this.tickMs) { this.tickMs = ms; this.full(); } }
  setEmptyText(t) { this.emptyText = t; this.syncEmpty(); }
  setScale(kind) { this.scaleKind = kind; this.full(); }
  setHueByKey(on, keyHue) { this.hueByKey = on; if (keyHue) this.keyHue = keyHue; this.full(); }
  setOverlays(set) { this.overlays = new Set(set); this.paintPlot(); }
  setCapacity(n) { this.capacity = n; this.full(); }

  absIndex(col) { return this.model.pushed - this.model.cols.length + col; }

  /**
   * The columns in the picture: absolute indices [lo, hi). While paused the model keeps
   * growing but the picture does not, so hover, overlays and labels follow the picture.
   * slot(a) is the history slot of absolute column a; at(a) its index in model.cols.
   */
  win() {
    const m = this.model;
    const base = m.pushed - m.cols.length;
    const hi = Math.min(this.drawnPushed, m.pushed);
    const lo = Math.max(base, hi - this.capacity);
    return { lo, hi, n: Math.max(0, hi - lo), slot: (a) => this.capacity - (hi - a), at: (a) => a - base };
  }

  /**
   * Runs fn with every redraw it asks for (model, capacity, scale, filter changes) deferred to
   * one full redraw at its end: opening a range swaps the model and the capacity, unpauses and
   * applies a view, and each would otherwise redraw a whole history (most of them the old one).
   */
  batch(fn) {
    this.held++;
    try { return fn(); } finally {
      if (--this.held === 0 && this.heldRedraw) { this.heldRedraw = false; this.full(); }
    }
  }

  /** Called after the model received one column. */
  update(rowsChanged) {
    const m = this.model;
    if (!m) return;
    if (this.held) { this.heldRedraw = true; return; }
    const range = m.visibleRange();
    this.sinceRank++;
    // The first data is drawn in full: it clears the "waiting" note and gives a rank scale cells.
    const firstData = !this.empty.hidden && m.seenMin !== null;
    if (firstData || rowsChanged || this.scaleStale() || !this.g || !sameRange(range, this.range) || this.drawnPushed !== m.pushed - 1) { this.full(); return; }
    this.incrementalDraws++;
    this.drawnPushed = m.pushed;
    const V = this.range[1] - this.range[0] + 1;
    const ctx = this.offCtx;
    ctx.globalCompositeOperation = 'copy';
    ctx.drawImage(this.off, -1, 0);
    ctx.globalCompositeOperation = 'source-over';
    this.writeColumn(this.capacity - 1, m.cols[m.cols.length - 1], V);
    if (this.g.colW) this.scrollPlot(V); else this.paintPlot();
    this.drawXAxis();
    this.paintLayer();
    this.updateTooltip();
  }

  /**
   * Whether the colour scale must be rebuilt. Log and linear follow the history's maximum
   * (rounded to 1/2/5 so that it changes rarely); rank re-sorts every 1/20 of the history,
   * which keeps the per-tick cost flat while the picture never lags by much.
   */
  scaleStale() {
    if (this.scaleKind === 'rank') return this.sinceRank >= Math.max(10, this.capacity / 20);
    const max = this.model ? this.model.maxShown() : 0;
    return max > this.scaleMax || (max > 0 && max * 8 < this.scaleMax);
  }

  buildScale() {
    const m = this.model;
    const max = m ? m.maxShown() : 0;
    this.scaleMax = niceCeil(max);
    let cells = [];
    if (this.scaleKind === 'rank' && m) {
      cells = [];
      for (const c of m.cols) for (const v of c.shown) if (v > 0) cells.push(v);
    }
    this.scale = new Scale(this.scaleKind, this.scaleMax, cells);
    this.sinceRank = 0;
    this.onLegend(this.scale);
  }

  /** Rebuild the whole picture. */
  full() {
    if (this.held) { this.heldRedraw = true; return; }
    this.fullRedraws++;
    const m = this.model;
    this.buildScale();
    this.range = m ? m.visibleRange() : null;
    // Frozen (paused): redraw the same columns as before, e.g. after a filter or scale change.
    if (m && !this.frozen) this.drawnPushed = m.pushed;
    this.layout();
    const V = this.range ? this.range[1] - this.range[0] + 1 : 0;
    const N = this.capacity;
    if (V > 0) {
      this.off.width = N;
      this.off.height = V;
      this.colImg = null;
      // One image for every column, put once (a putImageData per column costs ~10× more).
      const img = this.offCtx.createImageData(N, V);
      const w = this.win();
      for (let ab = w.lo; ab < w.hi; ab++) this.paintColumn(img.data, N, w.slot(ab), m.cols[w.at(ab)], V);
      this.offCtx.putImageData(img, 0, 0);
    }
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.syncEmpty();
    if (!m) { this.updateTooltip(); return; }
    this.drawYAxis();
    this.paintPlot();
    this.updateTooltip();
  }

  writeColumn(x, col, V) {
    if (!col || V <= 0) return;
    if (!this.colImg || this.colImg.height !== V) this.colImg = this.offCtx.createImageData(1, V);
    const d = this.colImg.data;
    d.fill(0);
    this.paintColumn(d, 1, 0, col, V);
    this.offCtx.putImageData(this.colImg, x, 0);
  }

  /** One column's cells into RGBA `d` (an image `width` pixels wide) at pixel column x. */
  paintColumn(d, width, x, col, V) {
    if (!col) return;
    const a = this.range[0];
    const shown = col.shown, dom = col.dom;
    for (let r = 0; r < V; r++) {
      const c = shown[a + r];
      if (!(c > 0)) continue;
      const lut = this.hueByKey ? hueLut(this.keyHue(dom[a + r])) : HEAT_LUT;
      const li = Math.round(this.scale.t(c) * 255) * 4;
      const p = ((V - 1 - r) * width + x) * 4; // row 0 (lowest values) at the bottom
      d[p] = lut[li]; d[p + 1] = lut[li + 1]; d[p + 2] = lut[li + 2]; d[p + 3] = 255;
    }
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
    let labelW = ctx.measureText('≥ 000 µs').width;
    const rows = this.model ? this.model.rows : [];
    if (this.range) {
      for (let i = this.range[0]; i <= this.range[1]; i++) labelW = Math.max(labelW, ctx.measureText(rowLabel(rows[i], this.unit)).width);
    }
    const W = this.canvas.width, H = this.canvas.height;
    const padL = Math.round(labelW + 16 * dpr);
    const padR = Math.round(46 * dpr); // room for the overlay line names
    const padT = Math.round(8 * dpr);
    const padB = Math.round(fs * 2.2);
    const avail = Math.max(1, W - padL - padR);
    // Whole-pixel columns make scrolling exact; the spare pixels go to the left margin.
    const colW = avail >= this.capacity ? Math.floor(avail / this.capacity) : 0;
    const w = colW ? colW * this.capacity : avail;
    this.g = { dpr, fs, font, W, H, colW, x: padL + (avail - w), y: padT, w, h: Math.max(1, H - padT - padB) };
    for (const p of this.plots) {
      if (p.width !== this.g.w) p.width = this.g.w;
      if (p.height !== this.g.h) p.height = this.g.h;
    }
  }

  /** A plot canvas's context, set up so that page-canvas coordinates can be used on it. */
  plotCtx(i) {
    const ctx = this.plots[i].getContext('2d');
    ctx.setTransform(1, 0, 0, 1, -this.g.x, -this.g.y);
    ctx.globalCompositeOperation = 'source-over';
    ctx.imageSmoothingEnabled = false;
    return ctx;
  }

  /** Copy the current plot canvas onto the page canvas. */
  present() {
    const g = this.g;
    this.ctx.drawImage(this.plots[this.plotCur], g.x, g.y);
  }

  /** Top edge (device px) of visible row r (0 = bottom row); r = V is the top of the plot. */
  rowY(r, V) { const g = this.g; return g.y + g.h - Math.round((r * g.h) / V); }
  colX(slot) { const g = this.g; return g.colW ? g.x + slot * g.colW : g.x + Math.round((slot * g.w) / this.capacity); }

  /** Paint the whole plot: the heat image scaled up, row separators, overlay lines, axis. */
  paintPlot() {
    if (this.held) { this.heldRedraw = true; return; }
    const g = this.g;
    if (!g || !this.model) return;
    const ctx = this.pc = this.plotCtx(this.plotCur);
    ctx.save();
    ctx.fillStyle = BG;
    ctx.fillRect(g.x, g.y, g.w, g.h);
    const V = this.range ? this.range[1] - this.range[0] + 1 : 0;
    if (V > 0) {
      const w = this.win();
      if (w.n < this.capacity) {
        ctx.fillStyle = NO_DATA;
        ctx.fillRect(g.x, g.y, this.colX(this.capacity - w.n) - g.x, g.h);
      }
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(this.off, 0, 0, this.capacity, V, g.x, g.y, g.w, g.h);
      this.separators(g.x, g.w, V);
      this.drawOverlays(V, w.lo);
    }
    ctx.restore();
    this.present();
    this.drawXAxis();
    this.paintLayer();
  }

  /** The incremental path: scroll the plot by one column and paint only the new one. */
  scrollPlot(V) {
    const g = this.g, k = g.colW;
    const next = 1 - this.plotCur;
    const ctx = this.pc = this.plots[next].getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalCompositeOperation = 'copy';
    ctx.drawImage(this.plots[this.plotCur], -k, 0);
    this.plotCtx(next);
    ctx.save();
    const x = g.x + g.w - k;
    ctx.fillStyle = BG;
    ctx.fillRect(x, g.y, k, g.h);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, this.capacity - 1, 0, 1, V, x, g.y, k, g.h);
    this.separators(x, k, V);
    const w = this.win();
    this.drawOverlays(V, Math.max(w.lo, w.hi - 2));
    ctx.restore();
    this.plotCur = next;
    this.present();
  }

  separators(x, width, V) {
    const g = this.g;
    if (g.h / V < 9 * g.dpr) return; // faint lines between rows, only when rows are tall
    this.pc.fillStyle = 'rgba(14,17,24,0.42)';
    for (let r = 1; r < V; r++) this.pc.fillRect(x, this.rowY(r, V), width, Math.max(1, Math.round(g.dpr)));
  }

  /** The transparent top layer: hover and selection outlines, overlay line names. */
  paintLayer() {
    const g = this.g, ctx = this.layerCtx;
    ctx.clearRect(0, 0, this.layer.width, this.layer.height);
    if (!g || !this.model || !this.range) return;
    const V = this.range[1] - this.range[0] + 1;
    ctx.save();
    ctx.font = `600 ${Math.round(g.fs * 0.9)}px ${g.font.split('px ')[1]}`;
    ctx.textBaseline = 'middle';
    for (const { y, o } of this.lineLabels) {
      ctx.fillStyle = o.colour;
      ctx.fillText(o.label, g.x + g.w + 5 * g.dpr, y);
    }
    const outline = (slot, row, colour) => {
      const x0 = this.colX(slot), x1 = this.colX(slot + 1);
      const rv = row - this.range[0];
      if (rv < 0 || rv >= V) return;
      const yTop = this.rowY(rv + 1, V), yBot = this.rowY(rv, V);
      ctx.strokeStyle = colour;
      ctx.lineWidth = Math.max(1, Math.round(g.dpr * 1.5));
      ctx.strokeRect(x0 + 0.5, yTop + 0.5, Math.max(2, x1 - x0 - 1), Math.max(2, yBot - yTop - 1));
    };
    this.paintBoxes(ctx);
    const w = this.win();
    if (this.selected && this.selected.abs >= w.lo && this.selected.abs < w.hi) outline(w.slot(this.selected.abs), this.selected.row, '#5ee7ff');
    const hit = this.drag?.moved ? null : this.hitTest();
    if (hit) outline(hit.slot, hit.row, 'rgba(255,255,255,0.95)');
    ctx.restore();
  }

  /**
   * Average and percentile lines from absolute column `from` to the newest drawn one: the
   * whole history on a full paint, the last segment when scrolling (clipped to the columns
   * being painted, so the segment joins the line already on the canvas).
   */
  drawOverlays(V, from) {
    const g = this.g, ctx = this.pc, m = this.model;
    const w = this.win();
    this.lineLabels = [];
    if (!this.overlays.size || w.n === 0) return;
    const a = this.range[0];
    const yOf = (pos) => g.y + g.h - ((pos - a) * g.h) / V;
    const centre = (ab) => (this.colX(w.slot(ab)) + this.colX(w.slot(ab) + 1)) / 2;
    ctx.save();
    ctx.beginPath();
    const clipX = from > w.lo ? Math.floor(centre(from)) : g.x;
    ctx.rect(clipX, g.y, g.x + g.w - clipX, g.h);
    ctx.clip();
    ctx.lineJoin = 'bevel';
    // One path per line, stroked twice: a dark halo under the colour keeps the line readable
    // over bright cells (shadowBlur would do it too, but costs ~20× more in software raster).
    const labels = [];
    for (const [key, o] of Object.entries(OVERLAYS)) {
      if (!this.overlays.has(key)) continue;
      const pi = key === 'avg' ? -1 : ['p50', 'p90', 'p99'].indexOf(key);
      const path = new Path2D();
      let pen = false, lastY = null;
      for (let ab = from; ab < w.hi; ab++) {
        const s = m.cols[w.at(ab)].stats;
        if (!s) { pen = false; continue; }
        const pos = pi < 0 ? s.avgPos : s.pct[pi];
        const x = centre(ab);
        const y = yOf(pos);
        if (pen) path.lineTo(x, y); else path.moveTo(x, y);
        pen = true;
        lastY = y;
      }
      ctx.strokeStyle = 'rgba(0,0,0,0.7)';
      ctx.lineWidth = Math.max(3.5, 3.6 * g.dpr);
      ctx.stroke(path);
      ctx.strokeStyle = o.colour;
      ctx.lineWidth = Math.max(1.5, 1.6 * g.dpr);
      ctx.stroke(path);
      const newest = m.cols[w.at(w.hi - 1)].stats;
      if (newest && lastY !== null) labels.push({ y: lastY, o });
    }
    // names at the right end, pushed apart so that close lines stay legible
    labels.sort((p, q) => p.y - q.y);
    const gapY = g.fs * 1.05;
    for (let i = 1; i < labels.length; i++) labels[i].y = Math.max(labels[i].y, labels[i - 1].y + gapY);
    const bottom = g.y + g.h - g.fs / 2;
    for (let i = labels.length - 1; i >= 0; i--) {
      labels[i].y = Math.min(labels[i].y, i === labels.length - 1 ? bottom : labels[i + 1].y - gapY);
      labels[i].y = Math.max(labels[i].y, g.y + g.fs / 2);
    }
    this.lineLabels = labels;
    ctx.restore();
  }

  drawYAxis() {
    const g = this.g, ctx = this.ctx;
    ctx.clearRect(0, 0, g.x, g.H);
    if (!this.range) return;
    const rows = this.model.rows;
    const V = this.range[1] - this.range[0] + 1;
    const every = Math.max(1, Math.ceil((g.fs * 1.3) / (g.h / V)));
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
      ctx.fillText(rowLabel(rows[this.range[0] + r], this.unit), g.x - Math.round(8 * g.dpr), yc);
    }
    ctx.restore();
  }

  /**
   * Time axis: wall-clock labels (server time of the walk) under columns whose absolute index
   * is a multiple of the label step, so the labels travel with the data; red marks under
   * the columns of ticks whose frame is missing (skipped live and not fetched back).
   */
  drawXAxis() {
    const g = this.g, m = this.model;
    if (!g || !m) return;
    const ctx = this.ctx;
    const top = g.y + g.h;
    ctx.clearRect(0, top, g.W, g.H - top);
    ctx.save();
    ctx.font = g.font;
    ctx.textBaseline = 'top';
    const N = this.capacity;
    const colW = g.w / N;
    const labelW = ctx.measureText('00:00:00').width * 1.6;
    const steps = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600];
    const secPerCol = this.tickMs / 1000;
    let step = N;
    for (const s of steps) { const cols = Math.max(1, Math.round(s / secPerCol)); if (cols * colW >= labelW) { step = cols; break; } }
    const w = this.win();
    const ly = top + Math.round(6 * g.dpr);
    ctx.textAlign = 'center';
    for (let abs = w.lo; abs < w.hi; abs++) {
      if (abs % step !== 0) continue;
      const i = w.at(abs);
      const x = (this.colX(w.slot(abs)) + this.colX(w.slot(abs) + 1)) / 2;
      if (x + labelW / 2 > g.x + g.w + g.W * 0.03 || x - labelW / 2 < g.x - labelW * 0.2) continue;
      ctx.fillStyle = '#3a4152';
      ctx.fillRect(Math.round(x), top, Math.max(1, Math.round(g.dpr)), Math.round(4 * g.dpr));
      ctx.fillStyle = '#a9b1c2';
      ctx.fillText(fmtClock(m.cols[i].meta.ts), x, ly);
    }
    ctx.textAlign = 'right';
    ctx.fillStyle = '#6f788b';
    ctx.fillText('time →', g.x - Math.round(8 * g.dpr), ly);
    ctx.fillStyle = '#ff5c5c';
    for (let abs = w.lo; abs < w.hi; abs++) {
      if (m.cols[w.at(abs)].meta.missing) ctx.fillRect(this.colX(w.slot(abs)), top, Math.max(2, Math.round(2 * g.dpr)), Math.round(5 * g.dpr));
    }
    ctx.restore();
  }

  syncEmpty() {
    const m = this.model;
    const hasData = m && m.seenMin !== null;
    this.empty.hidden = !!hasData;
    if (!hasData) this.empty.textContent = m ? `Waiting for data in ${m.name}…` : this.emptyText;
  }

  /** The cell under the mouse: {slot, col (index into model.cols), r (visible row), row}. */
  hitTest() {
    const g = this.g, m = this.model, h = this.hover;
    if (!g || !m || !h || !this.range) return null;
    const x = h.x * g.dpr, y = h.y * g.dpr;
    if (x < g.x || x >= g.x + g.w || y < g.y || y >= g.y + g.h) return null;
    const slot = Math.min(this.capacity - 1, Math.floor(((x - g.x) * this.capacity) / g.w));
    const w = this.win();
    const abs = w.hi - (this.capacity - slot);
    if (abs < w.lo) return null;
    const col = w.at(abs);
    const V = this.range[1] - this.range[0] + 1;
    const r = Math.min(V - 1, Math.floor(((g.y + g.h - y) * V) / g.h));
    return { slot, col, r, row: this.range[0] + r };
  }

  /** CSS-pixel centre of a cell, relative to the canvas (for tests and keyboard users). */
  cellCentre(col, row) {
    const g = this.g, m = this.model;
    if (!g || !m || !this.range) return null;
    const V = this.range[1] - this.range[0] + 1;
    const slot = this.win().slot(this.absIndex(col));
    const x = (this.colX(slot) + this.colX(slot + 1)) / 2 / g.dpr;
    const rv = row - this.range[0];
    const y = (this.rowY(rv, V) + this.rowY(rv + 1, V)) / 2 / g.dpr;
    return { x, y };
  }

  /**
   * The cell under a CSS point: {abs, c (index into model.cols), row}. With `clamp`, a point
   * beyond the plot gives the nearest cell of the picture (a drag may leave the plot).
   */
  cellAt(pt, clamp) {
    const g = this.g, m = this.model;
    if (!g || !m || !pt || !this.range || !m.cols.length) return null;
    const x = pt.x * g.dpr, y = pt.y * g.dpr;
    if (!clamp && (x < g.x || x >= g.x + g.w || y < g.y || y >= g.y + g.h)) return null;
    const w = this.win();
    if (!w.n) return null;
    const V = this.range[1] - this.range[0] + 1;
    let slot = Math.floor(((x - g.x) * this.capacity) / g.w);
    slot = Math.max(w.slot(w.lo), Math.min(this.capacity - 1, slot));
    const abs = w.hi - (this.capacity - slot);
    if (abs < w.lo) return null;
    const r = Math.max(0, Math.min(V - 1, Math.floor(((g.y + g.h - y) * V) / g.h)));
    return { abs, c: w.at(abs), row: this.range[0] + r };
  }

  /**
   * The pixel rectangle (device px) of a box, clipped to the picture, with its cells: absolute
   * columns a0..a1 and rows r0..r1 as held by the model (not clipped). Null when nothing shows.
   */
  boxRect(box) {
    const g = this.g, m = this.model;
    if (!g || !m || !this.range || !box) return null;
    const cells = cellsOf(m, box);
    if (!cells) return null;
    const w = this.win();
    const base = m.pushed - m.cols.length;
    const a0 = base + cells.c0, a1 = base + cells.c1;
    const ca0 = Math.max(a0, w.lo), ca1 = Math.min(a1, w.hi - 1);
    const V = this.range[1] - this.range[0] + 1;
    const rv0 = Math.max(0, cells.r0 - this.range[0]), rv1 = Math.min(V - 1, cells.r1 - this.range[0]);
    if (ca0 > ca1 || rv0 > rv1) return null;
    return {
      x0: this.colX(w.slot(ca0)), x1: this.colX(w.slot(ca1) + 1), y0: this.rowY(rv1 + 1, V), y1: this.rowY(rv0, V),
      a0, a1, r0: cells.r0, r1: cells.r1,
    };
  }

  /** Which part of the selection a CSS point is on: {l, r, t, b} edges, inside, or null. */
  boxPart(pt) {
    const rect = this.boxRect(this.box);
    if (!rect || !pt) return null;
    const d = this.g.dpr;
    const x = pt.x, y = pt.y, x0 = rect.x0 / d, x1 = rect.x1 / d, y0 = rect.y0 / d, y1 = rect.y1 / d;
    // Edges grab at most a quarter of a small box, so that its middle still moves it.
    const hx = Math.min(HANDLE_PX, (x1 - x0) / 4), hy = Math.min(HANDLE_PX, (y1 - y0) / 4);
    const inX = x >= x0 - hx && x <= x1 + hx, inY = y >= y0 - hy && y <= y1 + hy;
    if (!inX || !inY) return null;
    const edges = { l: Math.abs(x - x0) <= hx, r: Math.abs(x - x1) <= hx, t: Math.abs(y - y0) <= hy, b: Math.abs(y - y1) <= hy };
    if (edges.l && edges.r) edges[x - x0 < x1 - x ? 'r' : 'l'] = false; // a thin box: the nearer edge
    if (edges.t && edges.b) edges[y - y0 < y1 - y ? 'b' : 't'] = false;
    const any = edges.l || edges.r || edges.t || edges.b;
    const inside = x > x0 && x < x1 && y > y0 && y < y1;
    return any ? { rect, edges } : inside ? { rect, edges: null } : null;
  }

  cursorAt(pt) {
    const part = this.boxPart(pt);
    if (!part) return this.cellAt(pt, false) ? 'crosshair' : '';
    if (!part.edges) return 'move';
    const { l, r, t, b } = part.edges;
    if ((l && t) || (r && b)) return 'nwse-resize';
    if ((r && t) || (l && b)) return 'nesw-resize';
    return l || r ? 'ew-resize' : 'ns-resize';
  }

  cssPoint(ev) {
    const r = this.canvas.getBoundingClientRect();
    return { x: ev.clientX - r.left, y: ev.clientY - r.top };
  }

  /** A press on the plot: a new box, or the selection moved or resized, once the pointer travels. */
  pressBox(ev) {
    if (ev.button !== 0 || !this.model) return;
    const pt = this.cssPoint(ev);
    const start = this.cellAt(pt, false);
    if (!start) return;
    const part = this.boxPart(pt);
    this.drag = {
      x0: ev.clientX, y0: ev.clientY, start, moved: false,
      mode: !part ? 'new' : part.edges ? 'resize' : 'move', edges: part?.edges ?? null, rect: part?.rect ?? null,
    };
    try { this.canvas.setPointerCapture(ev.pointerId); } catch { /* synthetic events have no capture */ }
  }

  dragBox(ev) {
    const d = this.drag;
    if (!d) return;
    if (!d.moved && Math.hypot(ev.clientX - d.x0, ev.clientY - d.y0) < DRAG_PX) return;
    d.moved = true;
    this.tooltip.hidden = true;
    const cur = this.cellAt(this.cssPoint(ev), true);
    if (!cur) return;
    const m = this.model, w = this.win(), base = m.pushed - m.cols.length;
    let a0, a1, r0, r1;
    if (d.mode === 'new') {
      [a0, a1, r0, r1] = [d.start.abs, cur.abs, d.start.row, cur.row];
    } else {
      ({ a0, a1, r0, r1 } = d.rect);
      if (d.mode === 'move') {
        const da = Math.max(w.lo - a0, Math.min(w.hi - 1 - a1, cur.abs - d.start.abs));
        const dr = Math.max(this.range[0] - r0, Math.min(this.range[1] - r1, cur.row - d.start.row));
        a0 += da; a1 += da; r0 += dr; r1 += dr;
      } else {
        if (d.edges.l) a0 = cur.abs;
        if (d.edges.r) a1 = cur.abs;
        if (d.edges.b) r0 = cur.row;
        if (d.edges.t) r1 = cur.row;
      }
    }
    const clampA = (a) => Math.max(base, Math.min(m.pushed - 1, a));
    this.box = boxOf(m, clampA(a0) - base, clampA(a1) - base, r0, r1);
    this.paintLayer();
    this.onBox(this.box, false);
  }

  releaseBox(ev) {
    const d = this.drag;
    this.drag = null;
    if (!d || !d.moved) return;
    // The click that follows a drag is not a cell click (and is not always sent: clear anyway).
    this.suppressClick = true;
    setTimeout(() => { this.suppressClick = false; }, 0);
    this.canvas.style.cursor = this.cursorAt(this.cssPoint(ev));
    this.onBox(this.box, true);
  }

  setBox(box) { this.box = box || null; this.paintLayer(); }
  setBaseBox(box) { this.baseBox = box || null; this.paintLayer(); }

  /** The selection and the compare baseline on the layer: a tinted box with handles. */
  paintBoxes(ctx) {
    const g = this.g;
    const draw = (box, colour, dashed) => {
      const r = this.boxRect(box);
      if (!r) return;
      ctx.save();
      ctx.fillStyle = dashed ? 'rgba(255,212,59,0.08)' : 'rgba(94,231,255,0.12)';
      ctx.fillRect(r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0);
      ctx.strokeStyle = colour;
      ctx.lineWidth = Math.max(1, Math.round(g.dpr * 1.5));
      if (dashed) ctx.setLineDash([6 * g.dpr, 4 * g.dpr]);
      ctx.strokeRect(r.x0 + 0.5, r.y0 + 0.5, r.x1 - r.x0 - 1, r.y1 - r.y0 - 1);
      if (!dashed) {
        const s = Math.round(3 * g.dpr), mx = (r.x0 + r.x1) / 2, my = (r.y0 + r.y1) / 2;
        ctx.fillStyle = colour;
        for (const [x, y] of [[r.x0, r.y0], [r.x1, r.y0], [r.x0, r.y1], [r.x1, r.y1], [mx, r.y0], [mx, r.y1], [r.x0, my], [r.x1, my]]) ctx.fillRect(x - s, y - s, 2 * s, 2 * s);
      }
      ctx.restore();
    };
    if (this.baseBox) draw(this.baseBox, BASE_COLOUR, true);
    if (this.box) draw(this.box, BOX_COLOUR, false);
  }

  /** What a cell holds: count, share of its column, share at or below it, per-key parts. */
  cellInfo(hit) {
    const m = this.model;
    const col = m.cols[hit.col];
    const count = col.shown[hit.row] || 0;
    let n = 0, below = 0;
    for (let r = 0; r < col.shown.length; r++) { n += col.shown[r]; if (r < hit.row) below += col.shown[r]; }
    return {
      col: hit.col, row: hit.row, ts: col.meta.ts, seq: col.meta.seq,
      range: m.rows[hit.row], count, column: n,
      pct: n ? count / n : 0, below: n ? below / n : 0, atOrBelow: n ? (below + count) / n : 0,
      keys: m.breakdown(hit.col, hit.row),
    };
  }

  updateTooltip() {
    const tip = this.tooltip;
    const hit = this.hitTest();
    if (!hit) { tip.hidden = true; return; }
    const m = this.model;
    const info = this.cellInfo(hit);
    const newest = m.cols[this.win().at(this.win().hi - 1)].meta;
    const filteredNote = m.filtered ? ' (shown keys)' : '';
    if (m.cols[hit.col].meta.missing) {
      tip.replaceChildren(
        el('div', { class: 'tt-time' }, fmtClock(info.ts), el('span', { class: 'muted', text: ` · seq ${info.seq}` })),
        el('div', { class: 'tt-range', text: m.cols[hit.col].meta.why || 'no frame for this tick (skipped while this page was behind)' }));
      this.placeTooltip();
      return;
    }
    tip.replaceChildren(
      el('div', { class: 'tt-time' }, fmtClock(info.ts), el('span', { class: 'muted', text: ` · ${fmtAgo((newest.ts - info.ts) / 1000)}` })),
      el('div', { class: 'tt-range', text: rangeText(info.range, this.unit) }),
      el('div', { class: 'tt-count' }, el('b', { id: 'tt-count', text: fmtNum(info.count) }), el('span', { class: 'muted', text: info.count === 1 ? ' event' : ' events' })),
      el('div', { class: 'tt-pcts' },
        el('span', { text: `${fmtPct(info.pct)} of column${filteredNote}` }),
        el('span', { text: `${fmtPct(info.below)} below · ${fmtPct(info.atOrBelow)} at or below` })),
    );
    if (info.keys.length > 1 || (info.keys.length === 1 && info.keys[0].name !== '(no key)')) {
      const tbl = el('table', { class: 'tt-keys' });
      for (const k of info.keys.slice(0, 5)) tbl.append(el('tr', { class: k.shown ? null : 'off' }, el('td', { text: k.name }), el('td', { text: fmtNum(k.count) })));
      if (info.keys.length > 5) tbl.append(el('tr', {}, el('td', { class: 'muted', text: `+${info.keys.length - 5} more · click for all` }), el('td')));
      tip.append(tbl);
    }
    this.placeTooltip();
  }

  placeTooltip() {
    const tip = this.tooltip;
    tip.hidden = false;
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

  /** PNG of the canvas as shown (axes and overlays included). */
  toBlob() {
    const out = document.createElement('canvas');
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#0f1219'; // the panel colour, so the PNG is not transparent around the plot
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.canvas, 0, 0);
    ctx.drawImage(this.layer, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, 'image/png'));
  }
}

function sameRange(a, b) {
  return a === b || (!!a && !!b && a[0] === b[0] && a[1] === b[1]);
}
