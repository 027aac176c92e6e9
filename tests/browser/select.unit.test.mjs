// Box selections (static/select.js) without a browser: cells of a box, over-representation
// against the rest of the picture, compare, and the permalink form.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HistModel } from '../../static/model.js';
import { boxOf, cellsOf, overRepresentation, compareBoxes, boxParam, parseBoxParam, SMOOTHING } from '../../static/select.js';

// log2 rows; buckets [1,1] [2,3] [4,7] [8,15]
const B = { r1: [1, 1], r2: [2, 3], r4: [4, 7], r8: [8, 15] };

function model(columns) {
  const m = new HistModel('@ns', 'hist', null, 100);
  columns.forEach((series, i) => {
    const agg = { series: Object.entries(series).map(([key, cells]) => ({ key: [key], buckets: cells.map(([b, n]) => [...B[b], n]) })) };
    m.push(agg, { seq: i + 1, ts: 1000 * (i + 1) });
  });
  return m;
}

const quiet = { read: [['r1', 50], ['r2', 20]], futex: [['r2', 5], ['r8', 2]] };
const busy = { read: [['r1', 50], ['r2', 20]], futex: [['r2', 5], ['r8', 2]], clock_nanosleep: [['r4', 30]] };

test('a box from cells round-trips to the same cells; values survive rows growing below', () => {
  const m = model([quiet, quiet, busy, busy, quiet]);
  const box = boxOf(m, 3, 2, 2, 1); // any order
  assert.deepEqual(box, { from: 3000, to: 4000, lo: 2, hi: 7 });
  assert.deepEqual(cellsOf(m, box), { c0: 2, c1: 3, r0: 1, r1: 2 });
  m.push({ series: [{ key: ['read'], buckets: [[0, 0, 1]] }] }, { seq: 6, ts: 6000 }); // a row below: indices shift
  assert.deepEqual(cellsOf(m, box), { c0: 2, c1: 3, r0: 2, r1: 3 });
  assert.equal(cellsOf(m, { from: 9000, to: 9500, lo: 2, hi: 7 }), null, 'no column in the box');
});

test('the key that fills the box ranks first; shares and lift as documented', () => {
  const m = model([quiet, quiet, busy, busy, quiet]);
  const box = { from: 3000, to: 4000, lo: 4, hi: 7 };
  const r = overRepresentation(m, box, { c0: 0, c1: 4, r0: 0, r1: m.rows.length - 1 });
  assert.equal(r.keys[0].name, 'clock_nanosleep');
  assert.equal(r.inside, 60);
  assert.equal(r.keys[0].inside, 60);
  assert.equal(r.keys[0].outside, 0);
  assert.equal(r.keys[0].shareIn, 1);
  assert.equal(r.keys[0].shareOut, 0);
  // smoothed, so finite: (60+½)/(60+½·3) over (0+½)/(outside+½·3)
  const outN = 5 * 77;
  assert.equal(r.keys[0].lift, ((60 + SMOOTHING) / (60 + SMOOTHING * 3)) / (SMOOTHING / (outN + SMOOTHING * 3)));
  assert.equal(r.outside, outN);
  assert.equal(r.keys.length, 1, 'keys with nothing inside are not listed');
});

test('a key rare everywhere does not outrank the one that fills the box', () => {
  const rare = { ...busy, mmap: [['r4', 1]] };
  const m = model([quiet, quiet, rare, busy, quiet]);
  const r = overRepresentation(m, { from: 3000, to: 4000, lo: 4, hi: 7 }, { c0: 0, c1: 4, r0: 0, r1: m.rows.length - 1 });
  assert.deepEqual(r.keys.map((k) => k.name), ['clock_nanosleep', 'mmap']);
  assert.ok(r.keys[1].lift > 1);
});

test('the filter does not hide keys from the ranking', () => {
  const m = model([quiet, busy, quiet]);
  m.setFilter({ isolate: m.keyIds.get('read') });
  const r = overRepresentation(m, { from: 2000, to: 2000, lo: 1, hi: 15 }, { c0: 0, c1: 2, r0: 0, r1: m.rows.length - 1 });
  assert.ok(r.keys.some((k) => k.name === 'clock_nanosleep'));
});

test('compare: the key that changed comes first, as events per second', () => {
  const m = model([quiet, quiet, busy, busy, busy, busy]);
  const c = compareBoxes(m, { from: 1000, to: 2000, lo: null, hi: null }, { from: 3000, to: 6000, lo: null, hi: null }, 1000);
  assert.equal(c.keys[0].name, 'clock_nanosleep');
  assert.equal(c.keys[0].baseRate, 0);
  assert.equal(c.keys[0].targetRate, 30);
  assert.equal(c.keys[0].change, 30);
  assert.equal(c.keys.find((k) => k.name === 'read').change, 0, 'rates, not counts: 2 s against 4 s');
  assert.deepEqual(c.rows[0].range, [4, 7]);
  assert.equal(c.target.seconds, 4);
});

test('permalink form round-trips, open ends included; junk is refused', () => {
  for (const box of [{ from: 1, to: 2, lo: 2, hi: 7 }, { from: 5, to: 5, lo: null, hi: 1023 }, { from: 0, to: 9, lo: 2, hi: null }]) {
    assert.deepEqual(parseBoxParam(boxParam(box)), box);
  }
  for (const bad of ['', '1,2,3', 'a,2,3,4', '5,1,2,3', '1,2,9,3', null]) assert.equal(parseBoxParam(bad), null, String(bad));
});
