// Browser test of Explain live (issue 16, the page's panel, static/explain.js): a live
// syscall-latency-log2 program filtered to one comm, a perl sleeper of that comm taking 3 ms a
// call; a box over the 2–4 ms band, "Explain": the panel shows the sleeper's comm and pid, a
// flame graph whose search finds the libc sleep function, "explained N of M in band" with
// (nearly) all of the band explained, and folded and SVG downloads (the folded export adds up
// to what was explained); clearing the selection stops the companion (the server says so).
// And a companion whose capture map fills (a small one, by fault injection, against thousands
// of short-lived processes) is shown as a plain warning in the panel, never silently.
// Real server, real preset, real bpftrace companion, Debian's chromium (playwright-core).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { startServer, launchBrowser, openPage, artifact, sleeper } from './harness.mjs';

const TICK_MS = 500;
const COMM = 'heat-explwork';   // the sleeper's comm; the program measures only it
const SLEEP_US = 3000;          // inside log2's [2^21, 2^22) ns bucket (2.1–4.2 ms)
const BAND_NS = 3_000_000;
const LIVE_TICKS = 6;           // ticks of the sleeper before the box is drawn
const EXPLAIN_TICKS = 4;        // explain ticks looked at
const WAIT = { timeout: 60000 };

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

async function settled(p) {
  await p.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
}

async function drag(p, from, to) {
  await settled(p);
  const a = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), from);
  const b = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), to);
  await p.mouse.move(a.x, a.y);
  await p.mouse.down();
  await p.mouse.move(b.x, b.y, { steps: 8 });
  await p.mouse.up();
  await settled(p);
}

/** Drawn model columns where `key` has events in the row holding `value`, and that row. */
function columnsOf(p, key, value) {
  return p.evaluate(({ key, value }) => {
    const h = window.heat, m = h.model();
    const row = m.rows.findIndex(([lo, hi]) => (lo ?? -Infinity) <= value && value <= (hi ?? Infinity));
    const base = m.pushed - m.cols.length;
    const first = Math.max(0, h.drawnColumns - m.capacity - base), last = h.drawnColumns - base - 1;
    const cols = [];
    for (let c = first; c <= last; c++) if ((m.breakdown(c, row).find((k) => k.name === key)?.count ?? 0) > 0) cols.push(c);
    return { row, cols };
  }, { key, value });
}

test('Explain on a live selection: the sleeper, its stack, explained N of M, downloads; clearing stops it', async () => {
  const sl = sleeper(SLEEP_US, { comm: COMM });
  workloads.push(sl);
  const t = await openPage(browser.context, `${server.url}/?columns=60`);
  tabs.push(t);
  const p = t.page;
  await p.evaluate(({ tick, comm }) => window.heat.send({ type: 'start', preset: 'syscall-latency-log2', tick_ms: tick, comm }), { tick: TICK_MS, comm: COMM });
  await p.waitForFunction((n) => window.heat.run === 'running' && window.heat.frames > n, LIVE_TICKS, WAIT);
  await p.evaluate(() => window.heat.pause());
  await settled(p);
  const { row, cols } = await columnsOf(p, 'clock_nanosleep', BAND_NS);
  assert.ok(cols.length >= 2, `the sleeper's columns: ${cols}`);
  await drag(p, [cols[0], row], [cols[cols.length - 1], row]);
  const band = await p.evaluate(() => window.heat.band);
  assert.ok(band && band.lo <= BAND_NS && BAND_NS <= band.hi, `the box holds 3 ms: ${JSON.stringify(band)}`);

  await p.click('#select-panel .sel-explain');
  await p.waitForFunction((n) => window.heat.explain.summary().ticks >= n, EXPLAIN_TICKS, WAIT);
  const s = await p.evaluate(() => { const s = window.heat.explain.summary(); return { ...s, stacks: Object.fromEntries(s.stacks) }; });
  assert.equal(s.state, 'running');
  assert.ok(s.inBand > 0, 'the band has events');
  assert.ok(s.explained * 10 >= s.inBand * 9, `nearly all of the band is explained: ${s.explained} of ${s.inBand}`);
  assert.deepEqual(s.processes.map((x) => [x.comm, x.pid]), [[COMM, sl.pid]], 'only the sleeper (the program measures only its comm)');
  const sleeps = Object.keys(s.stacks).filter((k) => k.split(';').some((f) => !f.endsWith('_[k]') && f.includes('nanosleep')));
  assert.ok(sleeps.length > 0, `a stack with the libc sleep function: ${Object.keys(s.stacks).slice(0, 3)}`);
  assert.match(await p.locator('#explain-panel .explain-count').innerText(), /^explained [\d,]+ of [\d,]+ in band/);
  assert.ok(await p.locator('#explain-panel .explain-process').count() >= 1);
  assert.ok(await p.locator('#explain-panel .explain-cgroup').count() >= 1);

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
  try {
    const t = await openPage(browser.context, `${small.url}/?columns=60`);
    tabs.push(t);
    const p = t.page;
    await p.evaluate(({ tick, comm }) => window.heat.send({ type: 'start', preset: 'syscall-latency-log2', tick_ms: tick, comm }), { tick: MANY_TICK_MS, comm: MANY_COMM });
    await p.waitForFunction(() => window.heat.run === 'running' && window.heat.program !== null, null, WAIT);
    // The seam the selection's Explain calls: the 2–4 ms log2 bucket, inclusive bounds.
    await p.evaluate(() => window.heat.explain.start({ band: { lo: 2 ** 21, hi: 2 ** 22 - 1, unit: 'ns' }, keys: ['clock_nanosleep'] }));
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
    await small.stop();
  }
});
