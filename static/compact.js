// Decodes compact frames (protocol v1.1, docs/protocol.md "Compact frames") into exactly the
// objects a JSON `frame` message parses to, so the page's model does not know which it got.
// Counts and values are plain Numbers: exact up to 2^53; beyond, rounded as JSON.parse rounds.

const TAG_FRAME = 1;
const TAG_HISTORY = 2;
const TAG_DICTIONARY = 3;
const FLAG_FINAL = 1;
const FLAG_RESET = 2;
const FLAG_COST = 4; // the frame ends with its cost: three little-endian float64s
const FLAG_SAMPLED = 8; // with FLAG_COST: a fourth float64, the cost's `sampled` fraction
const FORM_BITS = 8; // 2^3: the low 3 bits of a series head are its form
const FORM_SCALAR = 0;
const FORM_STATS = 1;
const FORM_DEVIATION = 2;
const FORM_INDEXED = 3;
const FORM_EXPLICIT = 4;
const BUCKET_LO_OPEN = 1;
const BUCKET_HI_OPEN = 2;
const LOG2_TOP = 33;
const KINDS = ['count', 'sum', 'avg', 'min', 'max', 'stats', 'stddev', 'hist', 'lhist',
  'quantize', 'lquantize', 'llquantize'];

const utf8 = new TextDecoder('utf-8', { fatal: true });

// Bucket bounds by index for a kind and its announced layout, or null when it has no index.
function indexFor(kind, layout) {
  if (kind === 'hist') {
    return (i) => {
      if (i === 0) return [null, -1];
      if (i === 1) return [0, 0];
      if (i < LOG2_TOP) {
        const lo = 2 ** (i - 2);
        return [lo, 2 * lo - 1];
      }
      if (i === LOG2_TOP) return [2 ** 31, null];
      return undefined;
    };
  }
  if ((kind === 'lhist' || kind === 'lquantize') && layout) {
    const { min, max, step } = layout;
    if (!(step > 0 && max >= min)) return null;
    const levels = Math.trunc((max - min) / step);
    return (i) => {
      if (i === 0) return [null, min - 1];
      if (i <= levels) {
        const lo = min + (i - 1) * step;
        return [lo, lo + step - 1];
      }
      if (i === levels + 1) return [min + levels * step, null];
      return undefined;
    };
  }
  return null;
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.at = 0;
  }

  byte() {
    if (this.at >= this.bytes.length) throw new Error('compact: message truncated');
    return this.bytes[this.at++];
  }

  // An unsigned varint as a Number; past 7 bytes (2^49) through BigInt, rounded once.
  uint() {
    const start = this.at;
    let value = 0;
    let scale = 1;
    for (let n = 0; n < 7; n++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
    this.at = start;
    return Number(this.big());
  }

  big() {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.byte();
      value |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) {
        if (value >= 1n << 64n) throw new Error('compact: varint past 64 bits');
        return value;
      }
    }
    throw new Error('compact: varint too long');
  }

  // A zigzag varint as a Number.
  int() {
    const start = this.at;
    const u = this.uint();
    if (u <= Number.MAX_SAFE_INTEGER) return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
    this.at = start;
    const big = this.big();
    return Number((big >> 1n) ^ -(big & 1n));
  }

  str() {
    const len = this.uint();
    if (this.at + len > this.bytes.length) throw new Error('compact: string truncated');
    const text = utf8.decode(this.bytes.subarray(this.at, this.at + len));
    this.at += len;
    return text;
  }

  f64() {
    if (this.at + 8 > this.bytes.length) throw new Error('compact: message truncated');
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.at, 8);
    this.at += 8;
    return view.getFloat64(0, true);
  }

  end() {
    if (this.at !== this.bytes.length) throw new Error('compact: trailing bytes');
  }
}

export class CompactDecoder {
  // `aggregations`: the `started` message's `aggregations` ({name, kind, layout?}).
  constructor(aggregations) {
    this.announced = aggregations.map((a) => ({ name: a.name, kind: a.kind, index: indexFor(a.kind, a.layout) }));
    this.aggregations = this.announced.slice();
    this.keys = new Map();
  }

