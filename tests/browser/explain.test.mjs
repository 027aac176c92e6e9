// Browser test of Explain live (issue 16, the page's panel, static/explain.js): a live
// syscall-latency-log2 program filtered to one comm, a perl sleeper of that comm taking 3 ms a
// call; a box over the 2–4 ms band, "Explain": the panel shows the sleeper's comm and pid, a
// flame graph whose search finds the libc sleep function, "explained N of M in band" with
// (nearly) all of the band explained, and folded and SVG downloads (the folded export adds up
// to what was explained); clearing the selection stops the companion (the server says so).
// Then the same on offcpu-time, whose companion is native: the waker's stack after `--`.
// Compare from Explain's stacks: one Explain runs while a perl 3 ms select loop runs alone, then
// while a perl 3 ms sleeper joins it; a baseline over the first range and a target over the
// second (from the Explain panel's buttons, then by drawing the boxes) give a differential flame
// graph where the sleep's frames grew (red) and the select's shrank (blue), with the counts of
// each side; a box before the Explain says it has no stacks.
// And a companion whose capture map fills (a small one, by fault injection, against thousands
// of short-lived processes) is shown as a plain warning in the panel, never silently.
// Real server, real preset, real bpftrace companion, Debian's chromium (playwright-core).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { startServer, launchBrowser, openPage, artifact, sleeper, settled, drag } from './harness.mjs';

const TICK_MS = 500;
const COMM = 'heat-explwork';   // the sleeper's comm; the program measures only it
const SLEEP_US = 3000;          // inside log2's [2^21, 2^22) ns bucket (2.1–4.2 ms)
const BAND_NS = 3_000_000;
const LIVE_TICKS = 6;           // ticks of the sleeper before the box is drawn
const EXPLAIN_TICKS = 4;        // explain ticks looked at
const WAIT = { timeout: 60000 };
const CMP_COMM = 'heat-explcmp';  // the compare test's workloads; its program measures only them
const PHASE_TICKS = 6;            // explain ticks of each compare range

let server, browser;
let tabs = [];
const workloads = [];

before(async () => {
  server = await startServer({ tickMs: TICK_MS });
  browser = await launchBrowser();
});

after(async () => {
  for (const w of workloads) w.stop();
  if (browser) await browser.close();
  if (server) await server.stop();
});

afterEach(async () => {
  const opened = tabs;
  tabs = [];
  const logged = opened.map((t) => [...t.errors]);
  for (const t of opened) await t.page.close();
  for (const errors of logged) assert.deepEqual(errors, [], 'a tab logged errors');
});

/** Drawn model columns where `key` (null: any key) has events in the row holding `value`, and that row. */
function columnsOf(p, key, value) {
  return p.evaluate(({ key, value }) => {
    const h = window.heat, m = h.model();
    const row = m.rows.findIndex(([lo, hi]) => (lo ?? -Infinity) <= value && value <= (hi ?? Infinity));
    const base = m.pushed - m.cols.length;
    const first = Math.max(0, h.drawnColumns - m.capacity - base), last = h.drawnColumns - base - 1;
    const cols = [];
    const count = (c) => m.breakdown(c, row).filter((k) => key === null || k.name === key).reduce((n, k) => n + k.count, 0);
    for (let c = first; c <= last; c++) if (count(c) > 0) cols.push(c);
    return { row, cols };
  }, { key, value });
}

/**
 * A 3 ms sleeper named `comm`, a live `preset` filtered to it in a new tab, a box over `key`'s
 * columns in the row holding 3 ms, and Explain: after EXPLAIN_TICKS ticks, the tab, the
 * sleeper and the panel's summary (stacks as an object), nearly all of the band explained.
 */
