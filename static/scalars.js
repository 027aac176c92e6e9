// Scalar aggregations (count, sum, avg, min, max, stats): one card each, with the latest value,
// a small line chart of its history (built from frames: the server sends one value per tick),
// and the top keys when the map is keyed.

import { el, fmtNum, keyText } from './util.js';

export const SCALAR_KINDS = new Set(['count', 'sum', 'avg', 'min', 'max', 'stats', 'stddev']);
const ADDITIVE = new Set(['count', 'sum']);
const SPARK_POINTS = 120;
const KEY_LIMIT = 8;
const SVG = 'http://www.w3.org/2000/svg';

export class ScalarsView {
  constructor(root) {
    this.root = root;
    this.aggs = new Map(); // name → {name, kind, series (latest), history: [number|null], seqs: [seq of each history entry]}
    this.intervalMs = null;
  }

  /** Placeholders from `started.aggregations`, before the first frame arrives. */
  reset(aggs) {
    this.aggs = new Map();
    for (const a of aggs) if (a && SCALAR_KINDS.has(a.kind)) this.aggs.set(a.name, { name: a.name, kind: a.kind, series: [], history: [], seqs: [] });
    this.render();
  }

  /** One frame's scalar aggregations (a missing one counts as nothing this tick). */
  push(frameAggs, intervalMs, seq = null) {
    this.intervalMs = intervalMs;
    const seen = new Set();
    for (const a of frameAggs) {
      if (!a || !SCALAR_KINDS.has(a.kind)) continue;
      let s = this.aggs.get(a.name);
      if (!s) { s = { name: a.name, kind: a.kind, series: [], history: [], seqs: [] }; this.aggs.set(a.name, s); }
      s.series = Array.isArray(a.series) ? a.series : [];
      s.history.push(summary(s.kind, s.series));
      s.seqs.push(seq);
      seen.add(a.name);
    }
    for (const s of this.aggs.values()) {
      if (seen.has(s.name)) continue;
      s.series = [];
      s.history.push(ADDITIVE.has(s.kind) ? 0 : null);
      s.seqs.push(seq);
    }
    this.trim();
  }

  /** A tick whose frame is missing (a gap in `seq`): a break in every line, until `fill`. */
  pushMissing(seq) {
    for (const s of this.aggs.values()) { s.history.push(null); s.seqs.push(seq); }
    this.trim();
  }

  /** A missing tick's frame, fetched later: its values go where the break was. */
  fill(frameAggs, seq) {
    const by = new Map(frameAggs.filter((a) => a && SCALAR_KINDS.has(a.kind)).map((a) => [a.name, a]));
    for (const s of this.aggs.values()) {
      const i = s.seqs.lastIndexOf(seq);
      if (i < 0) continue;
      const a = by.get(s.name);
      s.history[i] = a ? summary(s.kind, Array.isArray(a.series) ? a.series : []) : (ADDITIVE.has(s.kind) ? 0 : null);
    }
  }

  trim() {
    for (const s of this.aggs.values()) {
      if (s.history.length <= SPARK_POINTS) continue;
      s.history.splice(0, s.history.length - SPARK_POINTS);
      s.seqs.splice(0, s.seqs.length - SPARK_POINTS);
    }
  }

  render() {
    if (!this.aggs.size) {
      this.root.replaceChildren(el('p', { class: 'muted empty-note', text: 'No scalar aggregations.' }));
      return;
    }
    this.root.replaceChildren(...[...this.aggs.values()].map((a) => this.card(a)));
  }

  card(agg) {
    const { series, kind } = agg;
    const card = el('div', { class: 'sc-card', 'data-name': agg.name });
    const keyed = series.length > 1 || (series.length === 1 && series[0].key && series[0].key.length > 0);
    const label = ADDITIVE.has(kind) ? (keyed ? 'total' : kind) : keyed ? 'max over keys' : kind === 'stats' ? 'avg' : kind;
    card.append(el('div', { class: 'sc-head' }, el('span', { class: 'sc-name', text: agg.name }), el('span', { class: 'sc-kind', text: kind })));
    const last = agg.history.length ? agg.history[agg.history.length - 1] : null;
    const perSec = ADDITIVE.has(kind) && this.intervalMs > 0 && last != null;
    const big = el('div', { class: 'sc-big' },
      el('span', { class: 'sc-value', text: last == null ? '–' : fmtNum(last) }),
      el('span', { class: 'muted sc-rate', text: perSec ? `${fmtNum((last * 1000) / this.intervalMs)}/s` : label }));
    card.append(el('div', { class: 'sc-row' }, big, sparkline(agg.history)));
    if (kind === 'stats' && series.length === 1 && !keyed) {
      card.append(el('div', { class: 'muted sc-sub', text: `count ${fmtNum(series[0].count)} · total ${fmtNum(series[0].total)}` }));
    }
    if (keyed) {
      const sorted = [...series].sort((x, y) => (y.value ?? 0) - (x.value ?? 0));
      const body = el('tbody');
      for (const s of sorted.slice(0, KEY_LIMIT)) body.append(el('tr', {}, el('td', { class: 'sc-key', text: keyText(s.key) }), el('td', { class: 'num', text: fmtNum(s.value) })));
      if (sorted.length > KEY_LIMIT) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 2, text: `+${sorted.length - KEY_LIMIT} more keys` })));
      card.append(el('table', { class: 'sc-table' }, body));
    }
    return card;
  }
}

function summary(kind, series) {
  const vals = series.map((s) => s.value).filter((v) => typeof v === 'number' && Number.isFinite(v));
  if (ADDITIVE.has(kind)) return vals.reduce((a, b) => a + b, 0);
  if (!vals.length) return null;
  return Math.max(...vals);
}

/** A small SVG line chart; gaps (null) break the line. */
function sparkline(values) {
  const W = 120, H = 34;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('preserveAspectRatio', 'none');
  const nums = values.filter((v) => v != null);
  if (nums.length < 2) return svg;
  let lo = Math.min(...nums), hi = Math.max(...nums);
  if (hi === lo) { hi += 1; lo = Math.max(0, lo - 1); }
  const x = (i) => (i * W) / (SPARK_POINTS - 1) + W - ((values.length - 1) * W) / (SPARK_POINTS - 1);
  const y = (v) => H - 2 - ((v - lo) * (H - 4)) / (hi - lo);
  let d = '', pen = false;
  values.forEach((v, i) => {
    if (v == null) { pen = false; return; }
    d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    pen = true;
  });
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  svg.append(path);
  return svg;
}
