// Browser test of tail triggers (issue 13): a server records watch `sleepy` (syscall-latency-log2
// at tick 200 ms, only the process named heat-marksleep) with a trigger `slow-sleeps` (p99 above
// 1 ms for 3 ticks). Nothing fires until a perl sleeper of that name sleeps 5 ms in a loop; then
// it fires once, and the page opening the range around it draws the stored mark, labelled with
// the trigger's name, over the columns of the pinned range, which hold the firing tick and the
// sleeper's first slow tick. Real server, real store, real preset, Debian's chromium.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, artifact, sleeper, settled } from './harness.mjs';

const TICK_MS = 200;
const WATCH = 'sleepy';
const TRIGGER = 'slow-sleeps';
/** The sleeper's comm (at most 15 characters): the watch sees no other process. */
const COMM = 'heat-marksleep';
/** 5 ms: the sleeps' p99 bucket is [4194304, 8388607] ns, above the threshold. */
const SLEEP_US = 5000;
const P99_ABOVE_NS = 1000000;
const TICKS = 3;
/** Pinned either side of the firing tick: more than TICKS ticks, so the first slow tick is in it. */
const PIN_S = 2;
/** The opened range: the mark (4 s) with this much either side, 15 s in all. */
const AROUND_MS = 5500;
/** The page's fewest: 250 ms columns over the 15 s range, each holding one or two ticks. */
const COLUMNS = 60;
/** Ticks with a timestamp before a time are all in the store once this much later. */
const SETTLE_MS = 2000;
const POLL_MS = 100;
/** Polls of a condition before giving up (30 s at POLL_MS). */
const POLLS = 300;
const WAIT = { timeout: 60000 };
let server, browser, store, work;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  store = mkdtempSync(join(tmpdir(), 'heat-triggers-store-'));
  server = await startServer({
    tickMs: TICK_MS,
    config: `[store]\npath = "${store}"\n[[watch]]\nname = "${WATCH}"\npreset = "syscall-latency-log2"\n`
      + `tick_ms = ${TICK_MS}\ncomm = "${COMM}"\nrecord = true\n`
      + `[[watch.trigger]]\nname = "${TRIGGER}"\np99_above = ${P99_ABOVE_NS}\nticks = ${TICKS}\n`
      + `pin_before_s = ${PIN_S}\npin_after_s = ${PIN_S}\nkeep_s = 3600\n`,
  });
  browser = await launchBrowser();
});

after(async () => {
  if (work) work.stop();
  if (browser) await browser.close();
  if (server) await server.stop();
  if (store) rmSync(store, { recursive: true, force: true });
});

async function until(what, check) {
  for (let i = 0; i < POLLS; i++) {
    if (await check()) return;
    await sleep(POLL_MS);
  }
  throw new Error(`${what} did not happen`);
}

/** heat_trigger_fired_total of the trigger, whatever the order of its labels (null: absent). */
async function fired() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('heat_trigger_fired_total{')
    && l.includes(`watch="${WATCH}"`) && l.includes(`trigger="${TRIGGER}"`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : null;
}

async function watchInfo() {
  const body = await (await fetch(`${server.url}/api/watches`)).json();
  return body.watches.find((w) => w.name === WATCH);
}

/** Events of a frame's buckets that start above `lo` ns. */
function slowEvents(frame, lo) {
  let n = 0;
  for (const a of frame.aggregations) {
    for (const s of a.series) for (const b of s.buckets ?? []) if (b[0] > lo) n += b[2];
  }
  return n;
}