async function explainSleeper(preset, comm, key) {
  const sl = sleeper(SLEEP_US, { comm });
  workloads.push(sl);
  const t = await openPage(browser.context, `${server.url}/?columns=60`);
  tabs.push(t);
  const p = t.page;
  await p.evaluate(({ preset, tick, comm }) => window.heat.send({ type: 'start', preset, tick_ms: tick, comm }), { preset, tick: TICK_MS, comm });
  await p.waitForFunction((n) => window.heat.run === 'running' && window.heat.frames > n, LIVE_TICKS, WAIT);
  await p.evaluate(() => window.heat.pause());
  await settled(p);
  const { row, cols } = await columnsOf(p, key, BAND_NS);
  assert.ok(cols.length >= 2, `the sleeper's columns: ${cols}`);
  await drag(p, [cols[0], row], [cols[cols.length - 1], row]);

  await p.click('#select-panel .sel-explain');
  await p.waitForFunction((n) => window.heat.explain.summary().ticks >= n, EXPLAIN_TICKS, WAIT);
  const s = await p.evaluate(() => { const s = window.heat.explain.summary(); return { ...s, stacks: Object.fromEntries(s.stacks) }; });
  assert.equal(s.state, 'running');
  assert.ok(s.inBand > 0, 'the band has events');
  assert.ok(s.explained * 10 >= s.inBand * 9, `nearly all of the band is explained: ${s.explained} of ${s.inBand}`);
  return { p, sl, s };
}

