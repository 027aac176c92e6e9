// The selection panel under the heatmap: the box the user drew (see heatmap.js and select.js),
// "what is different there" (keys ranked by over-representation inside the box against the rest
// of the picture; a click isolates one), Compare (a baseline box, then a target box: per-key and
// per-bucket change, and a differential flame graph of the stacks Explain captured over each
// box's time and band, or says which side has none), and the
// Explain seam: live, it asks the explain companion (window.heat.explain.start, provided by the
// Explain module when the server has it); on a recorded range it says that stacks are live only
// and offers to run the same band now on the watch's live program.
//
// Everything here is derived from the model and the stacks the page already holds: no new
// tracing.

import { overRepresentation, compareBoxes, cellsOf, boxParam, parseBoxParam } from './select.js';
import { FlameGraph } from './flame.js';
import { rangeText, rowLabel } from './units.js';
import { el, fmtNum, fmtPct, fmtClock } from './util.js';

const LIST_LIMIT = 20;          // keys shown in the ranking and in each compare table
const EXPLAIN_JOIN_WAIT_MS = 30000; // how long "run now" waits for the watch's program to run
const EXPLAIN_POLL_MS = 200;

const fmtLift = (v) => (!Number.isFinite(v) ? '–' : v >= 100 ? `${Math.round(v)}×` : `${v.toFixed(v < 10 ? 2 : 1)}×`);
const fmtRate = (v) => `${fmtNum(Math.abs(v) < 10 ? Math.round(v * 100) / 100 : Math.round(v))}/s`;
const signed = (v) => (v > 0 ? `+${fmtRate(v)}` : v < 0 ? `−${fmtRate(-v)}` : '±0/s');

