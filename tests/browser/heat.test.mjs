// Browser tests: Debian's chromium (playwright-core) against the real heat-actix binary, real
// bpftrace presets and a real workload started by the test. Run: node --test (from here) or
// scripts/test. Screenshots land in tests/browser/artifacts/ (git-ignored).
//
// Every wait is for a condition (frames counted, a key seen), never for a wall-clock figure.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launchBrowser, openPage, artifact, sleeper } from './harness.mjs';

const TICK_MS = 500;
const WAIT = { timeout: 60000 };
let server, browser, current;

before(async () => {
  server = await startServer({ tickMs: TICK_MS });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

// Each test gets its own page; a page error or console error fails the test that caused it.
async function page() {
  current = await openPage(browser.context, server.url);
  return current.page;
}
afterEach(async () => {
  if (!current) return;
  const { page: p, errors, expected } = current;
  current = null;
  await p.close();
  // Filtered only now: the browser's report of a failed attempt may come in after the test ends.
  assert.deepEqual(errors.filter((e) => !(expected && expected.test(e))), [], 'the page logged errors');
});

async function startPreset(p, preset) {
  await p.selectOption('#preset', preset);
  await p.fill('#tick', String(TICK_MS));
  await p.click('#start');
  await p.waitForFunction((name) => window.heat.run === 'running' && window.heat.started?.preset === name, preset, WAIT);
}

/** Turns the overlay lines off so that pixel probes at cell centres see only cells. */
async function overlaysOff(p) {
  for (const k of ['avg', 'p50', 'p90', 'p99']) await p.setChecked(`#ov-${k}`, false);
}

/**
 * For every cell of the visible rows in the columns drawn: whether the model says it has
 * events, and whether the canvas pixel at its centre is coloured (differs from the empty-cell
 * background). Runs in the page.
 */
function probeCells() {
  const h = window.heat;
  const canvas = document.getElementById('heatmap');
  const ctx = canvas.getContext('2d');
  const rect = canvas.getBoundingClientRect();
  const dpr = canvas.width / rect.width;
  const m = h.model();
  const [a, b] = h.visibleRows;
  const out = [];
  const base = m.pushed - m.cols.length; // only the columns in the picture (it lags while paused)
  for (let col = Math.max(0, h.drawnColumns - m.capacity - base); col < h.drawnColumns - base; col++) {
    for (let row = a; row <= b; row++) {
      const pt = h.cellPoint(col, row);
      const [r, g, bl] = ctx.getImageData(Math.round((pt.x - rect.left) * dpr), Math.round((pt.y - rect.top) * dpr), 1, 1).data;
      const coloured = !(Math.abs(r - 0x0e) < 4 && Math.abs(g - 0x11) < 4 && Math.abs(bl - 0x18) < 4);
      out.push({ col, row, has: m.cols[col].shown[row] > 0, coloured, keys: m.breakdown(col, row).map((k) => k.name) });
    }
  }
  return out;
}

test('page: presets from hello, session, backend, connection state', async () => {
  const p = await page();
  const hello = await p.evaluate(() => window.heat.hello);
  const options = await p.$$eval('#preset option', (os) => os.map((o) => o.value).filter(Boolean));
  assert.deepEqual(options, hello.presets.map((x) => x.name));
  for (const name of ['syscall-latency', 'syscall-latency-log2', 'block-io-latency', 'runqueue-latency', 'softirq-latency']) {
    assert.ok(options.includes(name), `preset ${name} offered`);
  }
  assert.equal(await p.textContent('#session'), hello.session);
  // Before a program runs the page lists what the server can run, as hello says.
  assert.equal(await p.textContent('#backend'), hello.backends.join(', '));
  assert.equal(await p.textContent('#status'), 'open');
  // everything the page loads comes from heat-actix itself
  const foreign = await p.evaluate(() => performance.getEntriesByType('resource').map((e) => e.name).filter((u) => !u.startsWith(location.origin)));
  assert.deepEqual(foreign, []);
});

test('syscall-latency: a 1 ms sleeper lights the open top bucket; isolate, exclude, merge, click', async () => {
  const p = await page();
  const work = sleeper(1000); // ≥ 1 ms per clock_nanosleep: the [64 µs, ∞) bucket
  try {
    await startPreset(p, 'syscall-latency');
    await overlaysOff(p);
    await p.waitForFunction(() => window.heat.frames >= 6 && window.heat.keys.some((k) => k.name === 'clock_nanosleep' && k.total >= 200), null, WAIT);
    const rows = await p.evaluate(() => window.heat.rows);
    assert.deepEqual(rows[rows.length - 1], [64, null], 'lhist 0..64 step 2 has an open top row');
    assert.equal(rows.length, 34);
    const top = rows.length - 1;

    await p.evaluate(() => window.heat.pause()); // freeze the picture while it is probed
    const merged = await p.evaluate(probeCells);
    // the workload's bucket is coloured, and drawn cells are exactly the cells with events
    assert.ok(merged.some((c) => c.row === top && c.coloured && c.keys.includes('clock_nanosleep')), 'the sleeper\'s bucket is drawn');
    for (const c of merged) assert.equal(c.coloured, c.has, `cell col ${c.col} row ${c.row}: drawn ⇔ has events`);
    assert.ok(merged.some((c) => c.row !== top && c.coloured), 'other syscalls fill the lower rows when merged');
    await p.screenshot({ path: artifact('syscall-latency-merged.png') });

    // isolate clock_nanosleep: click its name in the key list
    await p.click('#keys li[data-key="clock_nanosleep"] .key-name');
    await p.waitForFunction(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name).join() === 'clock_nanosleep');
    const isolated = await p.evaluate(probeCells);
    for (const c of isolated) {
      assert.equal(c.coloured, c.has, `isolated: cell col ${c.col} row ${c.row}: drawn ⇔ has events`);
      if (c.coloured) assert.ok(c.keys.includes('clock_nanosleep'), 'only cells holding the isolated key are drawn');
    }
    const before = merged.filter((c) => c.coloured).length, after = isolated.filter((c) => c.coloured).length;
    assert.ok(after < before, `isolating drew fewer cells (${after} < ${before})`);
    assert.ok(isolated.some((c) => c.row === top && c.coloured), 'the isolated key is still drawn');
    await p.screenshot({ path: artifact('syscall-latency-isolated.png') });

    // exclude it instead: back to merge, then untick it
    await p.click('#keys-merge');
    await p.waitForFunction(() => window.heat.keys.every((k) => k.shown));
    await p.setChecked('#keys li[data-key="clock_nanosleep"] input', false);
    await p.waitForFunction(() => window.heat.keys.find((k) => k.name === 'clock_nanosleep')?.shown === false);
    const excluded = await p.evaluate(probeCells);
    for (const c of excluded) assert.equal(c.coloured, c.has);
    const topShown = await p.evaluate(() => window.heat.model().cols.map((c) => c.shown[c.shown.length - 1]));
    const topTotal = await p.evaluate(() => window.heat.model().cols.map((c) => c.total[c.total.length - 1]));
    assert.ok(topShown.some((v, i) => v < topTotal[i]), 'excluding a key removes its events from the cells');
    await p.click('#keys-merge');

    // click a cell of the sleeper's bucket: the per-key breakdown of that bucket at that time
    const target = merged.filter((c) => c.row === top && c.keys.includes('clock_nanosleep')).at(-2);
    const pt = await p.evaluate(([col, row]) => window.heat.cellPoint(col, row), [target.col, target.row]);
    await p.mouse.click(pt.x, pt.y);
    await p.waitForSelector('#cell:not([hidden])');
    const want = await p.evaluate(([col, row]) => window.heat.model().breakdown(col, row), [target.col, target.row]);
    const got = await p.$$eval('#cell tbody tr[data-key]', (trs) => trs.map((tr) => [tr.dataset.key, Number(tr.children[1].textContent.replace(/,/g, ''))]));
    assert.deepEqual(got, want.map((k) => [k.name, k.count]));
    assert.ok(got.some(([k, n]) => k === 'clock_nanosleep' && n > 0));
    assert.match(await p.textContent('#cell'), /≥ 64 µs/);
    await p.evaluate(() => window.heat.resume());
    await p.screenshot({ path: artifact('syscall-latency-cell.png') });
  } finally {
    work.stop();
  }
});

test('syscall-latency-log2: a 3 ms sleeper lands in the 2.1–4.2 ms row; hovering shows count and shares', async () => {
  const p = await page();
  const work = sleeper(3000);
  try {
    await startPreset(p, 'syscall-latency-log2');
    await p.waitForFunction(() => window.heat.frames >= 5 && window.heat.keys.some((k) => k.name === 'clock_nanosleep' && k.total >= 50), null, WAIT);
    await p.evaluate(() => window.heat.pause());
    const { row, col, count } = await p.evaluate(() => {
      const h = window.heat, m = h.model();
      const row = h.rows.findIndex(([lo, hi]) => lo <= 3e6 && hi >= 3e6);
      let col = -1;
      for (let i = m.cols.length - 2; i >= 0; i--) if (m.breakdown(i, row).some((k) => k.name === 'clock_nanosleep')) { col = i; break; }
      return { row, col, count: col >= 0 ? m.cols[col].shown[row] : 0 };
    });
    assert.ok(row >= 0 && col >= 0 && count > 0, 'a cell of the 3 ms bucket holds the sleeper');
    assert.deepEqual((await p.evaluate(() => window.heat.rows))[row], [2097152, 4194303], 'log2 rows');
    const pt = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), [col, row]);
    await p.mouse.move(pt.x, pt.y);
    await p.waitForSelector('#tooltip:not([hidden])');
    assert.equal(await p.textContent('#tt-count'), count.toLocaleString('en-US'));
    const tip = await p.textContent('#tooltip');
    assert.match(tip, /2,097,152 … 4,194,303 ns\s+\(2\.1–4\.2 ms\)/, 'bucket range in ns and human-scaled');
    assert.match(tip, /% of column/);
    assert.match(tip, /below · .*at or below/);
    assert.match(tip, /clock_nanosleep/);
    await p.screenshot({ path: artifact('syscall-latency-log2-hover.png') });
    await p.evaluate(() => window.heat.resume());
  } finally {
    work.stop();
  }
});

