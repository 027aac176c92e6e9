// Browser tests of history in the page (issue 13): a server records a watch (syscall-latency at
// tick 200 ms) while a perl sleeper runs; the page joins it, scrolls back on the timeline, opens a
// past range read through /api/watches/{name}/frames, and its tooltip counts are the JSON's;
// a permalink reopens the same cells in a fresh page; an exported range imported in a fresh,
// offline page draws the same pixels; marks are drawn on the timeline as labelled spans.
// Real server, real store, real preset, Debian's chromium (playwright-core).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, artifact, sleeper, settled } from './harness.mjs';
import { keyText } from '../../static/util.js';

const TICK_MS = 200;
const WATCH = 'syscalls';
const COLUMNS = 120;
const SLEEP_US = 1000; // 1 ms: above the preset's 64 µs, in its open top bucket
const SYSCALL = 'clock_nanosleep';
const WAIT = { timeout: 60000 };
// Ticks with a timestamp before `to` are all in the store once this much later (each is
// written within its tick).
const SETTLE_MS = 2000;
let server, browser, store, work, range;
let tabs = [];

before(async () => {
  store = mkdtempSync(join(tmpdir(), 'heat-history-store-'));
  work = sleeper(SLEEP_US);
  server = await startServer({
    tickMs: TICK_MS,
    config: `[store]\npath = "${store}"\n[[watch]]\nname = "${WATCH}"\npreset = "syscall-latency"\ntick_ms = ${TICK_MS}\nrecord = true\n`,
  });
  browser = await launchBrowser();
  // A few seconds of recording, then a range that ended long enough ago to be complete.
  await waitRecorded(25);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const w = await watchInfo();
  range = { from: w.recorded.first_ms - 3000, to: Date.now() - SETTLE_MS };
});

after(async () => {
  if (work) work.stop();
  if (browser) await browser.close();
  if (server) await server.stop();
  if (store) rmSync(store, { recursive: true, force: true });
});

afterEach(async () => {
  const opened = tabs;
  tabs = [];
  // Errors are taken before closing: a request the close itself cuts off is no error.
  const logged = opened.map((t) => [...t.errors]);
  for (const t of opened) await t.page.close();
  for (const errors of logged) assert.deepEqual(errors, [], 'a tab logged errors');
});

async function watchInfo() {
  const body = await (await fetch(`${server.url}/api/watches`)).json();
  return body.watches.find((w) => w.name === WATCH);
}

