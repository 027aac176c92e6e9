// TimelineView: the strip under the heatmap that says which time the heatmap shows and lets
// the user move it. Two lanes on one canvas:
//   overview  a stretch of wall-clock time around the shown range (six times its span, ending
//             now or at the range's end), what the watch has recorded shaded, the shown range
//             as a bright window; dragging anywhere on it moves the window (scroll back), and
//             the heatmap follows when the pointer is released
//   marks     the shown range only, aligned with the heatmap's columns (`plotX` maps a time to
//             the plot's x): each mark as a labelled span
// It draws what app.js gives it and reports drags; it holds no data of its own.

import { fmtClock } from './util.js';

const OVERVIEW_SPANS = 6;       // the overview covers this many shown spans
const MARK_COLOUR = '#ff6b9a';
const WINDOW_COLOUR = '#ffd43b';
const DRAG_THRESHOLD_PX = 3;    // a press that moves less is a click, not a drag

export class TimelineView {
  /** onPan(from, to) when a drag ends; plotX(ms) → CSS x over the heatmap plot, or null. */
  constructor({ canvas, onPan, plotX }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.onPan = onPan;
    this.plotX = plotX;
    this.state = { live: true, from: null, to: null, recorded: null, marks: [], now: Date.now() };
    this.drag = null; // {x0, from, to, moved}
    this.drawnMarks = []; // [{label, x0, x1}] in CSS px, for tests
    new ResizeObserver(() => this.draw()).observe(canvas);
    canvas.addEventListener('pointerdown', (ev) => {
      if (this.state.from === null) return;
      canvas.setPointerCapture(ev.pointerId);
      this.drag = { x0: ev.clientX, from: this.state.from, to: this.state.to, moved: false };
    });
    canvas.addEventListener('pointermove', (ev) => {
      if (!this.drag) return;
      const dx = ev.clientX - this.drag.x0;
      if (Math.abs(dx) >= DRAG_THRESHOLD_PX) this.drag.moved = true;
      if (!this.drag.moved) return;
      const [a, b] = this.extent(this.drag.from, this.drag.to);
      const ms = Math.round((dx / Math.max(1, canvas.clientWidth)) * (b - a));
      const span = this.drag.to - this.drag.from;
      const to = Math.min(Date.now(), this.drag.to + ms);
      this.preview = { from: to - span, to };
      this.draw();
    });
    const end = () => {
      const d = this.drag, p = this.preview;
      this.drag = null;
      this.preview = null;
      if (d && d.moved && p) this.onPan(p.from, p.to); else this.draw();
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
  }

  /** {live, from, to, recorded: [first, last] | null, marks: [{from, to, label}]}. */
  set(state) {
    this.state = { ...this.state, ...state, now: Date.now() };
    this.draw();
  }

  /** The overview's [start, end] for a shown range. */
  extent(from, to) {
    const span = Math.max(1, to - from);
    const end = Math.max(to, Date.now());
    return [end - span * OVERVIEW_SPANS, end];
  }

  draw() {
    const c = this.canvas, ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(c.clientWidth * dpr)), H = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const w = c.clientWidth, h = c.clientHeight;
    ctx.clearRect(0, 0, w, h);
    this.drawnMarks = [];
    const s = this.state;
    const shown = this.preview || (s.from !== null ? { from: s.from, to: s.to } : null);
    const laneH = Math.floor(h / 2);
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    // overview lane
    ctx.fillStyle = '#0b0e14';
    ctx.fillRect(0, 0, w, laneH);
    if (!shown) {
      ctx.fillStyle = '#6f788b';
      ctx.fillText(s.live ? 'live · pick a watch and a range to look back' : '', 8, laneH / 2);
      return;
    }
    const [a, b] = this.extent(shown.from, shown.to);
    const X = (ms) => ((ms - a) / (b - a)) * w;
    if (s.recorded) {
      ctx.fillStyle = '#1b2232';
      const x0 = Math.max(0, X(s.recorded[0])), x1 = Math.min(w, X(s.recorded[1]));
      if (x1 > x0) ctx.fillRect(x0, 2, x1 - x0, laneH - 4);
    }
    // hour / minute ticks with clock labels, about every 110 px
    const steps = [1e3, 5e3, 15e3, 6e4, 3e5, 9e5, 36e5, 3 * 36e5, 6 * 36e5, 12 * 36e5, 864e5, 7 * 864e5];
    const step = steps.find((st) => (st / (b - a)) * w >= 110) ?? steps[steps.length - 1];
    ctx.fillStyle = '#6f788b';
    ctx.textAlign = 'center';
    for (let t = Math.ceil(a / step) * step; t <= b; t += step) {
      const x = X(t);
      ctx.fillRect(Math.round(x), laneH - 5, 1, 5);
      ctx.fillText(step >= 864e5 ? new Date(t).toLocaleDateString('en-GB') : fmtClock(t), x, laneH / 2 - 2);
    }
    for (const m of s.marks) {
      ctx.fillStyle = MARK_COLOUR;
      const x0 = X(m.from), x1 = Math.max(X(m.to), x0 + 2);
      ctx.fillRect(x0, laneH - 4, x1 - x0, 3);
    }
    const wx0 = X(shown.from), wx1 = Math.max(wx0 + 3, X(shown.to));
    ctx.fillStyle = 'rgba(255,212,59,0.16)';
    ctx.fillRect(wx0, 1, wx1 - wx0, laneH - 2);
    ctx.strokeStyle = WINDOW_COLOUR;
    ctx.lineWidth = 1.5;
    ctx.strokeRect(wx0 + 0.75, 1.75, wx1 - wx0 - 1.5, laneH - 3.5);
    // marks lane: the shown range, aligned with the heatmap's columns
    ctx.fillStyle = '#0b0e14';
    ctx.fillRect(0, laneH, w, h - laneH);
    ctx.textAlign = 'left';
    for (const m of s.marks) {
      const px0 = this.plotX(Math.max(m.from, shown.from)), px1 = this.plotX(Math.min(m.to, shown.to));
      if (px0 === null || px1 === null || !(m.to > shown.from && m.from < shown.to)) continue;
      const x0 = Math.min(px0, px1), x1 = Math.max(px1, x0 + 3);
      ctx.fillStyle = 'rgba(255,107,154,0.35)';
      ctx.fillRect(x0, laneH + 2, x1 - x0, h - laneH - 4);
      ctx.fillStyle = MARK_COLOUR;
      ctx.fillRect(x0, laneH + 2, 2, h - laneH - 4);
      ctx.fillRect(x1 - 2, laneH + 2, 2, h - laneH - 4);
      const label = String(m.label ?? 'mark');
      ctx.fillStyle = '#ffe0ea';
      ctx.fillText(label, x0 + 5, laneH + (h - laneH) / 2);
      this.drawnMarks.push({ label, x0, x1 });
    }
  }
}