test('pause: frames keep arriving into the history while the picture holds; resume catches up', async () => {
  const p = await page();
  await startPreset(p, 'syscall-latency');
  await p.waitForFunction(() => window.heat.frames >= 3, null, WAIT);
  await p.click('#pause');
  const a = await p.evaluate(() => ({ frames: window.heat.frames, pushed: window.heat.model().pushed, drawn: window.heat.drawnColumns }));
  await p.waitForFunction((f) => window.heat.frames >= f + 3, a.frames, WAIT);
  const b = await p.evaluate(() => ({ frames: window.heat.frames, pushed: window.heat.model().pushed, drawn: window.heat.drawnColumns, draws: window.heat.draws }));
  assert.equal(b.drawn, a.drawn, 'the picture still shows the columns it showed at the pause');
  assert.ok(b.pushed > b.drawn);
  assert.equal(b.pushed - a.pushed, b.frames - a.frames, 'every frame went into the history');
  assert.equal(await p.textContent('#live'), 'paused');
  assert.match(await p.textContent('#heat-meta'), /paused, \d+ new frames? buffered/);
  await p.click('#pause');
  const c = await p.evaluate(() => ({ draws: window.heat.draws, paused: window.heat.paused, drawn: window.heat.drawnColumns, pushed: window.heat.model().pushed }));
  assert.equal(c.paused, false);
  assert.equal(c.drawn, c.pushed, 'resume drew every buffered column');
  assert.ok(c.draws.full > b.draws.full);
  await p.waitForFunction((n) => window.heat.draws.incremental > n, c.draws.incremental, WAIT);
});

