// Flame graphs drawn in the page: Brendan Gregg's folded stacks (`root;child;leaf count`) parsed,
// merged, diffed and drawn as SVG (root at the bottom, width ∝ samples), with zoom on click,
// a search that highlights matching frames, a differential mode (red grew, blue shrank against a
// baseline) and export as folded text, SVG or PNG.
//
// The pure parts (parseFolded, toFolded, mergeFolded, diffFolded, buildTree, searchTree) need no
// DOM, so they are unit-tested under node; FlameGraph is the only part that touches the page.
// The SVG carries its own colours and fonts as attributes (no page stylesheet), so toSVG() and
// toPNG() give the same picture outside the page.

const FRAME_H = 17;           // px per stack level
const MIN_FRAME_PX = 0.5;     // narrower frames are not drawn (they would be invisible anyway)
const TEXT_MIN_PX = 22;       // a frame gets its name only when at least this wide
const CHAR_PX = 6.6;          // approximate width of one character at FONT_PX, to truncate names
const FONT_PX = 11;
const FONT = 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace';
const DEFAULT_WIDTH = 1000;   // px when the container has no layout yet (hidden, or no DOM)
const MATCH_FILL = 'rgb(230,0,230)';
const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Folded text → Map(stack → count). One stack per line, frames joined by ';' root first, the
 * count after the last space. Repeated stacks add up; blank lines, '#' comments and lines
 * without a count are skipped (perf and bpftrace tools add headers).
 */
export function parseFolded(text) {
  const out = new Map();
  for (const line of String(text ?? '').split(/\r?\n/)) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const sp = t.search(/\s+\S+$/);
    if (sp <= 0) continue;
    const count = Number(t.slice(sp).trim());
    if (!Number.isFinite(count) || count < 0) continue;
    const stack = normStack(t.slice(0, sp));
    if (!stack) continue;
    out.set(stack, (out.get(stack) || 0) + count);
  }
  return out;
}

/** Map(stack → count) → folded text, stacks sorted, one per line; parseFolded reads it back. */
export function toFolded(map) {
  const keys = [...map.keys()].filter((k) => map.get(k) > 0).sort();
  return keys.map((k) => `${normStack(k)} ${map.get(k)}\n`).join('');
}

/** The sum of several folded maps (e.g. the stacks of consecutive ticks). */
export function mergeFolded(...maps) {
  const out = new Map();
  for (const m of maps) {
    if (!m) continue;
    for (const [k, v] of m) { const s = normStack(k); if (s && v > 0) out.set(s, (out.get(s) || 0) + v); }
  }
  return out;
}

/**
 * Per stack: baseline and target counts, and the change of its share of all samples
 * (target/targetTotal − baseline/baselineTotal). Shares, not raw counts, because the two ranges
 * usually differ in length or rate; a stack present on one side only has 0 on the other.
 */
export function diffFolded(baseline, target) {
  const tb = sum(baseline), tt = sum(target);
  const out = new Map();
  for (const k of new Set([...baseline.keys(), ...target.keys()])) {
    const b = baseline.get(k) || 0, t = target.get(k) || 0;
    out.set(k, { baseline: b, target: t, delta: (tt ? t / tt : 0) - (tb ? b / tb : 0) });
  }
  return out;
}

function sum(m) { let s = 0; for (const v of m.values()) s += v; return s; }

function normStack(s) {
  return String(s).split(';').map((f) => f.trim()).filter((f) => f.length).join(';');
}

/**
 * The call tree of folded stacks: nodes {id, name, path, depth, value (inclusive samples),
 * self, base (inclusive baseline samples, when a baseline is given), children (Map name →
 * node), parent}. `nodes` lists them by id (root is 0); `byPath` finds one by its stack text.
 * Baseline-only stacks add to `base` of the nodes they share with the target but create no
 * node of their own: widths are the target's, as in Gregg's differential flame graphs.
 */
