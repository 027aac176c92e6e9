// Browser tests of box selection (issue 16, the page's part): a server runs a recorded watch of
// syscall-latency-log2 (tick 500 ms) filtered to one comm; perl workloads of that comm: 3 ms
// sleepers among background noise (getppid bursts, 0.5 ms selects, a 3 ms select loop).
// Dragging over the 2–4 ms band while the sleepers ran ranks clock_nanosleep first; Compare puts the key that changed first; a box round-trips through the permalink (a
// recorded range, same cells); Explain on a recorded range says stacks are live only and joins
// the watch's live program; the flame graph's search highlights the matching frames and its
// folded export parses back to the same counts.
// Real server, real preset, Debian's chromium (playwright-core). Waits are for conditions.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, artifact, sleeper, settled, drag } from './harness.mjs';

const TICK_MS = 500;
const WATCH = 'sys';
const SLEEP_US = 3000;          // 3 ms a call: inside log2's [2^21, 2^22) ns bucket (2.1–4.2 ms)
const BAND_NS = 3_000_000;      // a value in that bucket, to find its row
const PHASE_TICKS = 6;          // ticks each workload phase lasts
const WAIT = { timeout: 60000 };
const SYSCALL = 'clock_nanosleep';
// Every workload of these tests takes this comm, and the programs measured see only it: other
// tests on a shared machine run 3 ms sleepers and selects of their own, in the same band.
const COMM = 'heat-selwork';
// Ticks with a timestamp before the newest one minus this are all in the store (each is written
// within its tick).
const SETTLE_MS = 2000;
const RANGE_TICKS = 60; // the recorded range opened, as many as the page's columns

let server, browser, store;
let tabs = [];
const workloads = [];

before(async () => {
  store = mkdtempSync(join(tmpdir(), 'heat-select-store-'));
  server = await startServer({
    tickMs: TICK_MS,
    config: `[store]\npath = "${store}"\n[[watch]]\nname = "${WATCH}"\npreset = "syscall-latency-log2"\ntick_ms = ${TICK_MS}\ncomm = "${COMM}"\nrecord = true\n`,
  });
  browser = await launchBrowser();
});

after(async () => {
  for (const w of workloads) w.stop();
  if (browser) await browser.close();
  if (server) await server.stop();
  if (store) rmSync(store, { recursive: true, force: true });
});

afterEach(async () => {
  const opened = tabs;
  tabs = [];
  const logged = opened.map((t) => [...t.errors]);
  for (const t of opened) await t.page.close();
  for (const errors of logged) assert.deepEqual(errors, [], 'a tab logged errors');
});

async function tab(path, options = {}) {
  const t = await openPage(browser.context, `${server.url}${path}`, options);
  tabs.push(t);
  return t.page;
}

/** Background noise: short syscalls and 0.5 ms selects, all the time. */
function noise() {
  const child = spawn('perl', ['-e', `$0 = "${COMM}"; while (1) { getppid() for 1..50; select(undef, undef, undef, 0.0005) }`], { stdio: 'ignore' });
  const w = { stop() { child.kill('SIGKILL'); } };
  workloads.push(w);
  return w;
}

/** A perl loop of 3 ms selects (pselect6 or select, as glibc issues it): another key in the band. */
function selecter() {
  const child = spawn('perl', ['-e', `$0 = "${COMM}"; select(undef, undef, undef, ${SLEEP_US / 1e6}) while 1`], { stdio: 'ignore' });
  const w = { stop() { child.kill('SIGKILL'); } };
  workloads.push(w);
  return w;
}

function track(w) { workloads.push(w); return w; }

/** SLEEPERS 3 ms sleepers as one workload. */
const SLEEPERS = 4;
function sleepers() {
  const all = Array.from({ length: SLEEPERS }, () => sleeper(SLEEP_US, { comm: COMM }));
  return track({ stop() { for (const s of all) s.stop(); } });
}

/**
 * A fresh page running syscall-latency-log2 for COMM only (a start with `comm`: the page's own
 * start button sends none), live frames arriving.
 */
async function startFiltered() {
  const p = await tab('/?columns=120');
  await p.evaluate(({ tick, comm }) => window.heat.send({ type: 'start', preset: 'syscall-latency-log2', tick_ms: tick, comm }), { tick: TICK_MS, comm: COMM });
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.started?.preset === 'syscall-latency-log2' && window.heat.frames > 2, null, WAIT);
  return p;
}

/**
 * Joins the watch's program in a fresh page and waits for live frames. (The page joins with
 * the watch's preset and tick, not its comm: live it sees every process; the recording is
 * the watch's, filtered.)
 */
async function joinWatch(columns = 120) {
  const p = await tab(`/?watch=${WATCH}&columns=${columns}`);
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.started?.preset === 'syscall-latency-log2' && window.heat.frames > 2, null, WAIT);
  return p;
}

