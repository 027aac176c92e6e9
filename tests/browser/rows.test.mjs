// Row layouts of the heatmap (static/rows.js), without a browser: they are plain modules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Log2Rows } from '../../static/rows.js';

test('log2 rows grow to cover the buckets seen, in order', () => {
  const rows = new Log2Rows();
  assert.equal(rows.ensure(4, 7), true);
  assert.equal(rows.ensure(4, 7), false, 'nothing new');
  assert.equal(rows.ensure(1, 1), true);
  assert.deepEqual(rows.rows, [[1, 1], [2, 3], [4, 7]]);
  assert.equal(rows.index(4), 2);
});

test("log2 rows show bpftrace 0.17's open top bucket as open", () => {
  const rows = new Log2Rows();
  rows.ensure(1 << 30, 2 ** 31 - 1);
  assert.equal(rows.ensure(2 ** 31, null), true);
  assert.deepEqual(rows.rows, [[2 ** 30, 2 ** 31 - 1], [2 ** 31, null]]);
  assert.equal(rows.index(2 ** 31), 1);
  assert.equal(rows.ensure(2 ** 31, null), false);
});

test('cpu-profile offset rows read as a time of the second, not a latency', async () => {
  const { rowLabel, rangeText, fmtValue } = await import('../../static/units.js');
  assert.equal(rowLabel([120, 139], 'ms-offset'), '+120–140 ms');
  assert.equal(fmtValue(40, 'ms-offset'), '+40 ms');
  assert.equal(rangeText([0, 19], 'ms-offset'), '0 … 20 ms into the second');
  // Latency units are unchanged.
  assert.equal(rowLabel([1024, 2047], 'ns'), '1–2 µs');
});

test('a column keeps its buckets as received, open ends and all, and its key totals', async () => {
  const { HistModel, entries } = await import('../../static/model.js');
  const m = new HistModel('@h', 'lhist', { min: 0, max: 4, step: 2 }, 2);
  const agg = (n) => ({ series: [
    { key: ['a'], buckets: [[null, -1, n], [0, 1, 2], [4, null, 3], [2, 3, 0]] },
    { key: ['b'], buckets: [[2, 3, 5], 'junk', [0, 1]] },
  ] });
  m.push(agg(1), { seq: 1 });
  assert.deepEqual([...entries(m.cols[0].raw)], [[0, null, -1, 1], [0, 0, 1, 2], [0, 4, null, 3], [1, 2, 3, 5]],
    'empty and malformed buckets are left out');
  assert.deepEqual(Array.from(m.cols[0].shown), [1, 2, 5, 3]);
  assert.deepEqual(Array.from(m.cols[0].dom), [0, 0, 1, 0]);
  assert.equal(m.seenMin, -Infinity);
  assert.equal(m.seenMax, 4);
  m.push(agg(10), { seq: 2 });
  m.push(agg(100), { seq: 3 }); // evicts the first column
  assert.deepEqual(m.keys.map((k) => k.total), [10 + 100 + 2 * 5, 2 * 5]);
  assert.deepEqual(m.breakdown(1, 0), [{ id: 0, name: 'a', count: 100, shown: true }]);
  m.setFilter({ isolate: 1 });
  assert.deepEqual(Array.from(m.cols[1].shown), [0, 0, 5, 0]);
  assert.deepEqual(Array.from(m.cols[1].total), [100, 2, 5, 3], 'totals ignore the filter');
});

test('columns re-derive their rows when a union row space grows', async () => {
  const { HistModel } = await import('../../static/model.js');
  const m = new HistModel('@h', 'llquantize', null, 10);
  m.push({ series: [{ key: ['a'], buckets: [[10, 19, 4]] }] }, { seq: 1 });
  assert.equal(m.push({ series: [{ key: ['b'], buckets: [[0, 9, 7], [null, -1, 1]] }] }, { seq: 2 }), true);
  assert.deepEqual(m.rows, [[null, -1], [0, 9], [10, 19]]);
  assert.deepEqual(Array.from(m.cols[0].shown), [0, 0, 4], 'the first column moved up with the new rows');
  assert.deepEqual(Array.from(m.cols[1].shown), [1, 7, 0]);
});

test('a packed aggregation (an opened range, an imported file) makes the same column as its series', async () => {
  const { HistModel, packHist, mergePacked, entries } = await import('../../static/model.js');
  const a = { name: '@h', kind: 'lhist', series: [
    { key: ['a'], buckets: [[null, -1, 1], [0, 1, 2], [4, null, 3], [2, 3, 0]] },
    { key: ['b', 2], buckets: [[2, 3, 5], 'junk'] },
    { key: ['quiet'], buckets: [] },
  ] };
  const b = { name: '@h', kind: 'lhist', series: [{ key: ['b', 2], buckets: [[0, 1, 7]] }, { key: ['c'], buckets: [[2, 3, 1]] }] };
  const plain = new HistModel('@h', 'lhist', { min: 0, max: 4, step: 2 }, 4);
  plain.push(a, { seq: 1 });
  plain.push({ series: [...a.series, ...b.series] }, { seq: 2 });
  const packed = new HistModel('@h', 'lhist', { min: 0, max: 4, step: 2 }, 4);
  const p = packHist(a);
  assert.deepEqual(p.keys, ['a', 'b, 2', 'quiet'], 'every series names its key, in order');
  packed.push(p, { seq: 1 });
  assert.equal(p.raw, null, 'the column took the packed entries');
  packed.push(mergePacked(packHist(a), packHist(b)), { seq: 2 });
  for (const i of [0, 1]) {
    assert.deepEqual([...entries(packed.cols[i].raw)], [...entries(plain.cols[i].raw)], `column ${i}`);
    assert.deepEqual(Array.from(packed.cols[i].shown), Array.from(plain.cols[i].shown));
  }
  assert.deepEqual(packed.keys, plain.keys);
  assert.deepEqual(packed.breakdown(1, 1), plain.breakdown(1, 1));
  assert.deepEqual(packed.breakdown(1, 1).map((x) => [x.name, x.count]), [['b, 2', 7], ['a', 2]]);
});