async function waitRecorded(ticks) {
  for (let i = 0; i < 300; i++) {
    const w = await watchInfo();
    if (w?.recorded?.ticks >= ticks) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the watch did not record ${ticks} ticks`);
}

async function tab(path, options = {}) {
  const t = await openPage(browser.context, `${server.url}${path}`, options);
  tabs.push(t);
  return t;
}

/** Opens `range` of the watch in a page and waits until it is drawn. */
async function openRange(p) {
  const loads = await p.evaluate(() => window.heat.loads);
  await p.evaluate(({ w, r }) => window.heat.openRange(w, r.from, r.to), { w: WATCH, r: range });
  await p.waitForFunction((n) => window.heat.loads > n && window.heat.mode === 'past', loads, WAIT);
  await settled(p);
}

const pixels = (p) => p.evaluate(() => {
  const c = document.getElementById('heatmap');
  return { w: c.width, h: c.height, data: c.toDataURL('image/png') };
});

test('scroll back on the timeline, then a past range: the tooltip counts are the /frames JSON', async () => {
  const { page: p } = await tab(`/?columns=${COLUMNS}`);
  // The picker reads the watch list when it is used.
  await p.focus('#source');
  await p.waitForFunction(() => [...document.querySelectorAll('#source option')].some((o) => o.value === 'syscalls'), null, WAIT);
  await p.selectOption('#source', WATCH);
  // Choosing the watch joins its program: its recent ticks arrive as history, then live frames.
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.histories.length >= 1 && window.heat.frames > 5, null, WAIT);
  assert.equal(await p.evaluate(() => window.heat.mode), 'live');

  // Drag the timeline to the left: the window moves back in time and the past is read.
  const box = await p.locator('#timeline').boundingBox();
  const y = box.y + box.height / 4;
  const before = Date.now();
  await p.mouse.move(box.x + box.width * 0.8, y);
  await p.mouse.down();
  await p.mouse.move(box.x + box.width * 0.6, y, { steps: 5 });
  await p.mouse.up();
  await p.waitForFunction(() => window.heat.mode === 'past' && window.heat.loads >= 1, null, WAIT);
  const dragged = await p.evaluate(() => window.heat.past);
  assert.ok(dragged.to < before - 1000, `the range ends in the past: ${dragged.to} vs ${before}`);
  assert.equal(dragged.watch, WATCH);

  // The "5 min" button: the last five minutes.
  await p.click('[data-range="300000"]');
  await p.waitForFunction(() => window.heat.past && window.heat.past.to - window.heat.past.from === 300000, null, WAIT);

  // A range that is complete in the store, and the same request as the page's.
  await openRange(p);
  const past = await p.evaluate(() => window.heat.past);
  const body = await (await fetch(`${server.url}/api/watches/${WATCH}/frames?from=${range.from}&to=${range.to}&columns=${COLUMNS}`)).json();
  assert.deepEqual(past.grid, body.slices, 'the page uses the server\'s slices');
  assert.ok(body.frames.length >= 10, `frames in the range: ${body.frames.length}`);

  // The cell of the sleeper: its syscall's open top bucket, in the column with the most of it.
  const rows = await p.evaluate(() => window.heat.rows);
  const top = rows.findIndex((r) => r[1] === null);
  const inTop = (f) => {
    let n = 0;
    for (const a of f.aggregations) {
      if (a.name !== '@latency_us') continue;
      for (const s of a.series) for (const b of s.buckets) if (b[0] === rows[top][0] && b[1] === null) n += b[2];
    }
    return n;
  };
  const best = body.frames.reduce((x, f) => (inTop(f) > inTop(x) ? f : x));
  const expected = inTop(best);
  assert.ok(expected > 0, 'the sleeper is in the top bucket');
  const sleeperKeys = best.aggregations.find((a) => a.name === '@latency_us').series.map((s) => keyText(s.key));
  assert.ok(sleeperKeys.includes(SYSCALL), `keys: ${sleeperKeys}`);
  const pt = await p.evaluate(({ col, row }) => window.heat.cellPoint(col, row), { col: best.slice, row: top });
  await p.mouse.move(pt.x, pt.y);
  await p.waitForSelector('#tooltip:not([hidden]) #tt-count');
  const shown = Number((await p.textContent('#tt-count')).replace(/,/g, ''));
  assert.equal(shown, expected, `tooltip count at slice ${best.slice}`);
  // Clicking it gives the per-key breakdown of that bucket in that slice, as for live cells.
  await p.mouse.click(pt.x, pt.y);
  await p.waitForSelector(`#cell tr[data-key="${SYSCALL}"]`);
  // A slice with nothing recorded is a marked gap, not a zero.
  const gap = await p.evaluate(() => window.heat.model().cols.findIndex((c) => c.meta.missing));
  if (gap >= 0) assert.ok(!body.frames.some((f) => f.slice === gap), 'gaps are the slices the JSON has no column for');
});

test('a permalink reopens the same watch, range and view: identical pixels', async () => {
  const { page: a } = await tab(`/?columns=${COLUMNS}`);
  await openRange(a);
  // A view to carry over: rank scale, p99 only, the sleeper's syscall isolated.
  await a.selectOption('#scale', 'rank');
  await a.uncheck('#ov-p50');
  await a.check('#ov-p99');
  await a.click(`#keys li[data-key="${SYSCALL}"] .key-name`);
  await settled(a);
  const link = await a.evaluate(() => window.heat.permalink());
  assert.ok(!/token/.test(link), link);
  const u = new URL(link);
  assert.equal(u.searchParams.get('watch'), WATCH);
  assert.equal(Number(u.searchParams.get('from')), range.from);
  assert.equal(Number(u.searchParams.get('to')), range.to);
  assert.equal(u.searchParams.get('scale'), 'rank');
  assert.equal(u.searchParams.get('overlays'), 'p99');
  assert.equal(u.searchParams.get('isolate'), SYSCALL);
  // The "Copy link" button shows or copies the same link.
  await a.click('#copy-link');
  assert.equal(await a.evaluate(() => window.heat.permalink()), link);

  // The fresh page must not inherit the first one's saved preferences: reset them first.
  const { page: b } = await tab('/?offline', { connected: false });
  await b.evaluate(() => localStorage.clear());
  await b.goto(link);
  await b.waitForFunction(() => window.heat.mode === 'past' && window.heat.loads >= 1, null, WAIT);
  await settled(b);
  assert.equal(await b.evaluate(() => window.heat.scale), 'rank');
  assert.deepEqual(await b.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name)), [SYSCALL]);
  const [pa, pb] = [await pixels(a), await pixels(b)];
  assert.equal(`${pb.w}x${pb.h}`, `${pa.w}x${pa.h}`);
  assert.ok(pa.data === pb.data, 'the permalink draws the same pixels');
  // Reloading the range (another history length) keeps the isolated key.
  const loads = await b.evaluate(() => window.heat.loads);
  await b.selectOption('#history', '300');
  await b.waitForFunction((n) => window.heat.loads > n, loads, WAIT);
  await settled(b);
  assert.deepEqual(await b.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name)), [SYSCALL]);
});

