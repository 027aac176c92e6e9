// static/compact.js against the fixtures the Rust encoder writes (tests/fixtures/compact, kept
// current by `cargo test --lib compact`): every message decodes to exactly the JSON frames
// `protocol::encode_frame` gives for the same snapshots. Plain node, no browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { CompactDecoder } from '../../static/compact.js';
import { fmtCost } from '../../static/util.js';

const dir = new URL('../fixtures/compact/', import.meta.url);
const fixtures = readdirSync(dir).filter((name) => name.endsWith('.json')).sort();

const bytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

test('the fixtures are there', () => {
  assert.deepEqual(fixtures, ['busy.json', 'every-kind.json', 'late-joiner.json', 'revealed-and-reset.json']);
});

for (const name of fixtures) {
  test(`${name} decodes to the JSON frames`, () => {
    const fixture = JSON.parse(readFileSync(new URL(name, dir), 'utf8'));
    const decoder = new CompactDecoder(fixture.aggregations);
    for (const [i, message] of fixture.messages.entries()) {
      // As a websocket delivers it: an ArrayBuffer of exactly the message.
      const decoded = decoder.decode(bytes(message.hex).buffer);
      assert.equal(decoded.kind, message.kind, `message ${i}`);
      assert.deepStrictEqual(decoded.frames, message.frames, `message ${i}`);
    }
  });
}

test('a frame needs the definitions of the keys it uses', () => {
  const fixture = JSON.parse(readFileSync(new URL('every-kind.json', dir), 'utf8'));
  const decoder = new CompactDecoder(fixture.aggregations);
  decoder.decode(bytes(fixture.messages[0].hex));
  // Replaying the second frame on a fresh decoder: its keys were defined in the first.
  assert.throws(() => new CompactDecoder(fixture.aggregations).decode(bytes(fixture.messages[1].hex)),
    /unknown key id/);
});

test('truncated and unknown messages are refused with a reason', () => {
  const fixture = JSON.parse(readFileSync(new URL('busy.json', dir), 'utf8'));
  const whole = bytes(fixture.messages[0].hex);
  for (const cut of [1, 5, whole.length - 1]) {
    assert.throws(() => new CompactDecoder(fixture.aggregations).decode(whole.slice(0, cut)), /compact:/);
  }
  assert.throws(() => new CompactDecoder([]).decode(Uint8Array.of(9)), /unknown message tag/);
  assert.throws(() => new CompactDecoder([]).decode(Uint8Array.of(1, 1, 1, 1, 0x80, 0, 0, 0, 0, 0)), /unknown flags/);
});

test('numbers past 2^53 round as JSON.parse rounds them', () => {
  const fixture = JSON.parse(readFileSync(new URL('every-kind.json', dir), 'utf8'));
  const frame = new CompactDecoder(fixture.aggregations).decode(bytes(fixture.messages[0].hex)).frames[0];
  const stats = frame.aggregations.find((a) => a.name === '@stats').series[0];
  assert.equal(stats.count, JSON.parse('18446744073709551615'));
  const min = frame.aggregations.find((a) => a.name === '@min').series[0];
  assert.equal(min.value, -(2 ** 63));
});

test('a frame carries its cost', () => {
  const fixture = JSON.parse(readFileSync(new URL('busy.json', dir), 'utf8'));
  const frame = new CompactDecoder(fixture.aggregations).decode(bytes(fixture.messages[0].hex)).frames[0];
  assert.deepStrictEqual(frame.cost, { events_per_s: 1204711, ns_per_event: 190.3, cpu_share: 0.229256, sampled: 0.15 });
  // A frame without the flag has none (the frames of every-kind.json).
  const other = JSON.parse(readFileSync(new URL('every-kind.json', dir), 'utf8'));
  const plain = new CompactDecoder(other.aggregations).decode(bytes(other.messages[0].hex)).frames[0];
  assert.equal(plain.cost, undefined);
});

test('the top bar reads a cost at a glance', () => {
  assert.equal(fmtCost({ cpu_share: 0.004, events_per_s: 1_204_711, ns_per_event: 190.3 }),
    '0.4% of a CPU · 1.2 M events/s · 190 ns/event');
  assert.equal(fmtCost({ cpu_share: 0.2293, events_per_s: 950, ns_per_event: 2413.6 }),
    '23% of a CPU · 950 events/s · 2414 ns/event');
  assert.equal(fmtCost({ cpu_share: 0, events_per_s: 0, ns_per_event: 0 }), '0% of a CPU · 0 events/s · 0 ns/event');
  assert.equal(fmtCost(undefined), '–');
  // Duty-cycled statistics: the figures were counted over part of the tick, and it says so.
  assert.equal(fmtCost({ cpu_share: 0.004, events_per_s: 1_204_711, ns_per_event: 190.3, sampled: 0.15 }),
    '0.4% of a CPU · 1.2 M events/s · 190 ns/event (sampled 15%)');
  assert.equal(fmtCost({ cpu_share: 0.004, events_per_s: 1_204_711, ns_per_event: 190.3, sampled: 1 }),
    '0.4% of a CPU · 1.2 M events/s · 190 ns/event');
});

test('a dictionary reset clears what the client holds', () => {
  const fixture = JSON.parse(readFileSync(new URL('revealed-and-reset.json', dir), 'utf8'));
  const decoder = new CompactDecoder(fixture.aggregations);
  const sizes = fixture.messages.map((m) => {
    decoder.decode(bytes(m.hex));
    return decoder.keys.size;
  });
  // Frames 1 and 2 define 2 and 1 keys; frame 3 resets and defines its 2; frame 4 adds 1.
  assert.deepEqual(sizes, [2, 3, 2, 3]);
});
