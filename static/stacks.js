// Explain's stacks kept tick by tick with the time of the tick they explain, so that any time
// range an Explain covered can be asked for its stacks: Compare (selectpanel.js) diffs the
// baseline box's stacks against the target box's in a differential flame graph, whether the two
// came from one Explain that ran across both ranges or from two Explains.
//
// An `explain` message's `tick` is the `seq` of the program's frame it goes with (its stacks are
// the events of that frame's interval), and a box's `from`/`to` are its columns' frame times, so
// a tick belongs to a box when its frame's time lies in the box's times and its run's band
// overlaps the box's band. Pure: no DOM, unit-tested under node.

/** Stack entries (one stack of one tick) kept over all runs; the oldest ticks go first. */
export const MAX_KEPT_ENTRIES = 200_000;
/** Explain runs kept (their ticks with them), the oldest dropped first. */
export const MAX_RUNS_KEPT = 16;

const lower = (v) => (v == null ? -Infinity : v);
const upper = (v) => (v == null ? Infinity : v);

/** Bands {lo, hi} (inclusive value bounds, null for an open end) share a value. */
export function bandsOverlap(a, b) {
  return lower(a.lo) <= upper(b.hi) && lower(b.lo) <= upper(a.hi);
}

export class StackLog {
  constructor({ maxEntries = MAX_KEPT_ENTRIES, maxRuns = MAX_RUNS_KEPT } = {}) {
    this.maxEntries = maxEntries;
    this.maxRuns = maxRuns;
    this.runs = [];
    this.entries = 0;
    this.names = new Map(); // one string per distinct stack: each tick's JSON makes new ones
    this.nextRun = 1;
    this.added = 0;         // ticks ever added: their order, for pruning the oldest
  }

  /**
   * A new run: an Explain started on `program` over `band` ({lo, hi} as a box's, `unit`) and
   * `keys`. Its `id` is the page's (the server's explain id is `explain`, once it is known).
   */
  begin({ program = null, band = {}, keys = [] } = {}) {
    const run = {
      id: this.nextRun++, explain: null, program,
      band: { lo: band.lo ?? null, hi: band.hi ?? null, unit: band.unit ?? null }, keys: [...keys], ticks: [],
    };
    this.runs.push(run);
    while (this.runs.length > this.maxRuns) this.drop(this.runs[0]);
    return run;
  }

  /**
   * One `explain` message of `run`: `tick` (the frame's seq), `ts` (that frame's time in ms, or
   * null while the page has not placed it: resolve() does later) and `stacks` (folded stack →
   * count, a Map or the message's object).
   */
  add(run, { tick, ts = null, stacks }) {
    if (!this.runs.includes(run)) return;
    const m = new Map();
    for (const [k, v] of stacks instanceof Map ? stacks : Object.entries(stacks || {})) {
      const n = Number(v);
      if (!(n > 0)) continue;
      let name = this.names.get(k);
      if (name === undefined) { name = k; this.names.set(k, k); }
      m.set(name, (m.get(name) || 0) + n);
    }
    run.ticks.push({ tick, ts: Number.isFinite(ts) ? ts : null, stacks: m, n: this.added++ });
    this.entries += m.size;
    this.prune();
  }

  /** Places ticks that have no time yet: `tsOf(program, seq)` gives it (null: still unknown). */
  resolve(tsOf) {
    for (const run of this.runs) {
      for (const t of run.ticks) {
        if (t.ts !== null) continue;
        const ts = tsOf(run.program, t.tick);
        if (Number.isFinite(ts)) t.ts = ts;
      }
    }
  }

  /**
   * The stacks of the ticks of `program` inside `box` ({from, to, lo, hi}): a tick counts when
   * its time lies in [from, to] and its run's band overlaps [lo, hi]. Returns {stacks (Map,
   * summed), ticks, samples, runs (those that gave ticks)}; ticks of a run with no events in its
   * band count as ticks with no samples (Explain ran there and saw nothing).
   */
  within(box, { program = null } = {}) {
    const stacks = new Map();
    const runs = [];
    let ticks = 0, samples = 0;
    if (!box) return { stacks, ticks, samples, runs };
    for (const run of this.runs) {
      if (run.program !== program || !bandsOverlap(run.band, box)) continue;
      let used = 0;
      for (const t of run.ticks) {
        if (t.ts === null || t.ts < box.from || t.ts > box.to) continue;
        used++;
        for (const [k, v] of t.stacks) { stacks.set(k, (stacks.get(k) || 0) + v); samples += v; }
      }
      if (used) { ticks += used; runs.push(run); }
    }
    return { stacks, ticks, samples, runs };
  }

  /** The placed time each run of `program` covers: [{run, from, to, ticks}], runs in order. */
  spans({ program = null } = {}) {
    const out = [];
    for (const run of this.runs) {
      if (run.program !== program) continue;
      let from = Infinity, to = -Infinity, n = 0;
      for (const t of run.ticks) if (t.ts !== null) { n++; if (t.ts < from) from = t.ts; if (t.ts > to) to = t.ts; }
      if (n) out.push({ run, from, to, ticks: n });
    }
    return out;
  }

  /** Forgets a run and its ticks. */
  drop(run) {
    const i = this.runs.indexOf(run);
    if (i < 0) return;
    this.runs.splice(i, 1);
    for (const t of run.ticks) this.entries -= t.stacks.size;
    this.reintern();
  }

  /** Oldest ticks out (in the order they came) until the kept entries fit; never the newest. */
  prune() {
    if (this.entries <= this.maxEntries) return;
    while (this.entries > this.maxEntries) {
      let oldest = null;
      for (const run of this.runs) {
        const t = run.ticks[0];
        if (t && t.n !== this.added - 1 && (!oldest || t.n < oldest.t.n)) oldest = { run, t };
      }
      if (!oldest) break;
      oldest.run.ticks.shift();
      this.entries -= oldest.t.stacks.size;
    }
    this.reintern();
  }

  /** The interned names still in use: dropped ticks' stacks must not stay alive through it. */
  reintern() {
    const names = new Map();
    for (const run of this.runs) for (const t of run.ticks) for (const k of t.stacks.keys()) names.set(k, k);
    this.names = names;
  }
}