/** Waits until `n` more live frames arrived. */
async function ticks(p, n) {
  const f = await p.evaluate(() => window.heat.frames);
  await p.waitForFunction((k) => window.heat.frames >= k, f + n, WAIT);
}

/**
 * Model columns (indices) where `key` has events in the row holding `value`, and that row;
 * only the columns in the picture.
 */
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

/** The longest run of consecutive column indices in `cols`. */
function longestRun(cols) {
  let best = [cols[0], cols[0]], start = cols[0];
  for (let i = 1; i <= cols.length; i++) {
    if (i < cols.length && cols[i] === cols[i - 1] + 1) continue;
    if (cols[i - 1] - start > best[1] - best[0]) best = [start, cols[i - 1]];
    if (i < cols.length) start = cols[i];
  }
  return best;
}

test('select the 2–4 ms band over a 3 ms sleeper: clock_nanosleep is the most over-represented key', async () => {
  const p = await startFiltered();
  noise();
  const inBand = selecter(); // in the same band all along: not what is different there
  await ticks(p, PHASE_TICKS);
  const sleep = sleepers();
  await ticks(p, PHASE_TICKS + 2);
  sleep.stop();
  await ticks(p, PHASE_TICKS);
  inBand.stop();
  await p.evaluate(() => window.heat.pause());
  await settled(p);

  await p.evaluate(() => { window.announced = []; addEventListener('heat-selection', (e) => window.announced.push(e.detail)); });
  const { row, cols } = await columnsOf(p, SYSCALL, BAND_NS);
  assert.ok(cols.length >= PHASE_TICKS, `the sleeper's columns: ${cols}`);
  const [c0, c1] = longestRun(cols);
  // The sleeper's whole columns only: its first and last were partly without it.
  await drag(p, [c0 + 1, row], [c1 - 1, row]);
  const sel = await p.evaluate(() => window.heat.selection);
  assert.ok(sel, 'a box is selected');
  assert.ok(sel.lo <= BAND_NS && BAND_NS <= sel.hi && sel.hi < 2 * BAND_NS, `the box is the 2–4 ms band: ${JSON.stringify(sel)}`);
  const ranking = await p.evaluate(() => window.heat.ranking);
  assert.equal(ranking.keys[0].name, SYSCALL, `ranking: ${JSON.stringify(ranking.keys.slice(0, 5))} sel ${JSON.stringify(sel)} rows ${JSON.stringify(await p.evaluate(() => window.heat.rows))} row ${row}`);
  assert.ok(ranking.keys[0].lift > 1, 'over-represented');
  assert.ok(ranking.outside > ranking.inside, 'the rest of the picture is counted');
  assert.equal(await p.locator('#select-panel .sel-ranking tbody tr').first().getAttribute('data-key'), SYSCALL);
  // No cell breakdown was opened by the drag.
  assert.equal(await p.locator('#cell').isHidden(), true);

  await p.mouse.move(1, 1);
  await settled(p);
  await p.screenshot({ path: artifact('select-ranking.png') });

  const first = await p.evaluate(() => window.announced[0]);
  assert.deepEqual(first.box, sel, 'the box is announced once drawn');
  assert.deepEqual([first.band.lo, first.band.hi, first.band.agg], [sel.lo, sel.hi, '@latency_ns']);
  // A click without a drag still opens the cell's breakdown, and leaves the box alone.
  const pt = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), [c0 + 1, row]);
  await p.mouse.click(pt.x, pt.y);
  await p.waitForSelector('#cell:not([hidden])');
  assert.deepEqual(await p.evaluate(() => window.heat.selection), sel);

  // Clicking the key isolates it.
  await p.click(`#select-panel .sel-ranking tr[data-key="${SYSCALL}"]`);
  const shown = await p.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name));
  assert.deepEqual(shown, [SYSCALL]);

  // The box moves (drag inside it one row up) and resizes (drag its left edge one column left).
  await settled(p);
  const box = await p.evaluate(() => window.heat.selectionRect);
  const rowH = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r).y - window.heat.cellPoint(c, r + 1).y, [c0 + 1, row]);
  const cx = (box.x0 + box.x1) / 2, cy = (box.y0 + box.y1) / 2;
  await p.mouse.move(cx, cy);
  await p.mouse.down();
  await p.mouse.move(cx, cy - rowH, { steps: 6 });
  await p.mouse.up();
  const moved = await p.evaluate(() => window.heat.selection);
  assert.deepEqual([moved.lo, moved.hi, moved.from, moved.to], [sel.lo * 2, sel.hi * 2 + 1, sel.from, sel.to]);
  const rect = await p.evaluate(() => window.heat.selectionRect);
  const left = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), [c0, row + 1]);
  const y = (rect.y0 + rect.y1) / 2;
  await p.mouse.move(rect.x0 + 1, y);
  await p.mouse.down();
  await p.mouse.move(left.x, y, { steps: 6 });
  await p.mouse.up();
  const resized = await p.evaluate(() => window.heat.selection);
  assert.ok(resized.from < moved.from && resized.to === moved.to, `resized: ${JSON.stringify(resized)} from ${JSON.stringify(moved)}`);

  // Escape clears it.
  await p.keyboard.press('Escape');
  assert.equal(await p.evaluate(() => window.heat.selection), null);
  assert.equal(await p.evaluate(() => window.announced.at(-1).box), null, 'clearing is announced');
  assert.equal(await p.locator('#select-panel').isHidden(), true);
});