test('a trigger fires on a sleeper and its mark is on the timeline over the pinned columns', async () => {
  await until('the watch start', async () => Number.isInteger((await watchInfo())?.program));
  assert.deepEqual((await watchInfo()).triggers, [TRIGGER]);
  assert.equal(await fired(), 0, 'nothing fires without the sleeper');

  const started = Date.now();
  work = sleeper(SLEEP_US, { comm: COMM });
  await until('the firing', async () => (await fired()) >= 1);
  const seen = await (await fetch(`${server.url}/api/watches/${WATCH}/frames?from=${started - 60000}&to=${Date.now()}`)).json();
  const marks = seen.marks.filter((m) => m.label === TRIGGER);
  assert.equal(marks.length, 1, JSON.stringify(seen.marks));
  const mark = marks[0];
  const firedMs = mark.from + PIN_S * 1000;
  assert.equal(mark.to - mark.from, 2 * PIN_S * 1000);
  assert.ok(firedMs > started, `fired at ${firedMs}, after the sleeper started at ${started}`);

  // The whole mark and some time either side, complete in the store.
  const range = { from: mark.from - AROUND_MS, to: mark.to + AROUND_MS };
  await until('the range end', async () => Date.now() > range.to + SETTLE_MS);
  assert.equal(await fired(), 1, 'the sleeper goes on: it fires once');

  const t = await openPage(browser.context, `${server.url}/?columns=${COLUMNS}`);
  const p = t.page;
  const loads = await p.evaluate(() => window.heat.loads);
  await p.evaluate(({ w, r }) => window.heat.openRange(w, r.from, r.to), { w: WATCH, r: range });
  await p.waitForFunction((n) => window.heat.loads > n && window.heat.mode === 'past', loads, WAIT);
  await settled(p);

  // The page holds the stored mark and drew it once, with the trigger's name.
  const shown = (await p.evaluate(() => window.heat.marks)).filter((m) => m.label === TRIGGER);
  assert.deepEqual(shown.map((m) => [m.from, m.to]), [[mark.from, mark.to]]);
  const drawn = (await p.evaluate(() => window.heat.drawnMarks)).filter((m) => m.label === TRIGGER);
  assert.equal(drawn.length, 1, 'one span with the trigger\'s name');

  // Its span starts in the column holding mark.from and ends in the one holding mark.to.
  const { grid } = await p.evaluate(() => window.heat.past);
  // The page's columns are the server's: the same read gives the frames in them.
  const body = await (await fetch(`${server.url}/api/watches/${WATCH}/frames?from=${range.from}&to=${range.to}&columns=${COLUMNS}`)).json();
  assert.deepEqual(grid, body.slices);
  const { frames } = body;
  const colOf = (ms) => Math.floor((ms - grid.origin) / grid.width);
  const [first, last] = [colOf(mark.from), colOf(mark.to - 1)];
  assert.ok(first > 0 && last < grid.count - 1, `the mark is inside the range: ${first}..${last} of ${grid.count}`);
  const tl = await p.locator('#timeline').boundingBox();
  const a = await p.evaluate((c) => window.heat.cellPoint(c, 0), first);
  const b = await p.evaluate((c) => window.heat.cellPoint(c, 0), last);
  const colW = (b.x - a.x) / Math.max(1, last - first);
  const x0 = tl.x + drawn[0].x0, x1 = tl.x + drawn[0].x1;
  assert.ok(x0 >= a.x - colW / 2 - 1 && x0 <= a.x + colW / 2 + 1, `span starts in column ${first}: ${x0} vs ${a.x} ± ${colW / 2}`);
  assert.ok(x1 >= b.x - colW / 2 - 1 && x1 <= b.x + colW / 2 + 1, `span ends in column ${last}: ${x1} vs ${b.x} ± ${colW / 2}`);

  // Under it: the firing tick's column, slow, and the sleeper's first slow column.
  const firing = frames.filter((f) => f.slice === colOf(firedMs));
  assert.ok(firing.some((f) => slowEvents(f, P99_ABOVE_NS) > 0), `the firing column ${colOf(firedMs)} holds slow sleeps`);
  const slow = frames.filter((f) => slowEvents(f, P99_ABOVE_NS) > 0).map((f) => f.slice);
  assert.ok(slow.length > 0, 'the range holds the sleeps');
  const firstSlow = Math.min(...slow);
  assert.ok(firstSlow >= first && firstSlow <= colOf(firedMs), `the first slow column ${firstSlow} is under the mark (${first}..${last})`);

  // Its pixels are the mark colour (pink).
  const px = await p.evaluate(({ x }) => {
    const c = document.getElementById('timeline');
    const dpr = c.width / c.clientWidth;
    return [...c.getContext('2d').getImageData(Math.round(x * dpr), Math.round(c.height * 0.9), 1, 1).data];
  }, { x: drawn[0].x0 + 1 });
  assert.ok(px[0] > 200 && px[1] < 150, `mark edge pixel ${px}`);
  await p.screenshot({ path: artifact('trigger-mark.png') });
  const errors = [...t.errors];
  await p.close();
  assert.deepEqual(errors, [], 'the page logged errors');
});