test('an invalid script shows the tracer\'s own message next to the editor', async () => {
  const p = await page();
  const errors = [];
  p.on('websocket', (ws) => ws.on('framereceived', (f) => {
    try { const m = JSON.parse(f.payload); if (m.type === 'error') errors.push(m); } catch { /* not JSON */ }
  }));
  await p.reload();
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
  await p.selectOption('#preset', '');
  // one long line: the box must wrap it rather than hide its end behind a scroll bar
  const filler = Array.from({ length: 12 }, (_, i) => `@filler_number_${i}_with_a_long_name = ${i};`).join(' ');
  await p.fill('#script', `tracepoint:raw_syscalls:sys_exit { ${filler} @x = nope_not_a_function(1); }`);
  await p.click('#start');
  await p.waitForSelector('#error:not([hidden])', WAIT);
  await p.waitForFunction(() => !document.getElementById('error').classList.contains('stale'), null, WAIT);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'compile');
  assert.equal(await p.textContent('#error'), errors[0].message, 'the message is shown verbatim');
  assert.match(errors[0].message, /nope_not_a_function/);
  assert.equal(await p.getAttribute('#error', 'data-code'), 'compile');
  const box = await p.$eval('#error', (e) => ({ ws: getComputedStyle(e).whiteSpace, wrap: getComputedStyle(e).overflowWrap, scroll: e.scrollWidth, client: e.clientWidth }));
  assert.equal(box.ws, 'pre-wrap');
  assert.equal(box.wrap, 'anywhere');
  assert.ok(box.scroll <= box.client, `the long line wraps (scrollWidth ${box.scroll} ≤ clientWidth ${box.client})`);
  await p.screenshot({ path: artifact('compile-error.png') });
});

