// Browser tests of shared programs (protocol v1.1, issue 12): several tabs of one browser watch
// one program; a tab that joins shows the program's past at once; the page reads compact
// frames and draws what a JSON session gets; a gap in `seq` is fetched back into its place.
// Real server, real preset, Debian's chromium (playwright-core). Waits are for conditions.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, openPage, artifact } from './harness.mjs';
import { keyText } from '../../static/util.js';

const TICK_MS = 200;
const PRESET = 'syscall-latency';
const WAIT = { timeout: 60000 };
let server, browser;
let tabs = [];

before(async () => {
  server = await startServer({ tickMs: TICK_MS });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

// Every tab of a test is closed after it; a page error or console error in any fails the test.
afterEach(async () => {
  const opened = tabs;
  tabs = [];
  // Errors are taken before closing: a request the close itself cuts off is no error.
  const logged = opened.map((t) => [...t.errors]);
  for (const t of opened) await t.page.close();
  for (const errors of logged) assert.deepEqual(errors, [], 'a tab logged errors');
});

/**
 * A tab (page) of the shared browser, with what its websocket carried counted: binary and
 * text messages received, and the JSON messages it sent.
 */
async function tab(path = '/', options = {}) {
  const wire = { binary: 0, text: 0, sent: [] };
  const t = await openPage(browser.context, `${server.url}${path}`, {
    ...options,
    beforeLoad: (page) => page.on('websocket', (ws) => {
      ws.on('framereceived', (f) => { if (typeof f.payload === 'string') wire.text++; else wire.binary++; });
      ws.on('framesent', (f) => { if (typeof f.payload === 'string') wire.sent.push(JSON.parse(f.payload)); });
    }),
  });
  t.wire = wire;
  tabs.push(t);
  return t;
}

async function startPreset(p) {
  await p.selectOption('#preset', PRESET);
  await p.fill('#tick', String(TICK_MS));
  await p.click('#start');
  await p.waitForFunction((name) => window.heat.run === 'running' && window.heat.started?.preset === name, PRESET, WAIT);
}

const liveFrames = (p, n) => p.waitForFunction((k) => window.heat.frames >= k, n, WAIT);
const viewersText = (p, text) => p.waitForFunction((t) => document.getElementById('viewers').textContent === t, text, WAIT);

/** A frame's buckets of one aggregation as `heat.column` gives them: {"key|lo|hi": count}. */
function cellsOf(frame, name) {
  const cells = {};
  const agg = frame.aggregations.find((a) => a.name === name);
  for (const s of agg ? agg.series : []) {
    for (const [lo, hi, c] of s.buckets) {
      const k = `${keyText(s.key)}|${lo}|${hi}`;
      cells[k] = (cells[k] || 0) + c;
    }
  }
  return cells;
}

const total = (cells) => Object.values(cells).reduce((a, b) => a + b, 0);

test('a second tab on the same preset shows the first tab\'s past at once; both count 2 viewers', async () => {
  const one = (await tab()).page;
  await startPreset(one);
  await liveFrames(one, 10);
  await viewersText(one, 'shared · 1 viewer');

  const two = (await tab()).page;
  await startPreset(two);
  // The history is the first thing after `started`: wait for it, then look before more arrives.
  await two.waitForFunction(() => window.heat.histories.length > 0, null, WAIT);
  const joined = await two.evaluate(() => {
    const h = window.heat;
    const seqs = h.seqs;
    return { started: h.started, history: h.histories[0], seqs, columns: seqs.map((s) => h.column(s)) };
  });
  assert.equal(joined.history.liveBefore, 0, 'the history came before any live frame');
  assert.ok(joined.history.frames >= 10, `the history holds tab 1's ticks (${joined.history.frames})`);
  assert.equal(joined.history.from, joined.started.first_seq);
  assert.equal(joined.seqs[0], joined.started.first_seq, 'the first column is the history\'s oldest frame');
  assert.equal(joined.started.first_seq, 1, 'the ring holds the program from its first frame');
  joined.seqs.forEach((s, i) => assert.equal(s, joined.seqs[0] + i, 'consecutive seqs, no gap, no duplicate'));
  assert.ok(joined.columns.every((c) => !c.missing));

  // The same seqs hold the same counts in both tabs.
  const first = await one.evaluate((seqs) => seqs.map((s) => window.heat.column(s)), joined.seqs.slice(0, joined.history.frames));
  assert.deepEqual(joined.columns.slice(0, joined.history.frames), first);
  assert.ok(first.some((c) => total(c.cells) > 0), 'the compared columns have events');

  await viewersText(one, 'shared · 2 viewers');
  await viewersText(two, 'shared · 2 viewers');
  assert.equal(await one.evaluate(() => window.heat.program), joined.started.program, 'one program');
  await liveFrames(two, joined.history.frames + 5);
  await one.screenshot({ path: '/tmp/heat-shared-tab1.png' });
  await two.screenshot({ path: '/tmp/heat-shared-tab2.png' });

  // Tab 1 leaves: it gets `stopped` without a final frame; tab 2 watches on, alone.
  await one.click('#stop');
  await one.waitForFunction(() => window.heat.run === 'stopped', null, WAIT);
  assert.notEqual(await one.evaluate(() => window.heat.lastFrame?.final), true, 'no final frame for a viewer leaving');
  await viewersText(two, 'shared · 1 viewer');
  const before = await two.evaluate(() => window.heat.frames);
  await liveFrames(two, before + 3);
  // The last viewer's stop flushes the program: a final frame, then `stopped`.
  await two.click('#stop');
  await two.waitForFunction(() => window.heat.run === 'stopped', null, WAIT);
  assert.equal(await two.evaluate(() => window.heat.lastFrame?.final), true, 'the last viewer gets the final frame');
});

test('the page reads compact frames and draws what a JSON session gets', async () => {
  const t = await tab();
  const p = t.page;
  const hello = await p.evaluate(() => window.heat.hello);
  assert.ok(hello.encodings.includes('compact'));
  await startPreset(p);
  await liveFrames(p, 5);
  const start = t.wire.sent.find((m) => m.type === 'start');
  assert.equal(start.encoding, 'compact', 'the page asks for compact frames');
  assert.ok(t.wire.binary >= 5, `binary messages on the page's websocket (${t.wire.binary})`);
  assert.equal(await p.evaluate(() => window.heat.binary.messages), t.wire.binary);

  // A plain JSON session on the same program, from a page of the server's origin that does
  // not connect by itself (?offline).
  const j = await tab('/?offline', { connected: false });
  const json = await j.page.evaluate(({ preset, tick }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/ws`, ['heat-actix.v1']);
    const got = { started: null, frames: [] };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') { reject(new Error('binary message on a JSON session')); return; }
      const m = JSON.parse(ev.data);
      if (m.type === 'hello') ws.send(JSON.stringify({ type: 'start', preset, tick_ms: tick }));
      if (m.type === 'started') got.started = m;
      if (m.type === 'history') got.frames.push(...m.frames);
      if (m.type === 'frame') got.frames.push(m);
      if (m.type === 'error') reject(new Error(m.message));
      if (got.frames.length >= 12 && m.type === 'frame') { ws.close(); resolve(got); }
    };
    ws.onerror = () => reject(new Error('websocket error'));
  }), { preset: PRESET, tick: TICK_MS });
  assert.equal(j.wire.binary, 0);
  assert.equal(json.started.program, await p.evaluate(() => window.heat.program), 'the JSON session joined the same program');

  const name = await p.evaluate(() => window.heat.aggregation);
  const seqs = json.frames.map((f) => f.seq);
  await p.waitForFunction((last) => window.heat.seqs.includes(last), seqs[seqs.length - 1], WAIT);
  const page = await p.evaluate(({ seqs, name }) => seqs.map((s) => window.heat.column(s, name)), { seqs, name });
  let compared = 0, events = 0;
  for (const [i, f] of json.frames.entries()) {
    if (!page[i]) continue; // scrolled out of the page's history
    assert.equal(page[i].missing, false);
    assert.deepEqual(page[i].cells, cellsOf(f, name), `seq ${f.seq}: the page's column is the JSON frame's buckets`);
    compared++;
    events += total(page[i].cells);
  }
  assert.ok(compared >= 10, `compared ${compared} frames`);
  assert.ok(events > 0, 'the compared frames have events');
});

test('a gap in seq is fetched and filled in place; a duplicate seq is ignored', async () => {
  const one = (await tab()).page;
  await startPreset(one);
  const two = (await tab()).page; // a second viewer that misses nothing: the reference
  await startPreset(two);
  await liveFrames(one, 5);

  // The page drops the next 3 live frames as if the server had skipped them for it.
  await one.evaluate(() => window.heat.dropLive(3));
  await one.waitForFunction(() => window.heat.refetched >= 3, null, WAIT);
  const s = await one.evaluate(() => {
    const h = window.heat;
    return { dropped: h.dropped, refetched: h.refetched, missing: h.missing, fetches: h.fetchesSent, seqs: h.seqs, histories: h.histories, frames: h.frames };
  });
  assert.equal(s.dropped, 3);
  assert.equal(s.refetched, 3);
  assert.deepEqual(s.missing, [], 'no tick waits for its frame');
  assert.equal(s.fetches, 1, 'one fetch for the gap');
  const answer = s.histories[s.histories.length - 1];
  assert.equal(answer.frames, 3);
  assert.equal(answer.to - answer.from, 2);
  assert.ok(answer.liveBefore > 0, 'the fetch answer came after live frames');
  s.seqs.forEach((q, i) => assert.equal(q, s.seqs[0] + i, 'every tick has its column, in seq order'));
  assert.equal(await one.textContent('#dropped'), '3 (3 fetched)');

  // The fetched columns hold what the other viewer got live.
  const gap = [answer.from, answer.from + 1, answer.to];
  await two.waitForFunction((last) => window.heat.seqs.includes(last), answer.to, WAIT);
  const filled = await one.evaluate((g) => g.map((q) => window.heat.column(q)), gap);
  const reference = await two.evaluate((g) => g.map((q) => window.heat.column(q)), gap);
  assert.deepEqual(filled, reference);
  assert.ok(filled.every((c) => !c.missing));
  assert.equal(await one.evaluate(() => window.heat.model().cols.filter((c) => c.meta.missing).length), 0, 'no red gap mark left');
  await one.screenshot({ path: artifact('shared-gap-filled.png') });

  // A frame whose seq the page holds already changes nothing.
  const dup = await one.evaluate(() => {
    const h = window.heat;
    const f = structuredClone(h.lastFrame);
    const before = { n: h.seqs.length, col: h.column(f.seq), frames: h.frames };
    for (const a of f.aggregations) for (const x of a.series) if (x.buckets) x.buckets = x.buckets.map(([lo, hi, c]) => [lo, hi, c + 1000]);
    h.inject(f);
    return { before, after: { n: h.seqs.length, col: h.column(f.seq), frames: h.frames } };
  });
  assert.deepEqual(dup.after, dup.before, 'the duplicate added no column and changed nothing');
});

/**
 * Red pixels of the gap marks (#ff5c5c, heatmap.js) in the strip under the plot, per column
 * of the history: runs in the page.
 */
function gapMarks() {
  const h = window.heat;
  const canvas = document.getElementById('heatmap');
  const ctx = canvas.getContext('2d');
  const rect = canvas.getBoundingClientRect();
  const dpr = canvas.width / rect.width;
  const [a] = h.visibleRows;
  const m = h.model();
  const marks = [];
  for (let col = 0; col < m.cols.length; col++) {
    const lowest = h.cellPoint(col, a), above = h.cellPoint(col, a + 1);
    const bottom = lowest.y + (lowest.y - above.y) / 2; // the plot's lower edge
    const x0 = Math.floor((lowest.x - rect.left) * dpr - 12 * dpr);
    const y0 = Math.ceil((bottom - rect.top) * dpr);
    const data = ctx.getImageData(Math.max(0, x0), y0, Math.ceil(12 * dpr), Math.ceil(6 * dpr)).data;
    let red = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] === 0xff && data[i + 1] === 0x5c && data[i + 2] === 0x5c) red++;
    marks.push(red > 0);
  }
  return marks;
}

test('a skipped tick keeps its place: a marked empty column until its frame arrives (offline)', async () => {
  const { page: p } = await tab('/?offline&columns=60', { connected: false });
  for (const k of ['avg', 'p50', 'p90', 'p99']) await p.setChecked(`#ov-${k}`, false);
  const frame = (seq) => ({
    type: 'frame', seq, ts_ms: 1763788800000 + seq * 1000, interval_ms: 1000,
    aggregations: [{ name: '@lat_us', kind: 'lhist', series: [{ key: ['read'], buckets: [[seq, seq, 10 * seq]] }] }],
  });
  await p.evaluate((frames) => {
    const h = window.heat;
    h.inject({ type: 'started', session: 'offline', backend: 'test', tick_ms: 1000, preset: null, unit: 'us', program: 1, shared: false, viewers: 1, first_seq: 1,
      aggregations: [{ name: '@lat_us', kind: 'lhist', layout: { min: 0, max: 20, step: 1 } }] });
    for (const f of frames) h.inject(f); // 1…5, then 9…12: 6, 7 and 8 were skipped
  }, [1, 2, 3, 4, 5, 9, 10, 11, 12].map(frame));
  const gap = await p.evaluate(() => ({ seqs: window.heat.seqs, missing: window.heat.missing, dropped: window.heat.dropped, col7: window.heat.column(7) }));
  assert.deepEqual(gap.seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'the skipped ticks have their columns');
  assert.deepEqual(gap.missing, [6, 7, 8]);
  assert.equal(gap.dropped, 3);
  assert.deepEqual(gap.col7, { seq: 7, missing: true, cells: {} });
  assert.equal(await p.textContent('#viewers'), 'private · 1 viewer');
  const before = await p.evaluate(gapMarks);
  assert.deepEqual(before, [false, false, false, false, false, true, true, true, false, false, false, false], 'red marks under the skipped ticks');
  await p.screenshot({ path: artifact('shared-gap-open.png') });

  // Their frames, as a fetch answer brings them (7 twice: the second is a duplicate).
  await p.evaluate((frames) => window.heat.inject({ type: 'history', from: 6, to: 8, frames }), [6, 7, 8].map(frame).concat([{ ...frame(7), aggregations: [] }]));
  const filled = await p.evaluate(() => ({ seqs: window.heat.seqs, missing: window.heat.missing, refetched: window.heat.refetched, col7: window.heat.column(7) }));
  assert.deepEqual(filled.seqs, gap.seqs);
  assert.deepEqual(filled.missing, []);
  assert.equal(filled.refetched, 3);
  assert.deepEqual(filled.col7, { seq: 7, missing: false, cells: { 'read|7|7': 70 } });
  assert.deepEqual(await p.evaluate(gapMarks), before.map(() => false), 'no mark once filled');
  assert.equal(await p.textContent('#dropped'), '3 (3 fetched)');
  await p.screenshot({ path: artifact('shared-gap-closed.png') });
});