  // One binary message → { kind: 'frame'|'history'|'dictionary', frames: [frame objects] }.
  decode(buffer) {
    const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
    const r = new Reader(bytes);
    const tag = r.byte();
    if (tag === TAG_FRAME) {
      const frame = this.frame(r);
      r.end();
      return { kind: 'frame', frames: [frame] };
    }
    if (tag === TAG_HISTORY) {
      const frames = [];
      for (let n = r.uint(); n > 0; n--) {
        const len = r.uint();
        if (r.at + len > bytes.length) throw new Error('compact: history frame truncated');
        const inner = new Reader(bytes.subarray(r.at, r.at + len));
        r.at += len;
        if (inner.byte() !== TAG_FRAME) throw new Error('compact: history holds a non-frame');
        frames.push(this.frame(inner));
        inner.end();
      }
      r.end();
      return { kind: 'history', frames };
    }
    if (tag === TAG_DICTIONARY) {
      this.keys.clear();
      this.aggregations = this.announced.slice();
      this.definitions(r);
      r.end();
      return { kind: 'dictionary', frames: [] };
    }
    throw new Error(`compact: unknown message tag ${tag}`);
  }

  definitions(r) {
    const firstSlot = r.uint();
    const slots = r.uint();
    for (let slot = firstSlot; slot < firstSlot + slots; slot++) {
      const name = r.str();
      const kind = r.str();
      if (!KINDS.includes(kind)) throw new Error(`compact: unknown kind ${kind}`);
      if (slot > this.aggregations.length) throw new Error('compact: aggregation slot skipped');
      // Only announced aggregations carry a layout; a `hist` needs none.
      this.aggregations[slot] = { name, kind, index: indexFor(kind, undefined) };
    }
    const firstId = r.uint();
    const ids = r.uint();
    for (let id = firstId; id < firstId + ids; id++) this.keys.set(id, JSON.parse(r.str()));
  }

  frame(r) {
    const frame = { type: 'frame', seq: r.uint(), ts_ms: r.uint(), interval_ms: r.uint() };
    const flags = r.byte();
    if (flags & ~(FLAG_FINAL | FLAG_RESET | FLAG_COST | FLAG_SAMPLED)) throw new Error(`compact: unknown flags ${flags}`);
    if (flags & FLAG_FINAL) frame.final = true;
    if (flags & FLAG_RESET) this.keys.clear();
    this.definitions(r);
    const aggregations = [];
    for (let n = r.uint(); n > 0; n--) {
      const info = this.aggregations[r.uint()];
      if (!info) throw new Error('compact: unknown aggregation');
      const folded = r.uint();
      const series = [];
      for (let s = r.uint(); s > 0; s--) series.push(this.series(r, info.index));
      const aggregation = { name: info.name, kind: info.kind, series };
      if (folded > 0) aggregation.folded = folded;
      aggregations.push(aggregation);
    }
    frame.aggregations = aggregations;
    for (const field of ['output', 'drops', 'errors']) {
      const n = r.uint();
      if (n === 0) continue;
      const texts = [];
      for (let i = 0; i < n; i++) texts.push(r.str());
      frame[field] = texts;
    }
    if (flags & FLAG_COST) {
      frame.cost = { events_per_s: r.f64(), ns_per_event: r.f64(), cpu_share: r.f64() };
      if (flags & FLAG_SAMPLED) frame.cost.sampled = r.f64();
    }
    return frame;
  }

  series(r, index) {
    const head = r.uint();
    const form = head % FORM_BITS;
    const parts = this.keys.get((head - form) / FORM_BITS);
    if (parts === undefined) throw new Error('compact: unknown key id');
    // A copy per series, as JSON.parse gives: the page may keep or change what it is given.
    const key = parts.slice();
    switch (form) {
      case FORM_SCALAR:
        return { key, value: r.int() };
      case FORM_STATS: {
        const count = r.uint();
        const total = r.int();
        return { key, value: r.int(), count, total };
      }
      case FORM_DEVIATION: {
        const count = r.uint();
        const total = r.int();
        const average = r.int();
        return { key, value: r.uint(), count, total, average };
      }
      case FORM_INDEXED: {
        if (!index) throw new Error('compact: indexed buckets for a kind without an index');
        const first = r.uint();
        const run = r.uint();
        const buckets = [];
        for (let i = first; i < first + run; i++) {
          const count = r.uint();
          if (count === 0) continue;
          const bounds = index(i);
          if (!bounds) throw new Error('compact: bucket index past the layout');
          buckets.push([bounds[0], bounds[1], count]);
        }
        return { key, buckets };
      }
      case FORM_EXPLICIT: {
        const buckets = [];
        for (let n = r.uint(); n > 0; n--) {
          const open = r.byte();
          const lo = open & BUCKET_LO_OPEN ? null : r.int();
          const hi = open & BUCKET_HI_OPEN ? null : r.int();
          buckets.push([lo, hi, r.uint()]);
        }
        return { key, buckets };
      }
      default:
        throw new Error(`compact: unknown series form ${form}`);
    }
  }
}