export function buildTree(folded, baseline) {
  const root = { id: 0, name: 'all', path: '', depth: 0, value: 0, self: 0, base: 0, children: new Map(), parent: null };
  const nodes = [root];
  const byPath = new Map([['', root]]);
  const walk = (stack, count, create, field) => {
    let n = root;
    n[field] += count;
    let path = '';
    for (const f of stack.split(';')) {
      path = path ? `${path};${f}` : f;
      let c = n.children.get(f);
      if (!c) {
        if (!create) return;
        c = { id: nodes.length, name: f, path, depth: n.depth + 1, value: 0, self: 0, base: 0, children: new Map(), parent: n };
        n.children.set(f, c);
        nodes.push(c);
        byPath.set(path, c);
      }
      c[field] += count;
      n = c;
    }
    if (field === 'value') n.self += count;
  };
  for (const [k, v] of folded) { const s = normStack(k); if (s && v > 0) walk(s, v, true, 'value'); }
  if (baseline) for (const [k, v] of baseline) { const s = normStack(k); if (s && v > 0) walk(s, v, false, 'base'); }
  let baseTotal = 0;
  if (baseline) for (const v of baseline.values()) if (v > 0) baseTotal += v;
  return { root, nodes, byPath, baseTotal, diff: !!baseline };
}

/**
 * Nodes whose name matches `query` (a substring, or a RegExp), and the samples they cover:
 * a match inside a matched frame is not counted twice (as flamegraph.pl's "Matched:").
 */
export function searchTree(tree, query) {
  const test = matcher(query);
  const hits = new Set();
  let matched = 0;
  if (!test) return { hits, matched, total: tree.root.value };
  const visit = (n, under) => {
    const hit = n !== tree.root && test(n.name);
    if (hit) { hits.add(n.id); if (!under) matched += n.value; }
    for (const c of n.children.values()) visit(c, under || hit);
  };
  visit(tree.root, false);
  return { hits, matched, total: tree.root.value };
}

function matcher(q) {
  if (q instanceof RegExp) { const re = new RegExp(q.source, q.flags.replace('g', '')); return (s) => re.test(s); }
  const s = String(q ?? '');
  if (!s) return null;
  return (name) => name.includes(s);
}

/** Warm hue from the frame name, stable across redraws (the flamegraph.pl look). */
function warmFill(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const v1 = (h & 0xff) / 255, v2 = ((h >>> 8) & 0xff) / 255, v3 = ((h >>> 16) & 0xff) / 255;
  if (name.endsWith('_[k]')) return `rgb(${Math.round(200 + 55 * v3)},${Math.round(120 + 60 * v1)},${Math.round(40 * v2)})`;
  return `rgb(${Math.round(205 + 50 * v3)},${Math.round(230 * v1)},${Math.round(55 * v2)})`;
}

/** Red when a frame's share grew against the baseline, blue when it shrank, white unchanged. */
function diffFill(n, tree, maxAbs) {
  const tt = tree.root.value, tb = tree.baseTotal;
  const d = (tt ? n.value / tt : 0) - (tb ? n.base / tb : 0);
  const k = maxAbs > 0 ? Math.min(1, Math.abs(d) / maxAbs) : 0;
  const fade = Math.round(255 - 200 * k);
  return d > 0 ? `rgb(255,${fade},${fade})` : d < 0 ? `rgb(${fade},${fade},255)` : 'rgb(250,250,250)';
}

const fmt = (v) => (Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(2));
const pct = (a, b) => (b ? `${((a / b) * 100).toFixed(a / b < 0.1 ? 2 : 1)}%` : '–');
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