test('Explain on a live selection: the sleeper, its stack, explained N of M, downloads; clearing stops it', async () => {
  const { p, sl, s } = await explainSleeper('syscall-latency-log2', COMM, 'clock_nanosleep');
  const band = await p.evaluate(() => window.heat.band);
  assert.ok(band && band.lo <= BAND_NS && BAND_NS <= band.hi, `the box holds 3 ms: ${JSON.stringify(band)}`);
  assert.deepEqual(s.processes.map((x) => [x.comm, x.pid]), [[COMM, sl.pid]], 'only the sleeper (the program measures only its comm)');
  const sleeps = Object.keys(s.stacks).filter((k) => k.split(';').some((f) => !f.endsWith('_[k]') && f.includes('nanosleep')));
  assert.ok(sleeps.length > 0, `a stack with the libc sleep function: ${Object.keys(s.stacks).slice(0, 3)}`);
  assert.match(await p.locator('#explain-panel .explain-count').innerText(), /^explained [\d,]+ of [\d,]+ in band/);
  assert.ok(await p.locator('#explain-panel .explain-process').count() >= 1);
  assert.ok(await p.locator('#explain-panel .explain-cgroup').count() >= 1);
  assert.match(await p.locator('#explain-panel .explain-captures').innerText(), /native BPF, symbolised by blazesym/, 'the syscall presets explain natively by default');

  // The flame graph's search highlights the sleep frames.
  await p.fill('#explain-panel .flame-search', 'nanosleep');
  await p.waitForFunction(() => document.querySelectorAll('#explain-panel g.frame.match').length > 0, null, WAIT);
  await p.locator('#explain-panel').screenshot({ path: artifact('explain-panel.png') });

  // Downloads: the folded export adds up to what the panel holds, the SVG is an SVG.
  const held = await p.evaluate(() => { const s = window.heat.explain.summary(); let n = 0; for (const v of s.stacks.values()) n += v; return n; });
  const [folded] = await Promise.all([p.waitForEvent('download'), p.click('#explain-panel .flame-folded')]);
  const text = readFileSync(await folded.path(), 'utf8');
  const total = text.trim().split('\n').reduce((n, line) => n + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
  assert.ok(total >= held && total > 0, `the folded export holds the stacks: ${total} of ${held}`);
  assert.ok(text.includes('nanosleep'), 'the folded export names the sleep');
  const [svg] = await Promise.all([p.waitForEvent('download'), p.click('#explain-panel .flame-svg')]);
  assert.match(readFileSync(await svg.path(), 'utf8'), /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);

  // Clearing the selection stops the companion: the server answers explain_stopped.
  await p.evaluate(() => window.heat.clearSelection());
  await p.waitForFunction(() => window.heat.explain.summary().stoppedBy === 'client', null, WAIT);
  assert.equal(await p.evaluate(() => window.heat.explain.summary().state), 'stopped');
});

test('Explain natively on offcpu-time: the sleeper switched out in its sleep, and the timer that woke it', async () => {
  const comm = 'heat-offwork';
  // offcpu-time's key is the comm; a 3 ms sleep is off CPU for a little over 3 ms.
  const { p, sl, s } = await explainSleeper('offcpu-time', comm, comm);
  assert.deepEqual(s.processes.map((x) => [x.comm, x.pid]), [[comm, sl.pid]], 'only the sleeper');
  const woken = Object.keys(s.stacks).filter((k) => k.includes(';--;') && k.split(';--;')[1].includes('hrtimer_wakeup_[k]'));
  assert.ok(woken.length > 0, `a stack with its waker, the sleep's timer: ${Object.keys(s.stacks).slice(0, 3)}`);
  assert.match(await p.locator('#explain-panel').innerText(), /switch-out/, 'the panel says what is captured');

  await p.fill('#explain-panel .flame-search', 'hrtimer_wakeup');
  await p.waitForFunction(() => document.querySelectorAll('#explain-panel g.frame.match').length > 0, null, WAIT);
  await p.locator('#explain-panel').screenshot({ path: artifact('explain-offcpu-panel.png') });

  await p.evaluate(() => window.heat.clearSelection());
  await p.waitForFunction(() => window.heat.explain.summary().stoppedBy === 'client', null, WAIT);
});

/** Drawn model columns whose frame time is one of `times` (ms), in order. */
function columnsAt(p, times) {
  return p.evaluate((times) => {
    const h = window.heat, m = h.model();
    const base = m.pushed - m.cols.length;
    const first = Math.max(0, h.drawnColumns - m.capacity - base), last = h.drawnColumns - base - 1;
    const out = [];
    for (let c = first; c <= last; c++) if (times.includes(m.cols[c].meta.ts)) out.push(c);
    return out;
  }, times);
}

/** The placed tick times of the running Explain (window.heat.explain's kept stacks). */
function explainTimes(p) {
  return p.evaluate(() => window.heat.explain.run.ticks.filter((t) => t.ts !== null).map((t) => t.ts));
}

/** Each frame's fill in the compare panel's differential flame graph: [[name, fill]]. */
function diffFills(p) {
  return p.evaluate(() => [...document.querySelectorAll('#select-panel .sel-flame g.frame')].map((g) => [g.dataset.name, g.querySelector('rect').getAttribute('fill')]));
}

const RED = /^rgb\(255,(\d+),\1\)$/;
const BLUE = /^rgb\((\d+),\1,255\)$/;

/**
 * The sleep's frames exist in the target only: none is blue, and one is red (a frame of a few
 * samples is near white: the colour scales with the share's change). Some frame of the select
 * loop, a smaller share of the target, is blue.
 */
function assertDiffColours(fills, what) {
  const WHITE = 'rgb(255,255,255)';
  const sleeps = fills.filter(([n]) => n.includes('nanosleep'));
  assert.ok(sleeps.length > 0, `${what}: the sleep's frames are drawn: ${fills.map(([n]) => n).slice(0, 30)}`);
  for (const [n, fill] of sleeps) assert.match(fill, RED, `${what}: ${n} did not shrink: ${fill}`);
  assert.ok(sleeps.some(([, fill]) => fill !== WHITE), `${what}: a sleep frame grew (red): ${JSON.stringify(sleeps)}`);
  const selects = fills.filter(([n]) => /select/i.test(n));
  assert.ok(selects.some(([, fill]) => BLUE.test(fill) && fill !== WHITE), `${what}: a select frame shrank (blue): ${JSON.stringify(fills)}`);
}

test('Compare from Explain live: the sleep that started between the ranges grows red in the differential flame graph', async () => {
  const selectLoop = spawn('perl', ['-e', `$0 = "${CMP_COMM}"; select(undef, undef, undef, ${SLEEP_US / 1e6}) while 1`], { stdio: 'ignore' });
  workloads.push({ stop() { selectLoop.kill('SIGKILL'); } });
  const t = await openPage(browser.context, `${server.url}/?columns=120`);
  tabs.push(t);
  const p = t.page;
  await p.evaluate(({ tick, comm }) => window.heat.send({ type: 'start', preset: 'syscall-latency-log2', tick_ms: tick, comm }), { tick: TICK_MS, comm: CMP_COMM });
  await p.waitForFunction((n) => window.heat.run === 'running' && window.heat.frames > n, LIVE_TICKS, WAIT);
  await p.evaluate(() => window.heat.pause());
  await settled(p);
  const { row, cols } = await columnsOf(p, null, BAND_NS);
  assert.ok(cols.length >= 2, `the select loop's columns: ${cols}`);
  await drag(p, [cols[0], row], [cols[cols.length - 1], row]);
  await p.click('#select-panel .sel-explain');
  await p.evaluate(() => window.heat.resume());

  // Range 1: the select loop alone. The Explain panel's "Use as baseline" takes what it covered.
  await p.waitForFunction((n) => window.heat.explain.summary().ticks >= n, PHASE_TICKS, WAIT);
  await p.click('#explain-panel .explain-baseline');
  const baseline = await p.evaluate(() => window.heat.baseline);
  assert.ok(baseline, 'a baseline');
  assert.equal(await p.evaluate(() => window.heat.selection), null, 'the next box is the target');
  assert.equal(await p.evaluate(() => window.heat.explain.summary().state), 'running', 'a baseline is still a selection: Explain runs on');
  const baseTimes = (await explainTimes(p)).filter((ts) => ts <= baseline.to);
  const baseStacks = await p.evaluate(() => Object.keys(Object.fromEntries(window.heat.explain.summary().stacks)));
  assert.ok(!baseStacks.some((k) => k.includes('nanosleep')), `no sleep before the sleeper: ${baseStacks}`);

  // Range 2: a 3 ms sleeper joins the select loop.
  const sl = sleeper(SLEEP_US, { comm: CMP_COMM });
  workloads.push(sl);
  const ticks0 = await p.evaluate(() => window.heat.explain.summary().ticks);
  await p.waitForFunction((n) => window.heat.explain.summary().ticks >= n, ticks0 + PHASE_TICKS, WAIT);
  await p.click('#explain-panel .explain-compare');
  const target = await p.evaluate(() => window.heat.selection);
  assert.ok(target && target.from > baseline.to, `the target follows the baseline: ${JSON.stringify([baseline, target])}`);
  await settled(p);
  const c = await p.evaluate(() => window.heat.comparison);
  assert.equal(c.keys[0].name, 'clock_nanosleep', `the key that changed comes first: ${JSON.stringify(c.keys.slice(0, 3))}`);
  const d = await p.evaluate(() => window.heat.flameDiff);
  assert.equal(d.drawn, true, JSON.stringify(d));
  assert.deepEqual(d.missing, []);
  assert.ok(d.baseline.ticks >= PHASE_TICKS - 1 && d.baseline.samples > 0, `baseline stacks: ${JSON.stringify(d.baseline)}`);
  assert.ok(d.target.ticks >= PHASE_TICKS - 1 && d.target.samples > 0, `target stacks: ${JSON.stringify(d.target)}`);
  const note = await p.locator('#select-panel .sel-diff-used').innerText();
  assert.match(note, new RegExp(`Baseline: ${d.baseline.samples.toLocaleString('en-US')} stacks? from ${d.baseline.ticks} of`), note);
  assert.match(note, /Normalised: .*share/);
  assertDiffColours(await diffFills(p), 'from the buttons');
  await p.mouse.move(1, 1);
  // The panel scrolls inside its max-height: lifted for the picture, so it shows all of it.
  await p.evaluate(() => { document.getElementById('select-panel').style.maxHeight = 'none'; });
  await settled(p);
  await p.locator('#select-panel').screenshot({ path: artifact('compare-flame.png') });
  await p.evaluate(() => { document.getElementById('select-panel').style.maxHeight = ''; });

  // The same by drawing the boxes: a baseline over the first range's columns, a target over the
  // second's. The baseline is cleared first; the target box left is a selection, so Explain runs on.
  await p.click('#select-panel .sel-clear-base');
  assert.equal(await p.evaluate(() => window.heat.explain.summary().state), 'running');
  await p.evaluate(() => window.heat.pause());
  await settled(p);
  const baseCols = await columnsAt(p, baseTimes);
  assert.ok(baseCols.length >= 3, `the baseline's columns: ${baseCols}`);
  await drag(p, [baseCols[1], row], [baseCols[baseCols.length - 1], row]);
  await p.click('#select-panel .sel-baseline');
  const afterTimes = (await explainTimes(p)).filter((ts) => ts >= target.from);
  const targetCols = await columnsAt(p, afterTimes);
  assert.ok(targetCols.length >= 3, `the target's columns: ${targetCols}`);
  await drag(p, [targetCols[0], row], [targetCols[targetCols.length - 1], row]);
  const drawn = await p.evaluate(() => window.heat.flameDiff);
  assert.equal(drawn.drawn, true, JSON.stringify(drawn));
  assert.equal(drawn.baseline.ticks, baseCols.length - 1, 'one explained tick per baseline column drawn');
  assertDiffColours(await diffFills(p), 'from drawn boxes');

  // A target before the Explain started has no stacks, and the panel says so.
  await drag(p, [cols[0], row], [cols[cols.length - 1], row]);
  const none = await p.evaluate(() => window.heat.flameDiff);
  assert.deepEqual(none.missing, ['target']);
  assert.equal(await p.locator('#select-panel .sel-flame').count(), 0, 'no flame graph drawn');
  assert.match(await p.locator('#select-panel .sel-diff-missing').innerText(), /^No stacks for the target: run Explain over it/);
  await p.mouse.move(1, 1);
  await p.evaluate(() => { document.getElementById('select-panel').style.maxHeight = 'none'; });
  await settled(p);
  await p.locator('#select-panel').screenshot({ path: artifact('compare-flame-missing.png') });
});

const MANY_COMM = 'heat-explmany';  // the short-lived processes' comm; the program measures only it
const MANY = 5000;                  // more than the small map (1024 keys) holds in a tick
const MANY_TICK_MS = 4000;          // thousands of new processes a tick

/** Perl, named MANY_COMM, forking `n` children that each sleep 3 ms once and exit. */
function shortLived(n) {
  const code = `$0 = ${JSON.stringify(MANY_COMM)}; for (1..${n}) { my $p = fork // die; `
    + `if (!$p) { usleep(${SLEEP_US}); POSIX::_exit(0) } waitpid($p, 0) }`;
  const child = spawn('perl', ['-MPOSIX', '-MTime::HiRes=usleep', '-e', code], { stdio: 'ignore' });
  const done = new Promise((r) => child.once('exit', r));
  return { done, stop() { child.kill('SIGKILL'); } };
}

test('a full capture map is a plain warning in the panel', async () => {
  const small = await startServer({ tickMs: MANY_TICK_MS, env: { HEAT_ACTIX_FAULT: 'explain_small_map' } });
  let work = null;
  let t = null;
  try {
    t = await openPage(browser.context, `${small.url}/?columns=60`);
    tabs.push(t);
    const p = t.page;
    await p.evaluate(({ tick, comm }) => window.heat.send({ type: 'start', preset: 'syscall-latency-log2', tick_ms: tick, comm }), { tick: MANY_TICK_MS, comm: MANY_COMM });
    await p.waitForFunction(() => window.heat.run === 'running' && window.heat.program !== null, null, WAIT);
    // The seam the selection's Explain calls: the 2–4 ms log2 bucket, inclusive bounds, on
    // bpftrace (whose map the fault shrinks; a native companion counts what it misses instead).
    await p.evaluate(() => window.heat.explain.start({ band: { lo: 2 ** 21, hi: 2 ** 22 - 1, unit: 'ns' }, keys: ['clock_nanosleep'], backend: 'bpftrace' }));
    await p.waitForFunction(() => window.heat.explain.summary().ticks >= 1, null, WAIT);
    assert.equal(await p.locator('#explain-panel .explain-full').count(), 0, 'no warning before the map fills');
    work = shortLived(MANY);
    await p.waitForFunction(() => window.heat.explain.summary().fullTicks >= 1, null, WAIT);
    const warning = p.locator('#explain-panel .explain-full');
    assert.match(await warning.innerText(), /^Warning: the capture map was full in (one tick|[\d,]+ ticks);/);
    assert.equal(await p.evaluate(() => window.heat.explain.summary().state), 'running', 'the explain goes on');
    await p.locator('#explain-panel').screenshot({ path: artifact('explain-full.png') });
    await work.done;
  } finally {
    if (work) work.stop();
    // The tab goes before its server: a page left open would log its reconnect's refusal.
    if (t) await t.page.close();
    await small.stop();
  }
});