test('compare: a baseline range, then a target range where a sleeper started: its key comes first', async () => {
  const p = await startFiltered();
  const sel = selecter();
  await ticks(p, PHASE_TICKS + 1);
  const sleep = sleepers();
  await ticks(p, PHASE_TICKS + 1);
  sleep.stop();
  sel.stop();
  await ticks(p, 1);
  await p.evaluate(() => window.heat.pause());
  await settled(p);

  const { row, cols } = await columnsOf(p, SYSCALL, BAND_NS);
  const [s0, s1] = longestRun(cols);
  assert.ok(s1 - s0 >= PHASE_TICKS - 2, `the sleeper's columns: ${cols}`);
  // Baseline: the columns before the sleeper (the selecter alone); target: the sleeper's.
  await drag(p, [s0 - PHASE_TICKS + 1, row], [s0 - 2, row]);
  await p.click('#select-panel .sel-baseline');
  assert.ok(await p.evaluate(() => window.heat.baseline));
  await drag(p, [s0 + 1, row], [s1 - 1, row]);
  const c = await p.evaluate(() => window.heat.comparison);
  const boxes = await p.evaluate(() => [window.heat.baseline, window.heat.selection, window.heat.rows]);
  assert.equal(c.keys[0].name, SYSCALL, `compare: ${JSON.stringify(c.keys.slice(0, 4))} ${JSON.stringify(boxes)} row ${row} ${s0}-${s1} ${cols}`);
  assert.ok(c.keys[0].change > 0, 'it grew');
  assert.equal(await p.locator('#select-panel .sel-compare-keys tbody tr').first().getAttribute('data-key'), SYSCALL);
  assert.ok(c.rows.length >= 1, 'per-bucket change');

  // Differential flame graph when both sides have stacks.
  const diff = await p.evaluate(async () => {
    const { parseFolded } = await import('/static/flame.js');
    window.heat.compareStacks(parseFolded('perl;main;select 100\nperl;main;work 100\n'), parseFolded('perl;main;select 100\nperl;main;nanosleep;clock_nanosleep 300\n'));
    await new Promise((r) => requestAnimationFrame(r));
    const fills = [...document.querySelectorAll('#select-panel .sel-flame g.frame')].map((g) => [g.dataset.name, g.querySelector('rect').getAttribute('fill')]);
    return Object.fromEntries(fills);
  });
  assert.match(diff.nanosleep, /^rgb\(255,\d+,\d+\)$/, 'grew: red');
  assert.match(diff.select, /^rgb\(\d+,\d+,255\)$/, 'shrank (share of samples): blue');
  assert.equal(diff.work, undefined, 'baseline-only frames have no width');
  await p.mouse.move(1, 1); // no tooltip over the boxes
  await settled(p);
  await p.screenshot({ path: artifact('select-compare.png') });
  await p.locator('#select-panel .sel-flame').scrollIntoViewIfNeeded();
  await p.locator('#select-panel').screenshot({ path: artifact('select-flame.png') });
});

