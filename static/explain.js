// The Explain panel (issue 16): live, the selection's "Explain" asks the server for an explain
// companion over the selected band and keys (`explain`, docs/protocol.md) and this panel shows
// what it captures, tick after tick: a flame graph of the stacks since it started (flame.js:
// zoom, search, folded/SVG/PNG export), the top processes and cgroups, and "explained N of M
// in band" so one sees that (nearly) every event of the band is explained. Clearing the
// selection (box and compare baseline both gone), or the panel's Stop, sends `explain_stop`.
//
// Every tick's stacks are also kept with the time of the frame they explain (stacks.js), per
// run, so that Compare can diff the stacks of any two time ranges an Explain covered. "Use as
// baseline" makes the time this Explain covered so far the Compare baseline (in its band), and
// "Compare with baseline" the time it covered since then the target: two clicks for the usual
// "before and after" question, with no box to draw.
//
// It provides the seam selectpanel.js calls: window.heat.explain.start({band, keys}), and
// within(box) (the kept stacks of a box's time and band) for Compare.

import { FlameGraph } from './flame.js';
import { StackLog } from './stacks.js';
import { rangeText } from './units.js';
import { el, fmtNum, fmtPct } from './util.js';

const TOP_ROWS = 10; // processes and cgroups listed

/**
 * A selection's band (inclusive bucket bounds, `null` for an open end) as the wire's band:
 * `lo` inclusive, `hi` exclusive, `null` without an upper bound.
 */
export function wireBand(band) {
  const lo = band.lo === null || band.lo === undefined || band.lo < 0 ? 0 : Math.floor(band.lo);
  const hi = band.hi === null || band.hi === undefined ? null : Math.floor(band.hi) + 1;
  return { lo, hi };
}

/** Adds `list` ([{…, count}]) into `totals` (a Map keyed by `keyOf`). */
function addCounts(totals, list, keyOf) {
  for (const item of Array.isArray(list) ? list : []) {
    const k = keyOf(item);
    const prev = totals.get(k);
    totals.set(k, { ...item, count: (prev ? prev.count : 0) + (Number(item.count) || 0) });
  }
}

export class ExplainPanel {
  /**
   * host: send(msg) (false when the socket is down), program() (the watched program's id),
   * running() (a live program runs), tsOf(program, seq) (the time of that program's frame, or
   * null), baseline() (the Compare baseline box or null), setBaseline(box), setTarget(box),
   * changed() (new stacks: Compare may redraw).
   */
  constructor({ root, host }) {
    this.root = root;
    this.host = host;
    this.state = 'idle'; // idle | starting | running | stopped | refused
    this.reset();
    this.message = '';
    this.flameHost = el('div', { class: 'explain-flame' });
    this.flame = new FlameGraph(this.flameHost);
    this.log = new StackLog();
    this.run = null;
    // A box that became the compare baseline is still a selection: the Explain runs on, so
    // that the target's time gets stacks too.
    window.addEventListener('heat-selection', (ev) => {
      if (!ev.detail || ev.detail.box || ev.detail.baseline) return;
      if (this.state === 'starting' || this.state === 'running') this.stop();
    });
  }

  reset() {
    this.stacks = new Map();
    this.processes = new Map();
    this.cgroups = new Map();
    this.explained = 0;
    this.inBand = 0;
    this.gapInBand = 0;
    this.missed = 0;
    this.fullTicks = 0;
    this.ticks = 0;
    this.id = null;
  }

  /**
   * The seam: explain `band` ({lo, hi, unit, …} as selectpanel.js gives it) over `keys`;
   * `backend` ('ebpf' or 'bpftrace') only to force one, the server choosing otherwise.
   */
  start({ band, keys = [], backend }) {
    if (!this.host.running() || this.host.program() === null) {
      this.state = 'refused';
      this.message = 'Explain needs a live program: start (or join) one first.';
      return this.render();
    }
    this.band = band;
    this.keys = Array.isArray(keys) ? keys : [];
    const msg = { type: 'explain', program: this.host.program(), band: wireBand(band) };
    if (this.keys.length) msg.keys = this.keys;
    if (backend) msg.backend = backend;
    this.reset();
    this.run = this.log.begin({ program: this.host.program(), band, keys: this.keys });
    this.flame.setStacks(this.stacks, { title: 'explain' });
    this.state = 'starting';
    this.message = '';
    if (!this.host.send(msg)) {
      this.state = 'refused';
      this.message = 'Not connected: Explain was not sent.';
    }
    return this.render();
  }

  stop() {
    if (this.state === 'starting' || this.state === 'running') this.host.send({ type: 'explain_stop' });
    this.state = 'stopped';
    this.render();
  }