test('the page\'s example script compiles on the installed bpftrace and produces frames', async () => {
  const p = await page();
  await p.evaluate(() => localStorage.removeItem('heat.script')); // earlier tests typed theirs
  await p.reload();
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
  const script = await p.inputValue('#script');
  assert.match(script, /@us\[args->id\] = lhist/, 'the example, in syntax bpftrace 0.17 accepts');
  await p.selectOption('#preset', '');
  assert.equal(await p.textContent('#script-lang'), 'bpftrace');
  await p.fill('#tick', String(TICK_MS));
  await p.click('#start');
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.frames >= 3, null, WAIT);
  assert.equal(await p.isVisible('#error'), false, 'no error');
  assert.deepEqual(await p.evaluate(() => window.heat.aggregations), ['@us']);
  assert.ok(await p.evaluate(() => window.heat.keys.length > 0), 'syscalls were counted by id');
  const calls = await p.evaluate(() => window.heat.lastFrame.aggregations.find((a) => a.name === '@calls'));
  assert.equal(calls.kind, 'count');
  await p.screenshot({ path: artifact('example-script.png') });
});

test('the editor and the picker name the language the script runs as', async () => {
  const p = await page();
  await p.selectOption('#preset', '');
  const custom = () => p.$eval('#preset option[value=""]', (o) => o.textContent);
  await p.fill('#script', 'syscall:::entry { self->ts = timestamp; }\nsyscall:::return /self->ts/ { @lat[probefunc] = quantize(timestamp - self->ts); self->ts = 0; }');
  assert.equal(await p.textContent('#script-lang'), 'D');
  assert.equal(await custom(), 'Custom script (D)…');
  assert.match(await p.textContent('#preset-hint'), /as D/);
  await p.fill('#script', 'tracepoint:raw_syscalls:sys_exit { @n = count(); }');
  assert.equal(await p.textContent('#script-lang'), 'bpftrace');
  assert.equal(await custom(), 'Custom script (bpftrace)…');
});

test('?kiosk hides the controls for that load only; a later / shows them', async () => {
  const p = await page();
  await p.goto(`${server.url}/?kiosk`);
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
  assert.equal(await p.isVisible('#controls'), false, 'kiosk: no controls');
  assert.equal(await p.textContent('#toggle-controls'), 'Show controls');
  await p.goto(`${server.url}/`);
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
  assert.equal(await p.isVisible('#controls'), true, 'a plain / shows the controls');
  // what older pages stored is neither obeyed nor kept
  await p.evaluate(() => localStorage.setItem('heat.kiosk', '1'));
  await p.reload();
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
  assert.equal(await p.isVisible('#controls'), true, 'a stale stored kiosk is ignored');
  assert.equal(await p.evaluate(() => localStorage.getItem('heat.kiosk')), null);
});

