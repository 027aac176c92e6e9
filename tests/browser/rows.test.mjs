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