  /** `explain_started`, `explain`, `explain_stopped` from the server. */
  onMessage(msg) {
    if (msg.type === 'explain_started') {
      this.id = msg.explain ?? null;
      if (this.run) this.run.explain = this.id;
      this.state = 'running';
      this.captures = typeof msg.captures === 'string' ? msg.captures : '';
      this.backend = typeof msg.backend === 'string' ? msg.backend : '';
      this.preset = msg.preset ?? '';
    } else if (msg.type === 'explain') {
      if (this.state !== 'running' || (this.id !== null && msg.explain !== this.id)) return;
      this.ticks++;
      this.explained += Number(msg.explained) || 0;
      this.inBand += Number(msg.events_in_band) || 0;
      // Ticks whose stacks a replaced tracer missed: shown apart, never as explained.
      this.gapInBand += Number(msg.gap?.events_in_band) || 0;
      // In band but not kept by a native companion (its capture map was full): told, not hidden.
      this.missed += Number(msg.missed) || 0;
      // The companion's capture map filled: that tick's count may fall short, and it says so.
      if (msg.capture_full === true) this.fullTicks++;
      for (const [stack, n] of Object.entries(msg.stacks || {})) this.stacks.set(stack, (this.stacks.get(stack) || 0) + (Number(n) || 0));
      addCounts(this.processes, msg.processes, (p) => `${p.comm}\u0000${p.pid}`);
      addCounts(this.cgroups, msg.cgroups, (c) => String(c.cgroup));
      this.flame.setStacks(this.stacks, { title: 'explain' });
      if (this.run && Number.isInteger(msg.tick)) this.log.add(this.run, { tick: msg.tick, ts: this.host.tsOf(this.run.program, msg.tick), stacks: msg.stacks });
    } else if (msg.type === 'explain_stopped') {
      this.lastStopped = msg.reason ?? null;
      if (msg.explain !== undefined && this.id !== null && msg.explain !== this.id) return; // a replaced one
      if (this.state === 'running' || this.state === 'starting') this.state = 'stopped';
      if (msg.reason && msg.reason !== 'client') this.message = `Explain stopped: ${msg.reason}.`;
    }
    this.render();
    if (msg.type === 'explain') this.host.changed();
  }

  /** An `error` from the server: an explain refusal when one was asked for. */
  onError(msg) {
    const text = typeof msg.message === 'string' ? msg.message : '';
    if (!text.startsWith('explain') || (this.state !== 'starting' && this.state !== 'running')) return;
    this.state = 'refused';
    this.message = `${msg.code}: ${text}`;
    this.render();
  }

  /** The watched program ended or was left: its companion went with it. */
  onProgramStopped() {
    if (this.state === 'starting' || this.state === 'running') {
      this.state = 'stopped';
      this.message = 'The program stopped, and its Explain with it.';
      this.render();
    }
  }

  /** The kept stacks of `box`'s time and band (stacks.js within), of the watched program. */
  within(box) {
    this.log.resolve((program, seq) => this.host.tsOf(program, seq));
    return this.log.within(box, { program: this.host.program() });
  }

  /** The time each Explain run of the watched program covered: [{run, from, to, ticks}]. */
  spans() {
    this.log.resolve((program, seq) => this.host.tsOf(program, seq));
    return this.log.spans({ program: this.host.program() });
  }

  /** This run's placed ticks after `after` (ms; -Infinity: all) as a box in its band, or null. */
  runBox(after = -Infinity) {
    if (!this.run) return null;
    this.log.resolve((program, seq) => this.host.tsOf(program, seq));
    let from = Infinity, to = -Infinity;
    for (const t of this.run.ticks) if (t.ts !== null && t.ts > after) { from = Math.min(from, t.ts); to = Math.max(to, t.ts); }
    return Number.isFinite(from) ? { from, to, lo: this.run.band.lo, hi: this.run.band.hi } : null;
  }

  /** "Use as baseline": the time this Explain covered so far, in its band. */
  useAsBaseline() {
    const box = this.runBox();
    if (!box) { this.message = 'No stacks yet: wait for a tick of this Explain.'; return this.render(); }
    this.message = '';
    this.host.setBaseline(box);
    this.render();
  }

  /** "Compare with baseline": the time this Explain covered since the baseline's end is the target. */
  compareWithBaseline() {
    const base = this.host.baseline();
    if (!base) return this.useAsBaseline();
    const box = this.runBox(base.to);
    if (!box) { this.message = 'No stacks after the baseline yet: wait for a tick of this Explain.'; return this.render(); }
    this.message = '';
    this.host.setTarget(box);
    this.render();
  }

