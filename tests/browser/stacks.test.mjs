// Explain's kept stacks (static/stacks.js) without a browser: ticks placed by their frame's
// time, a box's stacks (its time and band), the diff of two ranges one Explain covered, pruning.
// The stacks are folded stacks as the syscall-latency-log2 explainer sends them (a perl 3 ms
// select loop, then a perl usleep(3000) loop alongside it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StackLog, bandsOverlap } from '../../static/stacks.js';
import { buildTree, diffFolded } from '../../static/flame.js';

const SELECT = '_start;__libc_start_main;main;perl_run;Perl_runops_standard;Perl_pp_sselect;__select;'
  + 'entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];syscall_exit_to_user_mode_[k]';
const SLEEP = '_start;__libc_start_main;main;perl_run;Perl_runops_standard;Perl_pp_entersub;XS_Time__HiRes_usleep;'
  + 'nanosleep;__clock_nanosleep;entry_SYSCALL_64_after_hwframe_[k];do_syscall_64_[k];syscall_exit_to_user_mode_[k]';
const BAND = { lo: 2097152, hi: 4194303, unit: 'ns' };
const TICK = 500;
const T0 = 1_764_000_000_000;

/** One Explain over BAND, ticks 1–6 the select loop alone, 7–12 both loops; tick k at T0 + k·TICK. */
function oneRun() {
  const log = new StackLog();
  const run = log.begin({ program: 3, band: BAND, keys: [] });
  for (let k = 1; k <= 12; k++) {
    const stacks = k <= 6 ? { [SELECT]: 330 } : { [SELECT]: 320, [SLEEP]: 300 };
    log.add(run, { tick: k, ts: T0 + k * TICK, stacks });
  }
  return { log, run };
}

test('a box gets the ticks whose frame time it covers: counts and ticks per side', () => {
  const { log } = oneRun();
  const base = log.within({ from: T0 + TICK, to: T0 + 6 * TICK, lo: BAND.lo, hi: BAND.hi }, { program: 3 });
  assert.equal(base.ticks, 6);
  assert.equal(base.samples, 6 * 330);
  assert.deepEqual([...base.stacks.keys()], [SELECT]);
  const target = log.within({ from: T0 + 9 * TICK, to: T0 + 12 * TICK, lo: BAND.lo, hi: BAND.hi }, { program: 3 });
  assert.equal(target.ticks, 4);
  assert.equal(target.stacks.get(SLEEP), 4 * 300);
  assert.equal(target.stacks.get(SELECT), 4 * 320);
  assert.equal(log.within({ from: T0 - 10 * TICK, to: T0, lo: null, hi: null }, { program: 3 }).ticks, 0, 'before the Explain: no ticks');
  assert.equal(log.within({ from: T0, to: T0 + 20 * TICK, lo: null, hi: null }, { program: 4 }).ticks, 0, "another program's ticks are not this one's");
  assert.equal(log.within({ from: T0, to: T0 + 20 * TICK, lo: 0, hi: 1000 }, { program: 3 }).ticks, 0, 'a band the Explain did not cover');
});

test('the diff of two ranges: the sleep frames grew, the select frames shrank, by share', () => {
  const { log } = oneRun();
  // The baseline is longer than the target (6 ticks against 4): shares, not counts, decide.
  const b = log.within({ from: T0, to: T0 + 6 * TICK, lo: null, hi: null }, { program: 3 }).stacks;
  const t = log.within({ from: T0 + 9 * TICK, to: T0 + 12 * TICK, lo: null, hi: null }, { program: 3 }).stacks;
  const d = diffFolded(b, t);
  assert.ok(d.get(SLEEP).delta > 0.45 && d.get(SLEEP).delta < 0.5, `sleep grew: ${d.get(SLEEP).delta}`);
  assert.ok(d.get(SELECT).delta < 0, 'select shrank in share although its count per tick barely moved');
  const tree = buildTree(t, b);
  const share = (n, total) => n / total;
  const sleep = tree.byPath.get(SLEEP.split(';').slice(0, 9).join(';'));
  assert.equal(sleep.name, '__clock_nanosleep');
  assert.equal(sleep.base, 0);
  assert.ok(share(sleep.value, tree.root.value) > 0.4);
  const sel = tree.byPath.get(SELECT.split(';').slice(0, 7).join(';'));
  assert.equal(sel.name, '__select');
  assert.ok(share(sel.value, tree.root.value) < share(sel.base, tree.baseTotal), 'select: a smaller share of the target');
});