test('?columns is held to the documented 60…1800 ticks', async () => {
  const p = await page();
  for (const [asked, got] of [['5000', 1800], ['5', 60], ['300', 300]]) {
    await p.goto(`${server.url}/?columns=${asked}`);
    await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
    assert.equal(await p.evaluate(() => window.heat.history), got, `?columns=${asked}`);
  }
});

test('several aggregations: pick the histogram shown; scalars get numbers and a line chart; scales and PNG', async () => {
  const p = await page();
  const script = `tracepoint:raw_syscalls:sys_enter { @ts[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /@ts[tid]/ {
  $ns = nsecs - @ts[tid];
  @lat_ns[comm] = hist($ns);
  @lat_us = lhist($ns / 1000, 0, 100, 10);
  @calls = count();
  @bytes[comm] = sum(1);
  delete(@ts[tid]);
}`;
  await p.selectOption('#preset', '');
  await p.fill('#script', script);
  await p.click('#start');
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.frames >= 4, null, WAIT);
  const aggs = await p.$$eval('#aggregation option', (os) => os.map((o) => o.value));
  assert.deepEqual(aggs, ['@lat_ns', '@lat_us']);
  assert.equal(await p.evaluate(() => window.heat.unit), 'ns', 'unit from the name of a custom histogram');
  await p.selectOption('#aggregation', '@lat_us');
  assert.equal(await p.evaluate(() => window.heat.aggregation), '@lat_us');
  const rows = await p.evaluate(() => window.heat.rows);
  assert.deepEqual(rows[1], [0, 9]);
  assert.deepEqual(rows.at(-1), [100, null]);
  // scalar cards: a number and a line chart for @calls, top keys for @bytes
  await p.waitForFunction(() => document.querySelector('.sc-card[data-name="@calls"] .spark path')?.getAttribute('d')?.includes('L'), null, WAIT);
  const calls = await p.evaluate(() => window.heat.lastFrame.aggregations.find((a) => a.name === '@calls').series[0].value);
  await p.waitForFunction((v) => document.querySelector('.sc-card[data-name="@calls"] .sc-value').textContent === v.toLocaleString('en-US'), calls);
  assert.ok(await p.$('.sc-card[data-name="@bytes"] .sc-table .sc-key'), 'keyed scalar lists its keys');
  // colour scales: the legend states the mapping
  for (const [scale, words] of [['rank', /rank/], ['linear', /∝ count/], ['log', /log\(count\)/]]) {
    await p.selectOption('#scale', scale);
    assert.match(await p.textContent('#legend-text'), words);
    assert.equal(await p.evaluate(() => window.heat.scale), scale);
  }
  // overlays on, then a PNG export
  for (const k of ['avg', 'p50', 'p90', 'p99']) await p.setChecked(`#ov-${k}`, true);
  await p.selectOption('#aggregation', '@lat_ns');
  await p.selectOption('#colour', 'key');
  await p.waitForFunction(() => window.heat.frames >= 10, null, WAIT);
  await p.screenshot({ path: artifact('custom-hue-by-key.png') });
  const [download] = await Promise.all([p.waitForEvent('download'), p.click('#export')]);
  const path = artifact('export.png');
  await download.saveAs(path);
  const png = readFileSync(path);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG file');
  assert.ok(png.length > 2000);
  await p.selectOption('#colour', 'heat');
});

test('history length: the buffer follows the chosen length', async () => {
  const p = await page();
  await p.selectOption('#history', '60');
  assert.equal(await p.evaluate(() => window.heat.history), 60);
  await startPreset(p, 'syscall-latency');
  await p.waitForFunction(() => window.heat.frames >= 2, null, WAIT);
  assert.equal(await p.evaluate(() => window.heat.model().capacity), 60);
  await p.selectOption('#history', '120');
});