  summary() {
    return { state: this.state, explained: this.explained, inBand: this.inBand, ticks: this.ticks, fullTicks: this.fullTicks, missed: this.missed, stacks: new Map(this.stacks),
      processes: [...this.processes.values()], cgroups: [...this.cgroups.values()], message: this.message,
      stoppedBy: this.lastStopped ?? null };
  }

  render() {
    const root = this.root;
    if (this.state === 'idle') { root.hidden = true; return; }
    root.hidden = false;
    const band = this.band ? rangeText([this.band.lo, this.band.hi], this.band.unit) : '';
    const head = el('div', { class: 'sel-head' }, el('b', { text: 'Explain' }),
      el('span', { class: 'muted', text: ` ${band}${this.keys && this.keys.length ? ` · ${this.keys.join(', ')}` : ''} · ${this.state}` }),
      el('span', { class: 'spacer' }));
    if (this.state === 'starting' || this.state === 'running') {
      const stop = el('button', { type: 'button', class: 'ghost small explain-stop', title: 'Stop capturing stacks', text: 'Stop' });
      stop.addEventListener('click', () => this.stop());
      head.append(stop);
    }
    if (this.run && this.run.ticks.length && this.host.program() === this.run.program) {
      const btn = (text, title, cls, fn) => { const b = el('button', { type: 'button', class: `ghost small ${cls}`, title, text }); b.addEventListener('click', fn); return b; };
      head.append(btn('Use as baseline', 'Compare: the time this Explain covered so far (in its band) becomes the baseline; Explain keeps running', 'explain-baseline', () => this.useAsBaseline()));
      if (this.host.baseline()) head.append(btn('Compare with baseline', 'Compare: the time this Explain covered since the baseline becomes the target (differential flame graph of the two)', 'explain-compare', () => this.compareWithBaseline()));
    }
    const parts = [head];
    if (this.message) parts.push(el('div', { class: 'sel-note explain-message', role: 'status', text: this.message }));
    // Who symbolised the stacks matters when reading them (bpftrace's names or blazesym's).
    const by = { ebpf: 'native BPF, symbolised by blazesym', bpftrace: 'bpftrace, symbolised by bpftrace' }[this.backend];
    if (this.captures) parts.push(el('div', { class: 'muted explain-captures', text: `Captured${by ? ` (${by})` : ''}: ${this.captures}` }));
    const share = this.inBand ? ` (${fmtPct(this.explained / this.inBand)})` : '';
    parts.push(el('div', { class: 'explain-count', text: `explained ${fmtNum(this.explained)} of ${fmtNum(this.inBand)} in band${share}, ${this.ticks} tick${this.ticks === 1 ? '' : 's'}` }));
    if (this.missed) parts.push(el('div', { class: 'explain-gap', text: `${fmtNum(this.missed)} in band not explained: the capture map was full` }));
    if (this.gapInBand) parts.push(el('div', { class: 'explain-gap', text: `${fmtNum(this.gapInBand)} in band not explained: the tracer was replaced (no stacks for those ticks)` }));
    if (this.fullTicks) {
      const n = this.fullTicks === 1 ? 'one tick' : `${fmtNum(this.fullTicks)} ticks`;
      parts.push(el('div', { class: 'explain-full', role: 'status', text: `Warning: the capture map was full in ${n}; events in band past its size were not captured there, so fewer are explained (a fresh tracer took over)` }));
    }
    parts.push(this.flameHost);
    const table = (caption, cols, rows) => el('table', { class: 'sel-table' }, el('caption', { class: 'muted', text: caption }),
      el('thead', {}, el('tr', {}, ...cols.map((c, i) => el('th', { class: i === cols.length - 1 ? 'num' : '', text: c })))),
      el('tbody', {}, ...rows));
    const top = (m) => [...m.values()].sort((a, b) => b.count - a.count).slice(0, TOP_ROWS);
    parts.push(el('div', { class: 'sel-compare' },
      table('Top processes', ['comm', 'pid', 'events'], top(this.processes).map((p) => el('tr', { class: 'explain-process' },
        el('td', { class: 'mono', text: p.comm }), el('td', { class: 'mono', text: String(p.pid) }), el('td', { class: 'num', text: fmtNum(p.count) })))),
      table('Top cgroups', ['cgroup id', 'events'], top(this.cgroups).map((c) => el('tr', { class: 'explain-cgroup' },
        el('td', { class: 'mono', text: String(c.cgroup) }), el('td', { class: 'num', text: fmtNum(c.count) }))))));
    root.replaceChildren(...parts);
  }
}
