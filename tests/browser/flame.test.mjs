// Flame graph data (static/flame.js) without a browser: folded text, merge, diff, the call tree
// and search are plain functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFolded, toFolded, mergeFolded, diffFolded, buildTree, searchTree } from '../../static/flame.js';

const FIXTURE = `# comment line from a profiler header
main;work;nanosleep;clock_nanosleep 30
main;work;compute 50
main;idle 20
main;work;compute 5
std::vector<int, alloc>::push back;operator new 3

garbage-without-count
`;

test('parseFolded sums repeated stacks, keeps spaces in frames, skips comments and junk', () => {
  const m = parseFolded(FIXTURE);
  assert.equal(m.get('main;work;compute'), 55);
  assert.equal(m.get('main;work;nanosleep;clock_nanosleep'), 30);
  assert.equal(m.get('std::vector<int, alloc>::push back;operator new'), 3);
  assert.equal(m.size, 4);
});

test('toFolded is sorted and round-trips through parseFolded with the same counts', () => {
  const m = parseFolded(FIXTURE);
  const text = toFolded(m);
  const lines = text.trim().split('\n');
  assert.deepEqual(lines, [...lines].sort());
  assert.deepEqual(parseFolded(text), m);
  assert.equal(toFolded(parseFolded(text)), text);
});

test('mergeFolded adds counts per stack and normalises frame separators', () => {
  const a = new Map([['a;b', 2], ['a;c', 1]]);
  const b = new Map([['a ; b', 3], ['d', 4]]);
  assert.deepEqual(mergeFolded(a, b), new Map([['a;b', 5], ['a;c', 1], ['d', 4]]));
});

test('diffFolded compares shares, so ranges of different lengths compare fairly', () => {
  const base = new Map([['x', 10], ['y', 10]]);
  const target = new Map([['x', 60], ['y', 20], ['z', 20]]);
  const d = diffFolded(base, target);
  assert.equal(d.get('x').delta.toFixed(3), (0.6 - 0.5).toFixed(3));
  assert.equal(d.get('y').delta.toFixed(3), (0.2 - 0.5).toFixed(3));
  assert.equal(d.get('z').baseline, 0);
  assert.equal(d.get('z').target, 20);
});

test('buildTree: inclusive and self counts; the baseline adds to shared frames only', () => {
  const t = buildTree(parseFolded(FIXTURE), new Map([['main;work;compute', 7], ['other;path', 9]]));
  assert.equal(t.root.value, 108);
  const work = t.byPath.get('main;work');
  assert.equal(work.value, 85);
  assert.equal(work.self, 0);
  assert.equal(t.byPath.get('main;idle').self, 20);
  assert.equal(work.base, 7);
  assert.equal(t.byPath.has('other'), false, 'baseline-only stacks make no frame');
  assert.equal(t.baseTotal, 16);
});

test('searchTree counts a match inside a matched frame once', () => {
  const t = buildTree(parseFolded('a;sleep;sleep2 4\na;sleep 1\na;b 5\n'));
  const r = searchTree(t, 'sleep');
  assert.equal(r.matched, 5);
  assert.equal(r.total, 10);
  assert.equal(r.hits.size, 2);
  assert.equal(searchTree(t, /^b$/).matched, 5);
  assert.equal(searchTree(t, '').hits.size, 0);
});
