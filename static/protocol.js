// Protocol v1.1 reader: turns what the websocket delivers (JSON text already parsed, or binary
// compact messages) into one shape for app.js, so the page never knows which encoding it got:
//   frame    → the frame object itself (JSON `frame`, or a compact tag 1, decoded identically)
//   history  → {type: 'history', from, to, frames: [frame…]} (JSON `history`, or compact tag 2)
//   dictionary (compact tag 3) → nothing: it only teaches the decoder keys
// Everything else passes through as parsed. One decoder per program, made from `started`.

import { CompactDecoder } from './compact.js';

/** The frame encodings this page reads, preferred first. */
const READS = ['compact', 'json'];

export class ProtocolError extends Error {}

/**
 * The `encoding` a `start` should ask for: compact when the server offers it (`hello.encodings`,
 * v1.1), unless `forced` (the page's `?encoding=`) names another it offers. `null` for a server
 * before v1.1, which knows no `encoding` field: the start then leaves it out.
 */
export function chooseEncoding(hello, forced = null) {
  const offered = hello && Array.isArray(hello.encodings) ? hello.encodings : null;
  if (!offered) return null;
  if (forced && offered.includes(forced) && READS.includes(forced)) return forced;
  return READS.find((e) => offered.includes(e)) ?? null;
}

export class ProtocolReader {
  constructor() {
    this.decoder = null; // CompactDecoder of the program `started` announced last
    this.binaryMessages = 0;
    this.binaryBytes = 0;
  }

  /**
   * One message as the connection delivers it: a parsed JSON object or an ArrayBuffer.
   * Returns the normalised message, or null when there is nothing for the page. Throws a
   * ProtocolError for a binary message it cannot read.
   */
  read(data) {
    if (data instanceof ArrayBuffer) return this.binary(data);
    switch (data.type) {
      case 'hello':
        this.decoder = null; // a new connection: no program yet
        return data;
      case 'started':
        // Compact messages of this program decode against its announced aggregations. The
        // previous program's final frame came before `started`, with the previous decoder.
        this.decoder = new CompactDecoder(Array.isArray(data.aggregations) ? data.aggregations.filter(isObject) : []);
        return data;
      case 'history': {
        const frames = Array.isArray(data.frames) ? data.frames.filter(isObject) : [];
        return { type: 'history', from: data.from ?? null, to: data.to ?? null, frames };
      }
      default:
        return data;
    }
  }

  binary(buffer) {
    this.binaryMessages++;
    this.binaryBytes += buffer.byteLength;
    if (!this.decoder) throw new ProtocolError('a compact message arrived before `started`');
    let decoded;
    try {
      decoded = this.decoder.decode(buffer);
    } catch (e) {
      throw new ProtocolError(e && e.message ? e.message : String(e));
    }
    switch (decoded.kind) {
      case 'frame': return decoded.frames[0];
      case 'history': {
        const f = decoded.frames;
        return { type: 'history', from: f.length ? f[0].seq : null, to: f.length ? f[f.length - 1].seq : null, frames: f };
      }
      default: return null; // dictionary: the decoder holds it
    }
  }
}

function isObject(x) { return !!x && typeof x === 'object' && !Array.isArray(x); }