test('export a range, import the file in a fresh offline page: identical pixels', async () => {
  const { page: a } = await tab(`/?columns=${COLUMNS}&scale=log&overlays=p50,p99`);
  await a.evaluate(() => localStorage.clear());
  await a.reload();
  await a.waitForFunction(() => window.heat && window.heat.hello, null, WAIT);
  await openRange(a);
  const [download] = await Promise.all([a.waitForEvent('download'), a.click('#export-ndjson')]);
  const path = await download.path();
  const text = readFileSync(path, 'utf8');
  const lines = text.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines[0].type, 'export');
  assert.equal(lines[0].format, 'heat-actix-ndjson-1');
  assert.equal(lines[0].from, range.from);
  assert.ok(lines.length > 10, `lines: ${lines.length}`);

  // Offline: no websocket, no server program; the file alone draws the range.
  const { page: b } = await tab(`/?offline&columns=${COLUMNS}&scale=log&overlays=p50,p99`, { connected: false });
  await b.setInputFiles('#import-file', { name: 'range.ndjson', mimeType: 'application/x-ndjson', buffer: Buffer.from(text) });
  await b.waitForFunction(() => window.heat.mode === 'file' && window.heat.loads >= 1, null, WAIT);
  await settled(b);
  await settled(a);
  assert.equal(await b.evaluate(() => window.heat.state), 'connecting', 'the offline page never connected');
  const [pa, pb] = [await pixels(a), await pixels(b)];
  assert.equal(`${pb.w}x${pb.h}`, `${pa.w}x${pa.h}`);
  assert.ok(pa.data === pb.data, 'the imported file draws the same pixels');
  // Hovering the same cell gives the same count in both.
  const col = await a.evaluate(() => window.heat.model().cols.findIndex((c) => !c.meta.missing));
  const rowsA = await a.evaluate(() => window.heat.rows);
  const top = rowsA.findIndex((r) => r[1] === null);
  const countAt = async (p) => {
    const pt = await p.evaluate(({ col, row }) => window.heat.cellPoint(col, row), { col, row: top });
    await p.mouse.move(pt.x, pt.y);
    await p.waitForSelector('#tooltip:not([hidden]) #tt-count');
    return p.textContent('#tt-count');
  };
  assert.equal(await countAt(b), await countAt(a));
  // A file that is not an export is refused with a message, and the picture stays.
  await b.setInputFiles('#import-file', { name: 'bad.ndjson', mimeType: 'application/x-ndjson', buffer: Buffer.from('{"type":"frame"}\n') });
  await b.waitForSelector('#error:not([hidden])');
  assert.match(await b.textContent('#error'), /bad\.ndjson: line 1 is not a heat-actix-ndjson-1 header/);
  assert.equal(await b.evaluate(() => window.heat.mode), 'file');
});

test('marks are drawn on the timeline as labelled spans over their columns', async () => {
  const { page: p } = await tab(`/?columns=${COLUMNS}`);
  await openRange(p);
  const past = await p.evaluate(() => window.heat.past);
  // Marks at chosen columns come through the hook, shaped as /frames returns them (a real
  // trigger's stored mark: triggers.test.mjs).
  const g = past.grid;
  const mark = { from: g.origin + 40 * g.width, to: g.origin + 60 * g.width, until: null, label: 'p99 > 1 ms' };
  await p.evaluate((m) => window.heat.showMarks([m]), mark);
  const drawn = await p.evaluate(() => window.heat.drawnMarks);
  assert.equal(drawn.length, 1);
  assert.equal(drawn[0].label, mark.label);
  // The span covers the mark's 20 columns, under the heatmap's own columns.
  const colA = await p.evaluate(() => window.heat.cellPoint(40, 0));
  const colB = await p.evaluate(() => window.heat.cellPoint(59, 0));
  const tl = await p.locator('#timeline').boundingBox();
  const colW = (colB.x - colA.x) / 19;
  assert.ok(Math.abs(tl.x + drawn[0].x0 - (colA.x - colW / 2)) <= 2, `span starts at column 40: ${tl.x + drawn[0].x0} vs ${colA.x - colW / 2}`);
  assert.ok(Math.abs(tl.x + drawn[0].x1 - (colB.x + colW / 2)) <= 2, 'span ends after column 59');
  // Its pixels are the mark colour (pink), and outside it the lane is dark.
  const px = await p.evaluate(({ x }) => {
    const c = document.getElementById('timeline');
    const dpr = c.width / c.clientWidth;
    const d = c.getContext('2d').getImageData(Math.round(x * dpr), Math.round(c.height * 0.9), 1, 1).data;
    return [...d];
  }, { x: drawn[0].x0 + 1 });
  assert.ok(px[0] > 200 && px[1] < 150, `mark edge pixel ${px}`);
  await p.mouse.move(colA.x, colA.y - 200);
  await p.screenshot({ path: artifact('history-mark.png') });
});
