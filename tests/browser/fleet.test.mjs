// Browser test of the fleet view (issue 14): two real heat-actix servers export a watch
// (syscall-latency-log2, each filtered to its own perl sleeper), Debian's Prometheus scrapes
// both with native histograms, and a third server with `[fleet]` serves the page. The page's
// Source picker offers the exported watch; opening it shows the two instances as two keys;
// isolating one shows exactly its cells (the proxy's JSON for that instance); hovering the
// cell both sleepers fill lists both instances; a box over B's own row ranks the hosts, B first.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, launchBrowser, openPage, artifact, freePort, settled, drag } from './harness.mjs';

const PROMETHEUS = process.env.PROMETHEUS || '/usr/bin/prometheus';
const WATCH = 'sleepers';
const SCRAPE_S = 1;
const MIN_STEP_MS = 2000; // two scrapes a column
const SPAN_MS = 40000;
const FILLED = 17; // of the range's 20 columns, before the test looks
const WAIT = { timeout: 90000 };
// Both sleepers sleep 1.5 ms (bucket [2^20, 2^21) ns whatever the timer slack); B also sleeps
// 20 ms ([2^24, 2^25) ns), so one cell holds both hosts and one holds only B.
const SHARED_LO = 2 ** 20;
const B_ONLY_LO = 2 ** 24;

let a, b, proxy, prom, browser, sleepers = [];

function perl(comm, body) {
  const child = spawn('perl', ['-MTime::HiRes=usleep', '-e', `$0 = ${JSON.stringify(comm)}; ${body}`], { stdio: 'ignore' });
  return { stop() { child.kill('SIGKILL'); } };
}

function exporter(comm) {
  return `[[watch]]\nname = "${WATCH}"\npreset = "syscall-latency-log2"\ncomm = "${comm}"\nrecord = false\nexport = true\n`;
}