test('ticks without a time are placed later; spans are what each run covered', () => {
  const log = new StackLog();
  const run = log.begin({ program: 7, band: BAND });
  log.add(run, { tick: 40, ts: null, stacks: { [SELECT]: 5 } });
  log.add(run, { tick: 41, ts: T0 + 41, stacks: {} });
  assert.equal(log.within({ from: T0, to: T0 + 100, lo: null, hi: null }, { program: 7 }).ticks, 1, 'only the placed tick');
  log.resolve((program, seq) => (program === 7 && seq === 40 ? T0 + 40 : null));
  const got = log.within({ from: T0, to: T0 + 100, lo: null, hi: null }, { program: 7 });
  assert.equal(got.ticks, 2);
  assert.equal(got.samples, 5, 'a tick with no events in the band counts as explained, with no samples');
  assert.deepEqual(log.spans({ program: 7 }).map((s) => [s.from, s.to, s.ticks]), [[T0 + 40, T0 + 41, 2]]);
});

test('two runs: each range takes the run that covered it', () => {
  const log = new StackLog();
  const a = log.begin({ program: 1, band: BAND });
  for (let k = 1; k <= 3; k++) log.add(a, { tick: k, ts: k * TICK, stacks: { [SELECT]: 10 } });
  const b = log.begin({ program: 1, band: BAND, keys: ['clock_nanosleep'] });
  for (let k = 10; k <= 12; k++) log.add(b, { tick: k, ts: k * TICK, stacks: { [SLEEP]: 10 } });
  const first = log.within({ from: 0, to: 5 * TICK, lo: null, hi: null }, { program: 1 });
  const second = log.within({ from: 9 * TICK, to: 20 * TICK, lo: null, hi: null }, { program: 1 });
  assert.deepEqual(first.runs, [a]);
  assert.deepEqual(second.runs, [b]);
  assert.deepEqual(second.runs[0].keys, ['clock_nanosleep']);
});

test('pruning drops the oldest ticks first and keeps the kept count honest', () => {
  const log = new StackLog({ maxEntries: 5, maxRuns: 2 });
  const a = log.begin({ program: 1, band: BAND });
  for (let k = 1; k <= 4; k++) log.add(a, { tick: k, ts: k, stacks: { [`s${k}`]: 1, [`x${k}`]: 1 } });
  assert.ok(log.entries <= 5);
  assert.deepEqual(a.ticks.map((t) => t.tick), [3, 4]);
  assert.equal(log.names.size, 4, 'names of dropped ticks are forgotten');
  log.begin({ program: 1, band: BAND });
  log.begin({ program: 1, band: BAND });
  assert.equal(log.runs.includes(a), false, 'the oldest run goes past maxRuns');
  assert.equal(log.entries, 0);
});

test('bands overlap with open ends', () => {
  assert.ok(bandsOverlap({ lo: 2, hi: 3 }, { lo: 3, hi: 7 }));
  assert.ok(!bandsOverlap({ lo: 2, hi: 3 }, { lo: 4, hi: 7 }));
  assert.ok(bandsOverlap({ lo: null, hi: null }, { lo: 4, hi: 7 }));
  assert.ok(bandsOverlap({ lo: 8, hi: null }, { lo: 4, hi: 9 }));
});
