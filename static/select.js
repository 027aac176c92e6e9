// Box selections over a heatmap's model, and what they are asked: which keys are
// over-represented inside a box against the rest of the picture, and what changed between a
// baseline box and a target box. Pure functions over the model's interface (cols[].raw with
// cols[].meta.ts, keys[], rows, space.index), so they run under node and work on any model
// shaped like HistModel (live, a recorded range, an imported file, a fleet view).
//
// A box is {from, to, lo, hi}: the timestamps (ms) of its first and last columns, and the lower
// bound of its lowest row and the upper bound of its highest row (null = an open end). Times and
// values, not indices, because columns scroll and rows grow (a log2 row space gains rows
// below), and because a permalink must reopen the same box on another page.

import { entries } from './model.js';

/**
 * Added to every key's count on both sides before shares are taken (Jeffreys' ½): a key never
 * seen outside the box gets a finite lift instead of ∞, and a key seen a handful of times gets
 * no lift it has not earned.
 */
export const SMOOTHING = 0.5;

const lower = (v) => (v == null ? -Infinity : v);
const upper = (v) => (v == null ? Infinity : v);

/** The box of model.cols[c0..c1] × rows[r0..r1] (any order). */
export function boxOf(model, c0, c1, r0, r1) {
  const [a, b] = c0 <= c1 ? [c0, c1] : [c1, c0];
  const [p, q] = r0 <= r1 ? [r0, r1] : [r1, r0];
  const rows = model.rows;
  return { from: model.cols[a].meta.ts, to: model.cols[b].meta.ts, lo: rows[p][0] ?? null, hi: rows[q][1] ?? null };
}

/**
 * The box's cells in the model: {c0, c1} indices into model.cols and {r0, r1} row indices, or
 * null when none of its columns or rows is held. A row is in the box when its bounds lie inside
 * the box's values; a column when its timestamp lies inside the box's times.
 */
export function cellsOf(model, box) {
  if (!box || !model || !model.cols.length || !model.rows.length) return null;
  const cols = model.cols;
  let c0 = -1, c1 = -1;
  for (let i = 0; i < cols.length; i++) {
    const ts = cols[i].meta.ts;
    if (ts >= box.from && ts <= box.to) { if (c0 < 0) c0 = i; c1 = i; }
  }
  let r0 = -1, r1 = -1;
  const rows = model.rows;
  for (let r = 0; r < rows.length; r++) {
    if (lower(rows[r][0]) >= lower(box.lo) && upper(rows[r][1]) <= upper(box.hi)) { if (r0 < 0) r0 = r; r1 = r; }
  }
  if (c0 < 0 || r0 < 0) return null;
  return { c0, c1, r0, r1 };
}

/**
 * Every key's events inside the box and in the rest of the visible window `vis` ({c0, c1}
 * column indices, {r0, r1} rows: what the picture shows), whatever the key filter: the ranking
 * must still show the other keys once one is isolated. Ranked by score = shareIn · ln(lift),
 * the key's term of the Kullback–Leibler divergence of inside from outside: a key ranks high
 * when it is both common inside and rarer outside, so a key seen twice inside and never outside
 * does not beat the one that fills the box. Shares and lift use SMOOTHING.
 */
export function overRepresentation(model, box, vis) {
  const cells = cellsOf(model, box);
  const byId = new Map();
  let inN = 0, outN = 0;
  const space = model.space;
  if (cells) {
    for (let c = vis.c0; c <= vis.c1; c++) {
      const col = model.cols[c];
      if (!col) continue;
      const inCol = c >= cells.c0 && c <= cells.c1;
      for (const [id, lo, , n] of entries(col.raw)) {
        const r = space.index(lo);
        if (r < vis.r0 || r > vis.r1) continue;
        let k = byId.get(id);
        if (!k) byId.set(id, (k = { inside: 0, outside: 0 }));
        if (inCol && r >= cells.r0 && r <= cells.r1) { k.inside += n; inN += n; } else { k.outside += n; outN += n; }
      }
    }
  }
  const K = byId.size;
  const keys = [...byId].map(([id, k]) => {
    const shareIn = inN ? k.inside / inN : 0;
    const shareOut = outN ? k.outside / outN : 0;
    const sIn = (k.inside + SMOOTHING) / (inN + SMOOTHING * K);
    const sOut = (k.outside + SMOOTHING) / (outN + SMOOTHING * K);
    const lift = sIn / sOut;
    return { id, name: model.keys[id].name, inside: k.inside, outside: k.outside, shareIn, shareOut, lift, score: sIn * Math.log(lift) };
  }).filter((k) => k.inside > 0)
    .sort((a, b) => b.score - a.score || b.inside - a.inside || a.name.localeCompare(b.name));
  return { cells, inside: inN, outside: outN, keys };
}

/**
 * Baseline box against target box: per key and per row (bucket), events per second in each
 * (a box's seconds are its columns × the column width `colMs`, so boxes of different lengths
 * compare), and the change, largest |change| first. Keys in either box appear.
 */
export function compareBoxes(model, base, target, colMs) {
  const side = (box) => {
    const cells = cellsOf(model, box);
    const keys = new Map(), rows = new Map();
    let n = 0;
    if (cells) {
      for (let c = cells.c0; c <= cells.c1; c++) {
        for (const [id, lo, , cnt] of entries(model.cols[c].raw)) {
          const r = model.space.index(lo);
          if (r < cells.r0 || r > cells.r1) continue;
          keys.set(id, (keys.get(id) || 0) + cnt);
          rows.set(r, (rows.get(r) || 0) + cnt);
          n += cnt;
        }
      }
    }
    const secs = cells ? ((cells.c1 - cells.c0 + 1) * colMs) / 1000 : 0;
    return { cells, keys, rows, n, secs };
  };
  const b = side(base), t = side(target);
  const rate = (s, v) => (s.secs > 0 ? v / s.secs : 0);
  const diff = (map, name) => [...new Set([...b[map].keys(), ...t[map].keys()])].map((k) => {
    const bc = b[map].get(k) || 0, tc = t[map].get(k) || 0;
    const br = rate(b, bc), tr = rate(t, tc);
    return { ...name(k), base: bc, target: tc, baseRate: br, targetRate: tr, change: tr - br };
  }).sort((x, y) => Math.abs(y.change) - Math.abs(x.change) || y.target - x.target);
  return {
    base: { cells: b.cells, events: b.n, seconds: b.secs },
    target: { cells: t.cells, events: t.n, seconds: t.secs },
    keys: diff('keys', (id) => ({ id, name: model.keys[id].name })),
    rows: diff('rows', (r) => ({ row: r, range: model.rows[r] })),
  };
}

/** A box as a permalink value: "from,to,lo,hi" (an open end is empty). */
export function boxParam(box) {
  return [box.from, box.to, box.lo ?? '', box.hi ?? ''].join(',');
}

/** A permalink value back into a box, or null when it is not one. */
export function parseBoxParam(s) {
  const p = String(s ?? '').split(',');
  if (p.length !== 4) return null;
  const num = (v) => (v === '' ? null : Number(v));
  const [from, to, lo, hi] = p.map(num);
  if (!Number.isFinite(from) || !Number.isFinite(to) || from > to) return null;
  if ((lo !== null && !Number.isFinite(lo)) || (hi !== null && !Number.isFinite(hi))) return null;
  if (lo !== null && hi !== null && lo > hi) return null;
  return { from, to, lo, hi };
}