test('reconnect: the page notices the server going away and reconnects when it is back', async () => {
  const own = await startServer({ tickMs: TICK_MS });
  let again = null;
  const p = await page();
  // the browser reports the refused connection attempts itself; those are expected here
  current.expected = /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/;
  try {
    await p.goto(own.url);
    await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello);
    const first = await p.evaluate(() => window.heat.session);
    await own.stop();
    await p.waitForFunction(() => window.heat.state !== 'open', null, WAIT);
    await p.waitForFunction(() => /retry in \d+ s/.test(document.getElementById('retry').textContent), null, WAIT);
    assert.equal(await p.getAttribute('#status', 'data-state'), 'closed');
    await p.screenshot({ path: artifact('reconnecting.png') });
    again = await startServer({ tickMs: TICK_MS, port: own.port });
    await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello, null, WAIT);
    assert.equal(await p.textContent('#status'), 'open');
    assert.equal(await p.textContent('#session'), await p.evaluate(() => window.heat.session));
    assert.ok(first, 'had a session before');
  } finally {
    if (again) await again.stop();
  }
});

test('labels and row layouts: human units, log2, linear, log-linear and open-ended buckets', async () => {
  const p = await page();
  const r = await p.evaluate(async () => {
    const u = await import('/static/units.js');
    const { rowSpaceFor } = await import('/static/rows.js');
    const { HistModel } = await import('/static/model.js');
    const lin = rowSpaceFor('lhist', { min: 0, max: 64, step: 2 });
    const log2 = rowSpaceFor('hist', null);
    for (const lo of [1024, 1, 65536]) log2.ensure(lo);
    // llquantize(x, 10, 0, 2, 10): 1..9 step 1, 10..90 step 10, then ≥ 100 open
    const ll = rowSpaceFor('llquantize', null);
    for (const [lo, hi] of [[100, null], [10, 19], [1, 1], [20, 29], [null, 0], [9, 9]]) ll.ensure(lo, hi);
    const m = new HistModel('@x', 'lhist', { min: 0, max: 10, step: 1 }, 10);
    m.push({ series: [{ key: ['a'], buckets: [[1, 1, 50], [5, 5, 40]] }, { key: ['b'], buckets: [[9, 9, 10]] }] }, { ts: 0 });
    const st = m.cols[0].stats;
    return {
      ns1024: u.fmtValue(1024, 'ns'), us1500: u.fmtValue(1500, 'us'), s: u.fmtValue(2e9, 'ns'),
      lab: [u.rowLabel([1024, 2047], 'ns'), u.rowLabel([512, 1023], 'ns'), u.rowLabel([64, null], 'us'), u.rowLabel([null, -1], 'us'), u.rowLabel([2, 3], 'us')],
      bytes: u.fmtValue(1048576, 'bytes'), plain: u.fmtValue(12345, null), nameUnit: [u.unitFromName('@lat_us'), u.unitFromName('@latency_ns'), u.unitFromName('@count')],
      lin: [lin.rows.length, lin.rows[0], lin.rows.at(-1), lin.index(3), lin.index(200), lin.index(null)],
      log2: log2.rows, llRows: ll.rows, llIndex: ll.index(20),
      pct: st.pct.map((x) => Math.round(x * 100) / 100), avg: st.avg, n: st.n,
    };
  });
  assert.equal(r.ns1024, '1 µs');
  assert.equal(r.us1500, '1.5 ms');
  assert.equal(r.s, '2 s');
  assert.deepEqual(r.lab, ['1–2 µs', '512 ns–1 µs', '≥ 64 µs', '< 0', '2–4 µs']);
  assert.equal(r.bytes, '1Mi');
  assert.equal(r.plain, '12.3k');
  assert.deepEqual(r.nameUnit, ['us', 'ns', null]);
  assert.deepEqual(r.lin, [34, [null, -1], [64, null], 2, 33, 0]);
  assert.deepEqual(r.log2, Array.from({ length: 17 }, (_, i) => [2 ** i, 2 ** (i + 1) - 1]), 'one row per power of two, no holes');
  assert.deepEqual(r.llRows, [[null, 0], [1, 1], [9, 9], [10, 19], [20, 29], [100, null]], 'log-linear: one row per bucket, in order, open ends kept');
  assert.equal(r.llIndex, 4);
  // 100 events: 50 at 1, 40 at 5, 10 at 9 (rows are value + 1 because of the open row below 0)
  assert.equal(r.n, 100);
  assert.equal(r.avg, (50 * 1.5 + 40 * 5.5 + 10 * 9.5) / 100);
  assert.deepEqual(r.pct, [3, 7, 10.9]);
});
