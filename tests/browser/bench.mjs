// Rendering benchmark: how long the page takes to take in one frame and draw its new column,
// with 600 columns × 64 rows of history on screen. Synthetic frames (20 keys spread over all 64
// rows) are fed through window.heat.inject, the same path as websocket frames, into the page
// served by the real heat-actix binary; each timed frame ends with a 1-pixel getImageData,
// which makes Chromium rasterise the canvas work of that frame, so the figure includes drawing,
// not just recording it. Prints median and p95 ms per frame. Then it opens a recorded 24 h
// range (600 columns of 144 s, 50 keys) through the page's history path and prints the time
// to parse, model and draw it. Asserts nothing.
//
//   cargo build && (cd tests/browser && npm ci && node bench.mjs)

import { startServer, launchBrowser } from './harness.mjs';

const COLUMNS = 600, ROWS = 64, KEYS = 20, WARM = COLUMNS, MEASURED = 400;
const RANGE_KEYS = 50, OPEN_RUNS = 9; // the opened range: 50 keys, opened 9 times
const viewport = { width: Number(process.env.BENCH_W || 1600), height: Number(process.env.BENCH_H || 1000) };

const server = await startServer();
const browser = await launchBrowser();
try {
  const page = await browser.context.newPage({ viewport });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.setViewportSize(viewport);
  await page.goto(`${server.url}/?offline&columns=${COLUMNS}${process.env.BENCH_Q || ''}`);
  await page.waitForFunction(() => window.heat);
  const result = await page.evaluate(async ({ COLUMNS, ROWS, KEYS, WARM, MEASURED }) => {
    const h = window.heat;
    // lhist 0..62 step 1: 62 rows plus the two open ends = 64 rows
    h.inject({ type: 'started', session: 'bench', backend: 'bench', tick_ms: 1000, preset: null, unit: 'us',
      aggregations: [{ name: '@lat_us', kind: 'lhist', layout: { min: 0, max: 62, step: 1 } }, { name: '@n', kind: 'count' }] });
    let seq = 0, rnd = 12345;
    const rand = () => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const frame = () => {
      seq++;
      const series = [];
      for (let k = 0; k < KEYS; k++) {
        const buckets = [[null, -1, 1 + Math.floor(rand() * 3)]];
        for (let lo = 0; lo < 62; lo++) if (rand() < 0.6) buckets.push([lo, lo, 1 + Math.floor(rand() ** 3 * 5000)]);
        buckets.push([62, null, 1 + Math.floor(rand() * 20)]);
        series.push({ key: [`key${k}`], buckets });
      }
      return { type: 'frame', seq, ts_ms: 1763788800000 + seq * 1000, interval_ms: 1000,
        aggregations: [{ name: '@lat_us', kind: 'lhist', series }, { name: '@n', kind: 'count', series: [{ key: [], value: seq }] }] };
    };
    const frames = [];
    for (let i = 0; i < WARM + MEASURED; i++) frames.push(frame()); // generated outside the timing
    const canvas = document.getElementById('heatmap');
    const ctx = canvas.getContext('2d');
    for (let i = 0; i < WARM; i++) h.inject(frames[i]);
    ctx.getImageData(0, 0, 1, 1);
    await new Promise((r) => requestAnimationFrame(() => r()));
    const total = [], js = [];
    const d0 = h.draws;
    for (let i = WARM; i < WARM + MEASURED; i++) {
      const t0 = performance.now();
      h.inject(frames[i]);
      const t1 = performance.now();
      ctx.getImageData(0, 0, 1, 1); // flush: rasterise this frame's canvas work
      const t2 = performance.now();
      js.push(t1 - t0);
      total.push(t2 - t0);
      if (i % 50 === 0) await new Promise((r) => requestAnimationFrame(() => r())); // let panels and paint run
    }
    const d1 = h.draws;
    const q = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
    return {
      columns: h.model().length, rows: h.rows.length, canvas: [canvas.width, canvas.height],
      median: q(total, 0.5), p95: q(total, 0.95), jsMedian: q(js, 0.5),
      full: d1.full - d0.full, incremental: d1.incremental - d0.incremental,
    };
  }, { COLUMNS, ROWS, KEYS, WARM, MEASURED });
  // Opening a recorded range: a day at 1 s ticks summed into 600 columns of 144 s (as
  // /api/watches/{name}/frames returns it), 50 keys, through the page's import path (the same
  // showFrames → model → view as a watch's range). Timed: parse + model + full draw + raster.
  const opened = await page.evaluate(async ({ COLUMNS, RANGE_KEYS, OPEN_RUNS }) => {
    const h = window.heat;
    const DAY = 86400000, from = 1763769600000, to = from + DAY, width = DAY / COLUMNS;
    let rnd = 777;
    const rand = () => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const lines = [JSON.stringify({ type: 'export', format: 'heat-actix-ndjson-1', watch: 'bench', from, to,
      runs: [{ run: 1, aggregations: [{ name: '@latency_us', kind: 'lhist', layout: { min: 0, max: 64, step: 2 } }] }] })];
    for (let k = 0; k < COLUMNS; k++) {
      const series = [];
      for (let key = 0; key < RANGE_KEYS; key++) {
        const buckets = [];
        for (let lo = 0; lo < 64; lo += 2) if (rand() < 0.5) buckets.push([lo, lo + 1, 1 + Math.floor(rand() ** 3 * 144000)]);
        buckets.push([64, null, 1 + Math.floor(rand() * 500)]);
        series.push({ key: [`sys${key}`], buckets });
      }
      lines.push(JSON.stringify({ type: 'frame', seq: k + 1, ts_ms: from + (k + 1) * width - 1, interval_ms: width, run: 1,
        aggregations: [{ name: '@latency_us', kind: 'lhist', series }] }));
    }
    const text = lines.join('\n') + '\n';
    const canvas = document.getElementById('heatmap');
    const ctx = canvas.getContext('2d');
    const times = [], parse = [];
    for (let i = 0; i < OPEN_RUNS; i++) { // JSON.parse alone, as the import does it
      const t0 = performance.now();
      for (const l of text.split('\n')) if (l) JSON.parse(l);
      parse.push(performance.now() - t0);
    }
    for (let i = 0; i < OPEN_RUNS; i++) {
      const t0 = performance.now();
      h.importText('bench.ndjson', text);
      ctx.getImageData(0, 0, 1, 1);
      times.push(performance.now() - t0);
      await new Promise((r) => requestAnimationFrame(() => r()));
    }
    const s = [...times].sort((a, b) => a - b);
    return { columns: h.model().length, rows: h.rows.length, keys: h.keys.length, bytes: text.length,
      median: s[Math.floor(s.length / 2)], max: s[s.length - 1], parse: [...parse].sort((a, b) => a - b)[Math.floor(parse.length / 2)] };
  }, { COLUMNS, RANGE_KEYS, OPEN_RUNS });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log(`heatmap ${result.columns} columns × ${result.rows} rows, canvas ${result.canvas.join('×')} px, ${KEYS} keys, ${MEASURED} frames`);
  console.log(`  incremental draws ${result.incremental}, full redraws ${result.full}`);
  console.log(`  per frame (model + draw + raster): median ${result.median.toFixed(2)} ms, p95 ${result.p95.toFixed(2)} ms`);
  console.log(`  per frame (JavaScript only):       median ${result.jsMedian.toFixed(2)} ms`);
  console.log(`opening a recorded 24 h range: ${opened.columns} columns × ${opened.rows} rows, ${opened.keys} keys, ${(opened.bytes / 1e6).toFixed(1)} MB of NDJSON, ${OPEN_RUNS} opens`);
  console.log(`  parse + model + full draw + raster: median ${opened.median.toFixed(1)} ms, max ${opened.max.toFixed(1)} ms`);
  console.log(`  of which JSON.parse of the lines:   median ${opened.parse.toFixed(1)} ms (model + draw ≈ ${(opened.median - opened.parse).toFixed(1)} ms)`);
} finally {
  await browser.close();
  await server.stop();
}