/** A flame graph in `container`: toolbar (search, reset, exports) and the SVG picture. */
export class FlameGraph {
  constructor(container) {
    this.container = container;
    this.tree = buildTree(new Map());
    this.folded = new Map();
    this.baseline = undefined;
    this.title = '';
    this.zoomed = this.tree.root;
    this.query = '';
    this.hits = new Set();
    container.classList.add('flame');
    const doc = container.ownerDocument;
    const mk = (tag, attrs = {}, text) => {
      const e = doc.createElement(tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text) e.textContent = text;
      return e;
    };
    this.bar = mk('div', { class: 'flame-bar' });
    this.searchInput = mk('input', { type: 'search', class: 'flame-search', placeholder: 'search frames (text or /regex/)', 'aria-label': 'search frames' });
    this.resetBtn = mk('button', { type: 'button', class: 'ghost small flame-reset', title: 'Show the whole graph again' }, 'Reset zoom');
    this.foldedBtn = mk('button', { type: 'button', class: 'ghost small flame-folded', title: "Download the stacks in Brendan Gregg's folded format" }, 'Folded');
    this.svgBtn = mk('button', { type: 'button', class: 'ghost small flame-svg', title: 'Download the flame graph as SVG' }, 'SVG');
    this.pngBtn = mk('button', { type: 'button', class: 'ghost small flame-png', title: 'Download the flame graph as PNG' }, 'PNG');
    this.info = mk('span', { class: 'flame-info muted' });
    this.bar.append(this.searchInput, this.resetBtn, this.foldedBtn, this.svgBtn, this.pngBtn, this.info);
    this.detail = mk('div', { class: 'flame-detail muted' });
    this.box = mk('div', { class: 'flame-box' });
    container.replaceChildren(this.bar, this.box, this.detail);

    this.searchInput.addEventListener('input', () => this.search(parseQuery(this.searchInput.value)));
    this.resetBtn.addEventListener('click', () => this.reset());
    this.foldedBtn.addEventListener('click', () => download(doc, new Blob([toFolded(this.folded)], { type: 'text/plain' }), 'stacks.folded'));
    this.svgBtn.addEventListener('click', () => download(doc, new Blob([this.toSVG()], { type: 'image/svg+xml' }), 'flamegraph.svg'));
    this.pngBtn.addEventListener('click', async () => download(doc, await this.toPNG(), 'flamegraph.png'));
    this.box.addEventListener('click', (ev) => {
      const g = ev.target.closest && ev.target.closest('g[data-id]');
      if (g) this.zoom(Number(g.getAttribute('data-id')));
    });
    this.box.addEventListener('mouseover', (ev) => {
      const g = ev.target.closest && ev.target.closest('g[data-id]');
      if (g) this.detail.textContent = this.describe(this.tree.nodes[Number(g.getAttribute('data-id'))]);
    });
    if (typeof ResizeObserver !== 'undefined') {
      let lastW = 0;
      new ResizeObserver(() => { const w = this.width(); if (w !== lastW) { lastW = w; this.render(); } }).observe(this.box);
    }
    this.render();
  }

  /** New stacks (a Map from parseFolded, or folded text); keeps the zoom and search when they still apply. */
  setStacks(folded, opts = {}) {
    this.folded = folded instanceof Map ? mergeFolded(folded) : parseFolded(folded);
    this.baseline = opts.baseline instanceof Map ? mergeFolded(opts.baseline) : undefined;
    this.title = opts.title || '';
    const zoomPath = this.zoomed ? this.zoomed.path : '';
    this.tree = buildTree(this.folded, this.baseline);
    this.zoomed = this.tree.byPath.get(zoomPath) || this.tree.root;
    this.hits = searchTree(this.tree, this.query).hits;
    this.render();
  }

  /** Highlights frames whose name contains the string (or matches the RegExp); '' clears. */
  search(q) {
    this.query = q instanceof RegExp ? q : String(q ?? '');
    const r = searchTree(this.tree, this.query);
    this.hits = r.hits;
    this.lastSearch = { matched: r.matched, total: r.total };
    this.render();
    return this.lastSearch;
  }

  /** Zooms to a frame: a node id (as in data-id) or its stack text ('a;b;c'). */
  zoom(frameIdOrPath) {
    const n = typeof frameIdOrPath === 'number' ? this.tree.nodes[frameIdOrPath] : this.tree.byPath.get(normStack(frameIdOrPath ?? ''));
    if (!n) return false;
    this.zoomed = n;
    this.render();
    return true;
  }

  reset() { this.zoomed = this.tree.root; this.render(); }

  width() {
    const w = this.box.clientWidth;
    return w > 0 ? w : DEFAULT_WIDTH;
  }

  describe(n) {
    if (!n) return '';
    const total = this.tree.root.value;
    let s = `${n.name} — ${fmt(n.value)} samples (${pct(n.value, total)})`;
    if (n.self) s += `, ${fmt(n.self)} in the frame itself`;
    if (this.tree.diff) s += ` · baseline ${fmt(n.base)} (${pct(n.base, this.tree.baseTotal)})`;
    return s;
  }

  /** The SVG text of the current view (zoom and highlights included), standalone. */
  toSVG() { return this.svgText(this.width()); }