/** Debian's Prometheus on a free loopback port, scraping `targets` every second. */
async function startPrometheus(targets) {
  if (!existsSync(PROMETHEUS)) throw new Error(`${PROMETHEUS} is missing: apt-get install prometheus`);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'heat-fleet-prom-'));
  writeFileSync(join(dir, 'prometheus.yml'), [
    'global:', `  scrape_interval: ${SCRAPE_S}s`, `  evaluation_interval: ${SCRAPE_S}s`,
    'scrape_configs:', '  - job_name: heat', '    static_configs:',
    `      - targets: [${targets.map((t) => `'${t}'`).join(', ')}]`, ''].join('\n'));
  const child = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--enable-feature=native-histograms', '--log.level=warn'], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try { if ((await fetch(`${url}/-/ready`)).ok) break; } catch { /* starting */ }
    if (child.exitCode !== null) throw new Error('prometheus exited at start-up');
    if (i > 300) throw new Error('prometheus not ready in 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const instance = (server) => `127.0.0.1:${server.port}`;

async function fleetFrames(from, to, columns, { listed = true } = {}) {
  const res = await fetch(`${proxy.url}/api/fleet/watches/${WATCH}/frames?from=${from}&to=${to}&columns=${columns}`);
  if (!listed && res.status === 404) return { frames: [] }; // not scraped yet
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

/** {instance: {lo: count}} summed over the answer's frames. */
function byInstance(body) {
  const out = {};
  for (const f of body.frames) for (const agg of f.aggregations) for (const s of agg.series) {
    const m = (out[s.key[0]] ??= {});
    for (const [lo, , n] of s.buckets) m[lo] = (m[lo] || 0) + n;
  }
  return out;
}

before(async () => {
  sleepers = [
    perl('fleet-a', 'usleep(1500) while 1'),
    perl('fleet-b', 'while (1) { usleep(1500); usleep(20000) }'),
  ];
  const [pa, pb] = [await freePort(), await freePort()];
  prom = await startPrometheus([`127.0.0.1:${pa}`, `127.0.0.1:${pb}`]);
  a = await startServer({ port: pa, config: exporter('fleet-a') });
  b = await startServer({ port: pb, config: exporter('fleet-b') });
  proxy = await startServer({ config: `[fleet]\nprometheus_url = "${prom.url}"\nmin_step_ms = ${MIN_STEP_MS}\n` });
  browser = await launchBrowser();
  // Enough scrapes that both hosts fill most columns of the range.
  const filled = (body, host, lo) => body.frames.filter((f) => f.aggregations.some((g) => g.series.some((s) => s.key[0] === host && s.buckets.some((x) => x[0] === lo)))).length;
  for (let i = 0; ; i++) {
    const to = Date.now();
    const body = await fleetFrames(to - SPAN_MS, to, SPAN_MS / MIN_STEP_MS, { listed: false });
    if (filled(body, instance(a), SHARED_LO) >= FILLED && filled(body, instance(b), B_ONLY_LO) >= FILLED) break;
    if (i > 90) throw new Error(`Prometheus has no data of both hosts: ${JSON.stringify(byInstance(body))}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
});

after(async () => {
  for (const s of sleepers) s.stop();
  if (browser) await browser.close();
  for (const s of [proxy, a, b]) if (s) await s.stop();
  if (prom) await prom.stop();
});

test('fleet source: two hosts are two keys; isolating one shows its cells; hover lists both; a box ranks hosts', async () => {
  const { page: p, errors } = await openPage(browser.context, `${proxy.url}/?columns=120`);
  await p.evaluate(() => localStorage.clear());
  await p.focus('#source');
  const option = `fleet:${WATCH}`;
  await p.waitForFunction((v) => [...document.querySelectorAll('#source option')].some((o) => o.value === v), option, WAIT);
  assert.match(await p.textContent(`#source option[value="${option}"]`), /fleet sleepers · 2 hosts/);
  // Choosing it opens its last hour, like a past range.
  await p.selectOption('#source', option);
  await p.waitForFunction(() => window.heat.mode === 'past' && window.heat.loads >= 1, null, WAIT);
  assert.equal(await p.evaluate(() => window.heat.past.to - window.heat.past.from), 3600000);

  // A range that ended a few scrapes ago (complete in Prometheus), 2 s columns.
  const to = Math.floor((Date.now() - 3000) / 1000) * 1000, from = to - SPAN_MS;
  const loads = await p.evaluate(() => window.heat.loads);
  await p.evaluate(({ w, from, to }) => window.heat.openRange(w, from, to), { w: option, from, to });
  await p.waitForFunction((n) => window.heat.loads > n, loads, WAIT);
  await settled(p);
  const body = await fleetFrames(from, to, 120);
  assert.deepEqual(await p.evaluate(() => window.heat.past.grid), body.slices, 'the page uses the proxy\'s columns');

  // Two instances, two keys.
  const keys = await p.evaluate(() => window.heat.keys.map((k) => k.name).sort());
  assert.deepEqual(keys, [instance(a), instance(b)].sort());
  assert.equal(await p.evaluate(() => window.heat.unit), 'ns');

  const rows = await p.evaluate(() => window.heat.rows);
  const shared = rows.findIndex((r) => r[0] === SHARED_LO);
  const bOnly = rows.findIndex((r) => r[0] === B_ONLY_LO);
  assert.ok(shared >= 0 && bOnly >= 0, `rows: ${JSON.stringify(rows)}`);
  // The cells of one instance as the proxy answered them: "col|row" → count.
  const cellsOf = (name) => {
    const out = {};
    for (const f of body.frames) for (const agg of f.aggregations) for (const s of agg.series) {
      if (s.key[0] !== name) continue;
      for (const [lo, , n] of s.buckets) {
        const row = rows.findIndex((r) => r[0] === lo);
        out[`${f.slice}|${row}`] = (out[`${f.slice}|${row}`] || 0) + n;
      }
    }
    return out;
  };
  const shownCells = () => p.evaluate(() => {
    const m = window.heat.model();
    const out = {};
    m.cols.forEach((c, col) => c.shown.forEach((n, row) => { if (n > 0) out[`${col}|${row}`] = n; }));
    return out;
  });

  // Isolate A (click its name): exactly A's cells remain, none of B's own row.
  await p.click(`#keys li[data-key="${instance(a)}"] .key-name`);
  await settled(p);
  assert.deepEqual(await p.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name)), [instance(a)]);
  const onlyA = await shownCells();
  assert.deepEqual(onlyA, cellsOf(instance(a)), 'isolated, the picture is A\'s cells');
  assert.ok(Object.keys(onlyA).some((c) => c.endsWith(`|${shared}`)), 'A fills its sleeper\'s row');
  const bRowCols = Object.keys(cellsOf(instance(b))).filter((c) => c.endsWith(`|${bOnly}`));
  assert.ok(bRowCols.length >= FILLED - 2, `B fills its 20 ms row: ${bRowCols.length} columns`);
  // A's sleeps are rarely delayed to 16 ms on a busy machine; B's cells A has nothing in go dark.
  const bAlone = bRowCols.filter((c) => !(c in cellsOf(instance(a))));
  assert.ok(bAlone.length * 2 > bRowCols.length, `most of B's 20 ms cells hold only B: ${bAlone.length}/${bRowCols.length}`);
  assert.ok(bAlone.every((c) => !(c in onlyA)), 'B\'s own 20 ms cells are empty with A isolated');
  const link = await p.evaluate(() => window.heat.permalink());
  const u = new URL(link);
  assert.equal(u.searchParams.get('fleet'), WATCH);
  assert.equal(u.searchParams.get('isolate'), instance(a));
  await p.screenshot({ path: artifact('fleet-isolated.png') });

  // Every host again; hover a cell both sleepers fill: the tooltip lists both instances.
  await p.click('#keys-merge');
  const aCells = cellsOf(instance(a)), bCells = cellsOf(instance(b));
  const both = Object.keys(aCells).filter((c) => c.endsWith(`|${shared}`) && c in bCells)
    .sort((x, y) => (aCells[y] + bCells[y]) - (aCells[x] + bCells[x]))[0];
  assert.ok(both, 'a cell holds both hosts');
  const [col, row] = both.split('|').map(Number);
  const pt = await p.evaluate(({ col, row }) => window.heat.cellPoint(col, row), { col, row });
  await p.mouse.move(pt.x, pt.y);
  await p.waitForSelector('#tooltip:not([hidden]) .tt-keys');
  const listed = await p.$$eval('#tooltip .tt-keys tr td:first-child', (tds) => tds.map((td) => td.textContent).sort());
  assert.deepEqual(listed, [instance(a), instance(b)].sort());
  assert.equal(Number((await p.textContent('#tt-count')).replace(/,/g, '')), aCells[both] + bCells[both]);
  // Hue by host, for the screenshot.
  await p.selectOption('#colour', 'key');
  await p.mouse.move(pt.x, pt.y + 1);
  await p.waitForSelector('#tooltip:not([hidden]) .tt-keys');
  await p.screenshot({ path: artifact('fleet.png') });

  // The permalink reopens the fleet range with A isolated in a fresh tab.
  const { page: q, errors: qErrors } = await openPage(browser.context, link);
  await q.waitForFunction(() => window.heat.mode === 'past' && window.heat.loads >= 1, null, WAIT);
  await settled(q);
  assert.equal(await q.evaluate(() => window.heat.source), option);
  assert.deepEqual(await q.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name)), [instance(a)]);
  await q.close();

  // Box select B's 20 ms row over the columns B filled: the panel ranks hosts, B first.
  await p.mouse.move(1, 1);
  const bCols = Object.keys(bCells).filter((c) => c.endsWith(`|${bOnly}`)).map((c) => Number(c.split('|')[0])).sort((x, y) => x - y);
  await drag(p, [bCols[0], bOnly], [bCols.at(-1), bOnly]);
  const sel = await p.evaluate(() => window.heat.selection);
  assert.ok(sel && sel.lo <= B_ONLY_LO && B_ONLY_LO <= sel.hi && sel.hi < 2 * B_ONLY_LO, `the box is B's 20 ms row: ${JSON.stringify(sel)}`);
  const ranking = await p.evaluate(() => window.heat.ranking);
  assert.equal(ranking.keys[0].name, instance(b), `ranking: ${JSON.stringify(ranking.keys)}`);
  assert.ok(ranking.keys[0].lift > 1, 'B is over-represented in its own row');
  assert.equal(await p.textContent('#select-panel .sel-ranking thead th'), 'host', 'the fleet view ranks hosts');
  await p.click(`#select-panel .sel-ranking tr[data-key="${instance(b)}"]`);
  assert.deepEqual(await p.evaluate(() => window.heat.keys.filter((k) => k.shown).map((k) => k.name)), [instance(b)]);
  assert.match(await p.evaluate(() => window.heat.permalink()), /[?&]sel=/);
  await p.screenshot({ path: artifact('fleet-select.png') });
  await p.close();
  assert.deepEqual([...errors, ...qErrors], []);
});