export class SelectionPanel {
  /**
   * host: the page's view of things this panel needs and does not own:
   *   model() the shown HistModel, view (HeatmapView), unit(model), colMs() (one column's ms),
   *   mode() (live | past | file), keyNoun() (what a key is called: 'host' in the fleet view,
   *   else 'key'), isolate(keyName|null), watchToRun() (a watch whose live
   *   program has this data's preset, or null), joinWatch(name), running() (program running),
   *   schedule() (re-render the side panels), explained(box) (Explain's kept stacks over the
   *   box's time and band: {stacks, ticks, samples, runs}, or null when the shown data cannot
   *   have any: not live), explainSpans() ([{run, from, to, ticks}] the time Explain covered).
   */
  constructor({ root, host }) {
    this.root = root;
    this.host = host;
    this.box = null;
    this.baseBox = null;
    this.stacks = null;     // {baseline, target} folded maps given by hand (compareStacks)
    this.diffKey = null;    // what the differential flame graph last drew (redrawn when it changes)
    this.lastDiff = null;   // the Compare stacks last shown: {baseline, target, missing, drawn}
    this.flame = null;
    this.note = null;       // {text, action?: {label, run}} under the head (Explain on the past)
    this.dirty = true;
    this.lastRanking = null;
    document.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Escape' || !this.box) return;
      const t = ev.target;
      if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) return;
      this.clear();
    });
  }

  /** From the view: the box drawn, moved or resized (done: the pointer was released). */
  onBox(box, done) {
    this.box = box;
    this.note = null;
    this.dirty = true;
    // Drawn on release only: the panel appearing under the heatmap shrinks it, which would move
    // the cells under a drag in progress.
    if (done) { this.render(); this.announce(); }
  }

  set(box) { this.box = box; this.host.view.setBox(box); this.dirty = true; this.note = null; this.render(); this.announce(); }

  clear() {
    this.box = null;
    this.note = null;
    this.host.view.setBox(null);
    this.dirty = true;
    this.render();
    this.announce();
  }

  /** The current box becomes the compare baseline; the next box drawn is the target. */
  setBaseline(box = this.box) {
    this.baseBox = box;
    this.host.view.setBaseBox(box);
    if (box === this.box) { this.box = null; this.host.view.setBox(null); }
    this.dirty = true;
    this.render();
    this.announce();
  }

  clearBaseline() { this.setBaseline(null); }

  /** `box` becomes the compare baseline and the selection is cleared: the next box is the target. */
  useBaseline(box) {
    this.baseBox = box;
    this.host.view.setBaseBox(box);
    this.box = null;
    this.host.view.setBox(null);
    this.note = null;
    this.dirty = true;
    this.render();
    this.announce();
  }

  /** Stacks for a differential flame graph: baseline and target folded maps (see flame.js). */
  compareStacks(baseline, target, title = 'target against baseline') {
    this.stacks = baseline && target ? { baseline, target, title } : null;
    this.diffKey = null;
    this.makeFlame();
    this.dirty = true;
    this.render();
    return this.flame;
  }

  makeFlame() {
    if (!this.flame) { this.flameBox = el('div', { class: 'sel-flame' }); this.flame = new FlameGraph(this.flameBox); }
  }

  /** The band the box covers, as the Explain companion takes it. */
  band() {
    const m = this.host.model();
    if (!this.box || !m) return null;
    return { agg: m.name, lo: this.box.lo, hi: this.box.hi, unit: this.host.unit(m) ?? null, from: this.box.from, to: this.box.to };
  }

  keys() {
    const m = this.host.model();
    return m && m.isolate !== null ? [m.keys[m.isolate].name] : [];
  }

  /** Tells whoever listens (the Explain module) what is selected: a `heat-selection` event. */
  announce() {
    window.dispatchEvent(new CustomEvent('heat-selection', { detail: { box: this.box, baseline: this.baseBox, band: this.band(), keys: this.keys() } }));
  }

  /** Permalink parameters: sel= and base= ("from,to,lo,hi"). */
  params(p) {
    if (this.box) p.set('sel', boxParam(this.box));
    if (this.baseBox) p.set('base', boxParam(this.baseBox));
  }

  /** From a permalink; drawn once the columns are there (a recorded range, or live later). */
  applyParams(params) {
    const base = parseBoxParam(params.get('base'));
    const box = parseBoxParam(params.get('sel'));
    if (base) { this.baseBox = base; this.host.view.setBaseBox(base); }
    if (box) { this.box = box; this.host.view.setBox(box); }
    this.dirty = true;
  }

  async explain() {
    const band = this.band();
    if (!band) return;
    const api = window.heat && window.heat.explain;
    if (this.host.mode() === 'live') {
      if (api && typeof api.start === 'function') {
        this.note = { text: `Explain asked for ${rangeText([band.lo, band.hi], band.unit)}${this.keys().length ? ` (${this.keys().join(', ')})` : ''}.` };
        api.start({ band, keys: this.keys() });
      } else {
        this.note = { text: 'Explain is not available on this page: no live stack capture (the Explain companion) is loaded.' };
      }
      this.redraw();
      return;
    }
    const watch = await this.host.watchToRun();
    const text = `Stacks are captured live only: this ${this.host.mode() === 'file' ? 'imported file' : 'recorded range'} holds counts, no stacks. ` +
      (watch ? `Run Explain now on watch ${watch}'s live program with the same band (${rangeText([band.lo, band.hi], band.unit)}${this.keys().length ? `, ${this.keys().join(', ')}` : ''})?`
        : 'No running watch has this data\'s program: start it live and select the band there.');
    this.note = { text, action: watch ? { label: 'Run now with the same band', run: () => this.runNow(watch, band, this.keys()) } : null };
    this.redraw();
  }

  /** Joins the watch's live program, then asks for Explain with the same band and keys. */
  async runNow(watch, band, keys) {
    this.note = { text: `Joining watch ${watch}…` };
    this.redraw();
    this.host.joinWatch(watch);
    const t0 = performance.now();
    while (!this.host.running() && performance.now() - t0 < EXPLAIN_JOIN_WAIT_MS) await new Promise((r) => setTimeout(r, EXPLAIN_POLL_MS));
    if (!this.host.running()) { this.note = { text: `Watch ${watch}'s program did not start: no Explain.` }; this.redraw(); return; }
    const api = window.heat && window.heat.explain;
    const liveBand = { ...band, from: null, to: null };
    if (keys.length) this.host.isolate(keys[0]);
    if (api && typeof api.start === 'function') {
      api.start({ band: liveBand, keys });
      this.note = { text: `Explain asked live on watch ${watch} for ${rangeText([band.lo, band.hi], band.unit)}.` };
    } else {
      this.note = { text: `Joined watch ${watch} live, but Explain is not available on this page (no live stack capture loaded).` };
    }
    this.lastExplain = { band: liveBand, keys };
    this.redraw();
  }

  /** Rebuilds now, even under the pointer (the user's own action changed it). */
  redraw() { this.dirty = true; this.render(); }

  /** The visible window of the picture as model indices (what "the rest" is compared against). */
  visible(m) {
    const v = this.host.view;
    const r = m.visibleRange();
    if (!v.model || !r || !m.cols.length) return null;
    const w = v.win();
    if (!w.n) return null;
    return { c0: w.at(w.lo), c1: w.at(w.hi - 1), r0: r[0], r1: r[1] };
  }

  /** Rebuilt with the side panels (once per animation frame at most). */
  render() {
    const root = this.root;
    const m = this.host.model();
    if (this.host.view.drag) return; // see onBox
    if (!this.box && !this.baseBox && !this.stacks) { root.hidden = true; root.replaceChildren(); this.lastRanking = null; return; }
    // Under the pointer a list is not rebuilt by a tick (a row would move under a click).
    if (!this.dirty && root.matches(':hover') && root.childElementCount) return;
    this.dirty = false;
    root.hidden = false;
    const unit = m ? this.host.unit(m) : null;
    const parts = [];
    const boxText = (b) => {
      const cells = m ? cellsOf(m, b) : null;
      const cols = cells ? cells.c1 - cells.c0 + 1 : 0;
      return `${fmtClock(b.from)}–${fmtClock(b.to)} (${cols} column${cols === 1 ? '' : 's'} held) · ${rangeText([b.lo, b.hi], unit)}`;
    };
    const btn = (text, title, fn, cls = 'ghost small') => { const b = el('button', { type: 'button', class: cls, title, text }); b.addEventListener('click', fn); return b; };
    const head = el('div', { class: 'sel-head' });
    if (this.box) {
      head.append(el('b', { text: this.baseBox ? 'Target' : 'Selection' }), el('span', { class: 'muted sel-range', text: ` ${boxText(this.box)}` }), el('span', { class: 'spacer' }));
      if (!this.baseBox) head.append(btn('Set as baseline', 'Compare: keep this box as the baseline, then select the target', () => this.setBaseline(), 'ghost small sel-baseline'));
      head.append(btn('Explain', 'Capture the stacks of the events in this band (live only)', () => this.explain(), 'ghost small sel-explain'));
      head.append(btn('Clear', 'Clear the selection (Esc)', () => this.clear(), 'ghost small sel-clear'));
    } else {
      head.append(el('b', { text: 'Compare' }), el('span', { class: 'muted', text: ' draw the target box on the heatmap' }), el('span', { class: 'spacer' }));
    }
    parts.push(head);
    if (this.baseBox) {
      parts.push(el('div', { class: 'sel-head sel-base' }, el('b', { text: 'Baseline' }), el('span', { class: 'muted', text: ` ${boxText(this.baseBox)}` }), el('span', { class: 'spacer' }),
        btn('Clear baseline', 'Stop comparing', () => this.clearBaseline(), 'ghost small sel-clear-base')));
    }
    if (this.note) {
      const n = el('div', { class: 'sel-note', role: 'status', text: this.note.text });
      if (this.note.action) n.append(' ', btn(this.note.action.label, '', this.note.action.run, 'small sel-run-now'));
      parts.push(n);
    }
    let diff = null;
    if (m && this.box && this.baseBox) {
      parts.push(this.compareView(m, unit));
      if (!this.stacks) { diff = this.diffSides(m); parts.push(this.diffNote(diff, unit)); }
    } else if (m && this.box) parts.push(this.rankingView(m));
    this.lastDiff = diff ? { baseline: diff.base.summary, target: diff.target.summary, missing: diff.missing, drawn: !!diff.draw } : null;
    // Stacks given by hand (compareStacks) are drawn instead.
    if (this.stacks) diff = { ...this.stacks, key: this.stacks, given: true };
    const draw = diff && (diff.given || diff.draw);
    if (draw) parts.push(this.flameBox);
    root.replaceChildren(...parts);
    // One flame graph, kept across renders (its zoom and search survive a tick), fed only
    // when the stacks change; it is laid out once in the page, so it is filled after.
    if (draw && diff.key !== this.diffKey) {
      this.diffKey = diff.key;
      const d = diff.given ? diff : diff.draw;
      this.flame.setStacks(d.target, { baseline: d.baseline, title: d.title });
    }
  }

  /**
   * Compare's stacks: Explain's kept stacks over the baseline box and over the target box
   * (explained(box): the ticks whose frame time lies in the box, of runs whose band overlaps
   * it). `draw` ({baseline, target, title}) when both sides have explained ticks; `missing`
   * names the sides with none.
   */
  diffSides(m) {
    const side = (box) => {
      const got = this.host.explained(box);
      const cells = cellsOf(m, box);
      const cols = cells ? cells.c1 - cells.c0 + 1 : 0;
      if (!got) return { got: null, summary: { ticks: 0, samples: 0, stacks: 0, columns: cols } };
      return { got, summary: { ticks: got.ticks, samples: got.samples, stacks: got.stacks.size, columns: cols, runs: got.runs.map((r) => r.explain ?? r.id) } };
    };
    const base = side(this.baseBox), target = side(this.box);
    const live = base.got !== null;
    const missing = [];
    if (!base.got || !base.got.ticks) missing.push('baseline');
    if (!target.got || !target.got.ticks) missing.push('target');
    const out = { base, target, missing, live, draw: null, key: null };
    if (!missing.length) {
      out.draw = { baseline: base.got.stacks, target: target.got.stacks, title: 'target against baseline' };
      const s = (x) => `${x.summary.ticks}:${x.summary.samples}:${x.summary.stacks}`;
      out.key = `${boxParam(this.baseBox)}|${boxParam(this.box)}|${s(base)}|${s(target)}`;
      this.makeFlame();
    }
    return out;
  }

  /** What the differential flame graph shows and from which stacks, or why there is none. */
  diffNote(diff, unit) {
    const box = el('div', { class: 'sel-diff-note' });
    const runText = (runs) => {
      const bands = [...new Set(runs.map((r) => `${rowLabel([r.band.lo, r.band.hi], r.band.unit ?? unit)}${r.keys.length ? ` of ${r.keys.join(', ')}` : ''}`))];
      return bands.join('; ');
    };
    const sideText = (name, x) => `${name}: ${fmtNum(x.summary.samples)} stack${x.summary.samples === 1 ? '' : 's'} from ${x.summary.ticks} of ${x.summary.columns} tick${x.summary.columns === 1 ? '' : 's'}` +
      `, explained in ${runText(x.got.runs)}`;
    if (!diff.live) {
      box.append(el('p', { class: 'muted sel-diff-missing', text: 'No differential flame graph: stacks are captured live only (Explain), and this data holds counts, no stacks.' }));
      return box;
    }
    if (diff.missing.length) {
      const spans = this.host.explainSpans();
      const covered = spans.length
        ? ` Explain covered ${spans.map((s) => `${fmtClock(s.from)}–${fmtClock(s.to)} in ${rowLabel([s.run.band.lo, s.run.band.hi], s.run.band.unit ?? unit)}`).join(', ')}.`
        : ' No Explain has run on this program yet.';
      const who = diff.missing.length === 2 ? 'the baseline or the target' : `the ${diff.missing[0]}`;
      const have = diff.missing.length === 1 ? ` ${sideText(diff.missing[0] === 'baseline' ? 'The target has' : 'The baseline has', diff.missing[0] === 'baseline' ? diff.target : diff.base).replace(': ', ' ')}.` : '';
      box.append(el('p', { class: 'sel-note sel-diff-missing', role: 'status',
        text: `No stacks for ${who}: run Explain over ${diff.missing.length === 2 ? 'them' : 'it'}. Stacks are captured live, from when Explain starts, so select a time an Explain covered.${covered}${have}` }));
      return box;
    }
    const b = diff.base, t = diff.target;
    let baseOnly = 0;
    for (const [k, v] of b.got.stacks) if (!t.got.stacks.has(k)) baseOnly += v;
    const parts = [`Differential flame graph of Explain's stacks. ${sideText('Baseline', b)}; ${sideText('target', t)}.`,
      ' Normalised: colours are the change of each frame\'s share of its side\'s stacks (target share − baseline share), not of counts, so ranges of different lengths or rates compare: red grew, blue shrank. Widths are the target\'s stacks.'];
    if (baseOnly) parts.push(` Stacks seen only in the baseline (${fmtPct(b.summary.samples ? baseOnly / b.summary.samples : 0)} of it) have no width here.`);
    const runsB = runText(b.got.runs), runsT = runText(t.got.runs);
    if (runsB !== runsT) parts.push(` The sides were explained over different bands or keys (${runsB} against ${runsT}): their shares are of different events.`);
    if (!b.summary.samples || !t.summary.samples) parts.push(` The ${!b.summary.samples ? 'baseline' : 'target'} had no events in the band while Explain ran.`);
    box.append(el('p', { class: 'muted sel-diff-used', text: parts.join('') }));
    return box;
  }

  rankingView(m) {
    const vis = this.visible(m);
    const r = vis ? overRepresentation(m, this.box, vis) : { keys: [], inside: 0, outside: 0 };
    this.lastRanking = r;
    const noun = this.host.keyNoun();
    const table = el('table', { class: 'sel-table sel-ranking' },
      el('caption', { class: 'muted', text: `What is different there: ${fmtNum(r.inside)} events inside, ${fmtNum(r.outside)} in the rest of the picture` }),
      el('thead', {}, el('tr', {}, el('th', { text: noun }), el('th', { class: 'num', text: 'inside' }), el('th', { class: 'num', text: 'share inside' }),
        el('th', { class: 'num', text: 'share outside' }), el('th', { class: 'num', text: 'lift', title: 'share inside / share outside, both smoothed (+½ event per key), so a key never seen outside has a finite lift' }))));
    const body = el('tbody');
    for (const k of r.keys.slice(0, LIST_LIMIT)) {
      const isolated = m.isolate === k.id;
      const tr = el('tr', { class: `sel-key${isolated ? ' isolated' : ''}`, 'data-key': k.name, title: isolated ? `Show all ${noun}s again` : `Show only this ${noun}` },
        el('td', { class: 'mono', text: k.name }), el('td', { class: 'num', text: fmtNum(k.inside) }), el('td', { class: 'num', text: fmtPct(k.shareIn) }),
        el('td', { class: 'num', text: fmtPct(k.shareOut) }), el('td', { class: 'num', text: fmtLift(k.lift) }));
      tr.addEventListener('click', () => this.host.isolate(isolated ? null : k.name));
      body.append(tr);
    }
    if (!r.keys.length) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 5, text: 'No events inside the selection.' })));
    if (r.keys.length > LIST_LIMIT) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 5, text: `+${r.keys.length - LIST_LIMIT} more ${noun}s` })));
    table.append(body);
    return table;
  }

  compareView(m, unit) {
    const c = compareBoxes(m, this.baseBox, this.box, this.host.colMs());
    this.lastCompare = c;
    const noun = this.host.keyNoun();
    const head = (first) => el('thead', {}, el('tr', {}, el('th', { text: first }), el('th', { class: 'num', text: 'baseline' }), el('th', { class: 'num', text: 'target' }), el('th', { class: 'num', text: 'change' })));
    const row = (name, x, cls) => el('tr', { class: cls, 'data-key': name },
      el('td', { class: 'mono', text: name }), el('td', { class: 'num', text: fmtRate(x.baseRate) }), el('td', { class: 'num', text: fmtRate(x.targetRate) }),
      el('td', { class: `num ${x.change > 0 ? 'grew' : x.change < 0 ? 'shrank' : ''}`, text: signed(x.change) }));
    const keys = el('table', { class: 'sel-table sel-compare-keys' },
      el('caption', { class: 'muted', text: `Per ${noun}, events per second: baseline ${fmtNum(c.base.events)} in ${fmtNum(c.base.seconds)} s, target ${fmtNum(c.target.events)} in ${fmtNum(c.target.seconds)} s` }),
      head(noun), el('tbody', {}, ...c.keys.slice(0, LIST_LIMIT).map((k) => {
        const tr = row(k.name, k, 'sel-key');
        tr.addEventListener('click', () => this.host.isolate(m.isolate === k.id ? null : k.name));
        return tr;
      })));
    const rows = el('table', { class: 'sel-table sel-compare-rows' },
      el('caption', { class: 'muted', text: 'Per bucket, events per second' }),
      head('bucket'), el('tbody', {}, ...c.rows.slice(0, LIST_LIMIT).map((r) => row(rangeText(r.range, unit), r, 'sel-row'))));
    return el('div', { class: 'sel-compare' }, keys, rows);
  }
}