test('a box round-trips through the permalink (a recorded range: same box, same cells); Explain there is live only', async () => {
  noise();
  selecter();
  const sleep = sleepers();
  const a = await joinWatch(RANGE_TICKS); // one tick per column in the range below
  await ticks(a, PHASE_TICKS + 2);
  sleep.stop();
  await ticks(a, SETTLE_MS / TICK_MS + 2);
  // A range that ended SETTLE_MS before the newest tick: all in the store, so both pages read
  // the same frames.
  const to = (await a.evaluate(() => window.heat.lastFrame.ts_ms)) - SETTLE_MS;
  const from = to - RANGE_TICKS * TICK_MS;
  const loads = await a.evaluate(() => window.heat.loads);
  await a.evaluate(({ w, from, to }) => window.heat.openRange(w, from, to), { w: WATCH, from, to });
  await a.waitForFunction((n) => window.heat.loads > n && window.heat.mode === 'past', loads, WAIT);
  await settled(a);
  const { row, cols } = await columnsOf(a, SYSCALL, BAND_NS);
  const [r0, r1] = longestRun(cols);
  assert.ok(r1 - r0 >= 2, `recorded sleeper columns: ${cols}`);
  await drag(a, [r0 + 1, row], [r1 - 1, row]);
  const sel = await a.evaluate(() => window.heat.selection);
  const ranking = await a.evaluate(() => window.heat.ranking);
  assert.equal(ranking.keys[0].name, SYSCALL, 'on a recorded range too');
  const link = await a.evaluate(() => window.heat.permalink());
  assert.match(link, /[?&]sel=/);

  const b = await tab(link.slice(link.indexOf('/?')));
  await b.waitForFunction(() => window.heat.mode === 'past' && window.heat.loads >= 1, null, WAIT);
  await settled(b);
  assert.deepEqual(await b.evaluate(() => window.heat.selection), sel);
  assert.deepEqual(await b.evaluate(() => window.heat.ranking), ranking, 'the same cells, the same ranking');
  assert.equal(await b.evaluate(() => window.heat.permalink()), link);

  // Explain on the past: live only, and an offer to run the same band now on the watch.
  await b.click('#select-panel .sel-explain');
  await b.waitForSelector('#select-panel .sel-note');
  assert.match(await b.locator('#select-panel .sel-note').innerText(), /live only/);
  const band = await b.evaluate(() => window.heat.band);
  await b.click('#select-panel .sel-run-now');
  await b.waitForFunction(() => window.heat.mode === 'live' && window.heat.run === 'running', null, WAIT);
  await b.waitForFunction(() => !/Joining/.test(document.querySelector('#select-panel .sel-note')?.textContent ?? ''), null, WAIT);
  assert.equal(await b.evaluate(() => window.heat.band.lo), band.lo, 'the same band');
});

test('flame graph: search highlights the matching frames; folded export parses back to the same counts', async () => {
  const p = await tab('/?offline', { connected: false });
  const r = await p.evaluate(async () => {
    const { FlameGraph, parseFolded, toFolded } = await import('/static/flame.js');
    const text = 'perl;main;Time::HiRes::usleep;__GI___clock_nanosleep;entry_SYSCALL_64_[k];do_nanosleep_[k] 60\n' +
      'perl;main;Time::HiRes::usleep;__GI___clock_nanosleep 5\n' +
      'perl;main;getppid 30\nperl;main;select;__select 5\n';
    const box = document.createElement('div');
    box.style.width = '900px';
    document.body.append(box);
    const fg = new FlameGraph(box);
    const stacks = parseFolded(text);
    fg.setStacks(stacks, { title: 'fixture' });
    const found = fg.search('nanosleep');
    const marked = [...box.querySelectorAll('g.frame.match')].map((g) => g.dataset.name).sort();
    const fill = box.querySelector('g.frame.match rect').getAttribute('fill');
    // Typed into the search box: the same highlight.
    fg.search('');
    const input = box.querySelector('.flame-search');
    input.value = '/^__select$/';
    input.dispatchEvent(new Event('input'));
    const typed = [...box.querySelectorAll('g.frame.match')].map((g) => g.dataset.name);
    // Click zooms: the clicked frame spans the width.
    box.querySelector('g.frame[data-name="main"]').dispatchEvent(new MouseEvent('click', { bubbles: true }));
    const mainW = Number(box.querySelector('g.frame[data-name="main"] rect').getAttribute('width'));
    const getppidZoomed = Number(box.querySelector('g.frame[data-name="getppid"] rect').getAttribute('width'));
    fg.reset();
    const getppidAll = Number(box.querySelector('g.frame[data-name="getppid"] rect').getAttribute('width'));
    const svg = fg.toSVG();
    const png = await fg.toPNG();
    return { found, marked, fill, typed, mainW, getppidZoomed, getppidAll, folded: toFolded(stacks), back: Object.fromEntries(parseFolded(toFolded(stacks))), stacks: Object.fromEntries(stacks), svg: svg.slice(0, 60), png: png.size };
  });
  assert.deepEqual(r.found, { matched: 65, total: 100 });
  assert.deepEqual(r.marked, ['__GI___clock_nanosleep', 'do_nanosleep_[k]']);
  assert.equal(r.fill, 'rgb(230,0,230)');
  assert.deepEqual(r.typed, ['__select']);
  assert.ok(r.mainW > 890, `zoomed frame spans the width: ${r.mainW}`);
  assert.ok(r.getppidZoomed > r.getppidAll * 0.99 && r.getppidAll > 0, 'zooming to the root-level parent of all keeps widths (main is 100%)');
  assert.deepEqual(r.back, r.stacks, 'folded export parses back to the same counts');
  assert.match(r.svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.ok(r.png > 1000, 'a PNG');
});