  svgText(W) {
    const t = this.tree;
    const z = this.zoomed || t.root;
    const depth = maxDepth(z);
    const top = 24;
    const H = top + (depth + z.depth + 1) * FRAME_H + 6;
    let maxAbs = 0;
    if (t.diff) {
      for (const n of t.nodes) {
        const d = Math.abs((t.root.value ? n.value / t.root.value : 0) - (t.baseTotal ? n.base / t.baseTotal : 0));
        if (d > maxAbs) maxAbs = d;
      }
    }
    const parts = [];
    const y = (d) => H - 6 - (d + 1) * FRAME_H;
    const frame = (n, x, w, faded) => {
      const hit = this.hits.has(n.id);
      const fill = hit ? MATCH_FILL : t.diff ? diffFill(n, t, maxAbs) : n === t.root ? 'rgb(200,200,210)' : warmFill(n.name);
      const label = w >= TEXT_MIN_PX ? truncate(n.name, Math.floor((w - 6) / CHAR_PX)) : '';
      parts.push(`<g data-id="${n.id}" class="frame${hit ? ' match' : ''}" data-name="${esc(n.name)}"${faded ? ' opacity="0.6"' : ''}>` +
        `<title>${esc(this.describe(n))}</title>` +
        `<rect x="${x.toFixed(2)}" y="${y(n.depth)}" width="${Math.max(0, w - 0.5).toFixed(2)}" height="${FRAME_H - 1}" rx="2" fill="${fill}"/>` +
        (label ? `<text x="${(x + 3).toFixed(2)}" y="${y(n.depth) + FRAME_H - 5}" font-size="${FONT_PX}" font-family='${FONT}' fill="#000">${esc(label)}</text>` : '') +
        '</g>');
    };
    // Ancestors of the zoomed frame span the whole width, faded: a click on one zooms out.
    for (let a = z.parent; a; a = a.parent) frame(a, 0, W, true);
    const draw = (n, x, w) => {
      frame(n, x, w, false);
      if (!n.value) return;
      let cx = x;
      for (const c of [...n.children.values()].sort((p, q) => (p.name < q.name ? -1 : p.name > q.name ? 1 : 0))) {
        const cw = (c.value / n.value) * w;
        if (cw >= MIN_FRAME_PX) draw(c, cx, cw);
        cx += cw;
      }
    };
    if (t.root.value > 0) draw(z, 0, W);
    const head = this.title ? `${this.title} · ` : '';
    const mode = t.diff ? ' · differential: red grew, blue shrank (share of samples against the baseline); widths are the target' : '';
    const found = this.lastSearch && this.query ? ` · matched ${pct(this.lastSearch.matched, this.lastSearch.total)}` : '';
    const caption = t.root.value > 0 ? `${head}${fmt(t.root.value)} samples${mode}${found}` : `${head}no stacks`;
    return `<svg xmlns="${SVG_NS}" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" class="flame-svg">` +
      `<rect width="100%" height="100%" fill="#0f1219"/>` +
      `<text x="4" y="16" font-size="12" font-family='${FONT}' fill="#c5ccd9">${esc(caption)}</text>` +
      parts.join('') + '</svg>';
  }

  render() {
    this.box.innerHTML = this.svgText(this.width());
    this.resetBtn.disabled = this.zoomed === this.tree.root;
    const total = this.tree.root.value;
    this.info.textContent = this.query && this.lastSearch ? `matched ${fmt(this.lastSearch.matched)} of ${fmt(total)} (${pct(this.lastSearch.matched, total)})` : '';
  }

  /** PNG of the current view (the SVG drawn onto a canvas at the device pixel ratio). */
  toPNG() {
    const W = this.width();
    const text = this.svgText(W);
    const H = Number(/height="(\d+)"/.exec(text)[1]);
    const dpr = (typeof devicePixelRatio === 'number' && devicePixelRatio) || 1;
    return new Promise((resolve, reject) => {
      const img = new Image();
      const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
      img.onload = () => {
        const c = this.container.ownerDocument.createElement('canvas');
        c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
        const ctx = c.getContext('2d');
        ctx.scale(dpr, dpr);
        ctx.drawImage(img, 0, 0);
        URL.revokeObjectURL(url);
        c.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png');
      };
      img.onerror = () => { URL.revokeObjectURL(url); reject(new Error('SVG could not be drawn')); };
      img.src = url;
    });
  }
}

function maxDepth(n) {
  let d = 0;
  const walk = (x, k) => { if (k > d) d = k; for (const c of x.children.values()) walk(c, k + 1); };
  walk(n, 0);
  return d;
}

function truncate(s, n) {
  if (n <= 1) return '';
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

/** "/re/flags" in the search box is a RegExp; anything else a substring. */
function parseQuery(s) {
  const m = /^\/(.+)\/([a-z]*)$/.exec(s);
  if (m) { try { return new RegExp(m[1], m[2]); } catch { /* not a valid regex: search it as text */ } }
  return s;
}

function download(doc, blob, name) {
  const a = doc.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  doc.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}
