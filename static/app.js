// heat-actix browser UI: speaks websocket protocol v1.1 (docs/protocol.md). Plain ES modules,
// no build step, nothing from outside the server. This module owns the page state and wires
// the protocol to the views:
//   connection.js  websocket + reconnect      protocol.js JSON and compact messages → one shape
//   compact.js     compact frame decoder      model.js    per-aggregation history, per key
//   heatmap.js     canvas (incremental)        keys.js     key list, isolate / exclude
//   scalars.js     scalar cards + line charts  colour.js   scales and palettes
//   units.js       ns/µs/ms labels             rows.js     bucket → row layouts
//   timeline.js    the time strip under the heatmap (range, drag to scroll back, marks)
//   select.js, selectpanel.js  box selection: over-representation, compare, Explain seam
//   flame.js       flame graphs (folded stacks, differential)
//   explain.js     the Explain panel: a live selection's stacks (explain messages), window.heat.explain
// Live frames, a watch's recorded range (`/api/watches/{name}/frames`), a fleet range (the
// same shape from `/api/fleet/watches/{name}/frames`, hosts as keys) and an imported NDJSON
// file all go through the same ingest → model → view path; only where the frames come from
// differs (S.mode).

import { Connection } from './connection.js';
import { ProtocolReader, chooseEncoding } from './protocol.js';
import { HistModel, entries, packHist, mergePacked } from './model.js';
import { HeatmapView, OVERLAYS } from './heatmap.js';
import { KeysView } from './keys.js';
import { ScalarsView, SCALAR_KINDS } from './scalars.js';
import { rampCss, hueLut, KEY_HUES } from './colour.js';
import { unitFromName, rangeText } from './units.js';
import { $, el, store, tabStore, clampInt, fmtNum, fmtPct, fmtClock, fmtCost } from './util.js';
import { TimelineView } from './timeline.js';
import { SelectionPanel } from './selectpanel.js';
import { ExplainPanel } from './explain.js';

const PROTOCOL = 1;
const HIST_KINDS = new Set(['hist', 'lhist', 'quantize', 'lquantize', 'llquantize']);
const HISTORY_CHOICES = [60, 120, 300, 600, 1800];
const [HISTORY_MIN, HISTORY_MAX, HISTORY_DEFAULT] = [60, 1800, 120]; // ticks, as README says
const MAX_OUTPUT_LINES = 500;
const CUSTOM = ''; // value of the "custom script" entry of #preset
const LANG_NAMES = { bpftrace: 'bpftrace', d: 'D' };
// Fetches of skipped frames (a `seq` gap) awaiting their `history` answer; further gaps wait
// and go out merged, so a page that keeps falling behind never floods the server.
const MAX_FETCHES_IN_FLIGHT = 2;
const HISTORIES_KEPT = 20; // `history` messages remembered for window.heat.histories
const EXPORT_FORMAT = 'heat-actix-ndjson-1';
const RECORDED_GAP = 'nothing recorded in this slice (the watch was not running)';
// A fleet source's value in the Source picker: `fleet:NAME` (watch names have no colon).
const FLEET = 'fleet:';
const FLEET_RANGE_MS = 3600000; // what choosing a fleet source shows first: the last hour
const FLEET_GAP = 'no host has data in this column in Prometheus';

// `args->id`, not `args.id`: bpftrace 0.17 (Debian 12) knows only the arrow, and later releases
// still accept it.
const EXAMPLE_SCRIPT = `// syscall latency in microseconds, by syscall id
tracepoint:raw_syscalls:sys_enter {
  @ts[tid] = nsecs;
}
tracepoint:raw_syscalls:sys_exit /@ts[tid]/ {
  $us = (nsecs - @ts[tid]) / 1000;
  @us[args->id] = lhist($us, 0, 64, 2);
  @calls = count();
  delete(@ts[tid]);
}
`;

const params = new URLSearchParams(location.search);
const token = takeToken();
let history = clampInt(params.get('columns') ?? store.get('history'), HISTORY_MIN, HISTORY_MAX, HISTORY_DEFAULT);

/**
 * The token of `?token=`, taken out of the address at once so it is not kept in the history,
 * bookmarks or screenshots; sessionStorage keeps it for reloads of this tab (never
 * localStorage, which outlives the tab). Without one in the address: this tab's earlier one.
 */
function takeToken() {
  const fromUrl = params.get('token');
  if (params.has('token')) {
    const u = new URL(location.href);
    u.searchParams.delete('token');
    window.history.replaceState(window.history.state, '', u.pathname + u.search + u.hash);
  }
  if (fromUrl) tabStore.set('token', fromUrl);
  return fromUrl || tabStore.get('token');
}

const ui = {
  status: $('status'), retry: $('retry'), run: $('run'), session: $('session'), backend: $('backend'),
  tickInfo: $('tick-ms'), frames: $('frames'), dropped: $('dropped'), viewers: $('viewers'), cost: $('cost'),
  preset: $('preset'), presetHint: $('preset-hint'), script: $('script'), tick: $('tick'),
  scriptField: $('script-field'), scriptLang: $('script-lang'), customOff: $('custom-off'),
  auth: $('auth'), authMessage: $('auth-message'), tokenInput: $('token-input'),
  start: $('start'), stop: $('stop'), error: $('error'), aggregation: $('aggregation'),
  heatMeta: $('heat-meta'), live: $('live'), scalars: $('scalars'),
  outputPanel: $('output-panel'), output: $('output'), outputCount: $('output-count'),
  toggle: $('toggle-controls'), scale: $('scale'), colour: $('colour'), history: $('history'),
  pause: $('pause'), export: $('export'), cell: $('cell'), keysMerge: $('keys-merge'),
  legendText: $('legend-text'), legendMin: $('legend-min'), legendMax: $('legend-max'), legendRamp: $('legend-ramp'),
};

const S = {
  state: 'connecting',   // connection: connecting | open | closed
  run: 'idle',           // program: idle | starting | running | stopped
  stopReason: null,
  hello: null,
  presets: [],
  custom: false,         // whether this session may run custom scripts (hello.custom_scripts)
  authMessage: null,     // why the server refused the token (error `unauthorized`)
  started: null,
  session: null,
  backend: null,
  tick: null,
  unit: null,            // the preset's unit, or null for custom scripts
  frames: 0,
  dropped: 0,            // frames skipped live (gaps in `seq`)
  refetched: 0,          // of those, frames fetched back and put in their place
  expectSeq: 1,          // the next live seq; below it, only placeholders of `missing` are filled
  missing: new Set(),    // seqs of placeholder columns: ticks whose frame has not arrived
  fetches: { inFlight: 0, queue: [], sent: 0 }, // queue: [from, to] ranges not asked yet
  live: 0,              // live frames of this run (history and fetched frames aside)
  histories: [],         // the last few `history` messages: {from, to, frames, liveBefore}
  dropLive: 0,           // test hook: live frames to drop as if the server had skipped them
  viewers: null,         // sessions watching the program (`started.viewers`, `viewers`)
  shared: null,          // whether the program is shared (`started.shared`)
  program: null,         // the program's id (`started.program`)
  running: [],           // shared preset programs: `hello.running`, kept current for our own
  lastFrame: null,
  cost: null,            // the last live frame's `cost` (what the program costs the host)
  models: new Map(),     // histogram aggregations of the running program, by name
  selected: null,        // name of the aggregation shown in the heatmap
  paused: false,
  pausedFrames: 0,       // frames buffered since the pause
  cell: null,            // {abs, row} of the clicked cell
  outputLines: [],
  // History (issue 13). `mode`: live (the websocket's program), past (a watch's recorded
  // range, read through /frames) or file (an imported export).
  mode: 'live',
  source: '',            // '' = the live program, else the name of a watch, or `fleet:NAME`
  fleetOn: false,        // the server reads a fleet from Prometheus (`GET /api/watches` says)
  fleet: [],             // GET /api/fleet/watches: watches hosts export, with their instances
  watches: [],           // GET /api/watches
  past: null,            // {watch, from, to, grid: {origin, width, count}, frames}
  file: null,            // {name, header, frames} of an imported file
  marks: [],             // [{from, to, label}] of the shown range
  frameLog: new Map(),   // live frames by seq (the shown history), for export
  loads: 0,              // past ranges and files drawn (tests wait on it)
  loadGen: 0,            // a newer range request makes older answers stale
  pendingView: null,     // {isolate, exclude} key names from a permalink, applied once the keys exist
  lastLink: null,
  watchesAsked: false,   // /api/watches is read once the Source picker is used (or a link names a watch)
};

const view = new HeatmapView({
  canvas: $('heatmap'), wrap: $('heat-wrap'), tooltip: $('tooltip'), empty: $('heat-empty'), capacity: history,
  onLegend: renderLegend, onCellClick: showCell, onBox: (box, done) => selection.onBox(box, done),
});
const timeline = new TimelineView({ canvas: $('timeline'), onPan: (from, to) => pickRange(from, to), plotX });
const hui = {
  source: $('source'), customRange: $('custom-range'), rangeFrom: $('range-from'), rangeTo: $('range-to'),
  rangeGo: $('range-go'), rangeInfo: $('range-info'), copyLink: $('copy-link'), exportNdjson: $('export-ndjson'),
  importFile: $('import-file'), rangeButtons: [...document.querySelectorAll('[data-range]')],
};

const keys = new KeysView({ root: $('keys'), summary: $('keys-summary'), onChange: setFilter });
const scalars = new ScalarsView(ui.scalars);
const selection = new SelectionPanel({
  root: $('select-panel'),
  host: {
    model: currentModel,
    view,
    unit: unitOf,
    colMs: () => (S.mode === 'live' ? S.tick || 1000 : (S.past ?? S.file).grid.width),
    mode: () => S.mode,
    // The fleet view's keys are its hosts (Prometheus's `instance`), so the panel names them so.
    keyNoun: () => (S.mode === 'past' && isFleet(S.past.watch) ? 'host' : 'key'),
    isolate(name) {
      const m = currentModel();
      // A key not seen yet (a program just joined) is isolated once it is, as a permalink's is.
      if (name != null && (!m || m.keyIds.get(name) === undefined)) { S.pendingView = { isolate: name, exclude: [] }; return; }
      if (m) setFilter(name == null ? { isolate: null, exclude: new Set() } : { isolate: m.keyIds.get(name), exclude: new Set() });
    },
    /** A configured watch whose live program the shown recorded data came from, or null. */
    async watchToRun() {
      const name = S.mode === 'past' ? S.past.watch : S.file?.header?.watch;
      if (!name) return null;
      if (!S.watchesAsked || !watchOf(name)) await loadWatches();
      return watchOf(name)?.preset ? name : null;
    },
    joinWatch(name) {
      if (![...hui.source.options].some((o) => o.value === name)) hui.source.append(el('option', { value: name, text: `watch ${name}` }));
      S.source = name;
      hui.source.value = name;
      goLive(true);
    },
    running: () => S.mode === 'live' && S.run === 'running',
    schedule: () => schedulePanels(),
    // Stacks are live only: a recorded range or a file has none (its ticks are not Explain's).
    explained: (box) => (S.mode === 'live' ? explain.within(box) : null),
    explainSpans: () => (S.mode === 'live' ? explain.spans() : []),
  },
});
view.keyHue = (id) => keys.hue(id);
const explainRoot = el('section', { id: 'explain-panel', class: 'select-panel explain-panel', hidden: '', 'aria-label': 'Explain: the stacks of the selected band, live' });
$('select-panel').after(explainRoot);
const explain = new ExplainPanel({
  root: explainRoot,
  host: {
    send: (msg) => conn.send(msg),
    program: () => S.program,
    running: () => S.mode === 'live' && S.run === 'running',
    tsOf: frameTs,
    baseline: () => selection.baseBox,
    setBaseline: (box) => selection.useBaseline(box),
    setTarget: (box) => selection.set(box),
    changed: () => selection.render(),
  },
});

/**
 * The time (ms) of `program`'s frame `seq`, as its column has it (an Explain tick is placed by
 * its frame), or null: another program's, or a frame this page does not hold (yet).
 */
function frameTs(program, seq) {
  if (S.mode !== 'live' || program !== S.program || !Number.isInteger(seq)) return null;
  const f = S.frameLog.get(seq);
  if (f) return f.ts_ms;
  const m = currentModel();
  const i = m ? m.indexOfSeq(seq) : -1;
  return i >= 0 ? m.cols[i].meta.ts : null;
}

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const proto = new ProtocolReader();
const conn = new Connection(wsUrl, { onState, onMessage, token });

// ── protocol ──

function onState(state) {
  S.state = state;
  if (state === 'closed' && (S.run === 'running' || S.run === 'starting')) {
    S.run = 'stopped'; // the server stops a session's program when its socket closes
    S.stopReason = 'disconnected';
  }
  if (state === 'closed' && conn.needsToken) askForToken();
  renderTop();
}

/** After a 4401: no more retries (the connection stopped them); a field for another token. */
function askForToken() {
  const had = !!conn.token;
  if (had) tabStore.remove('token'); // refused: a reload must not offer it again
  ui.authMessage.textContent = had
    ? `The server refused the token${S.authMessage ? ` (${S.authMessage})` : ''}. Enter another one.`
    : 'This server needs a token. Enter yours, or open this page as /?token=TOKEN.';
  ui.auth.hidden = false;
  ui.tokenInput.focus();
}

function submitToken(ev) {
  ev.preventDefault(); // the form must never be submitted: that would put the token in a URL
  const t = ui.tokenInput.value.trim();
  if (!t) { ui.tokenInput.focus(); return; }
  ui.tokenInput.value = '';
  tabStore.set('token', t);
  conn.setToken(t);
  S.authMessage = null;
  conn.connect();
}

/** Whatever the connection delivers (parsed JSON or compact bytes), through protocol.js. */
function onMessage(data) {
  let msg;
  try {
    msg = proto.read(data);
  } catch (e) {
    showError('protocol', `unreadable message from the server: ${e.message}`);
    return undefined;
  }
  if (!msg) return undefined;
  switch (msg.type) {
    case 'hello': return onHello(msg);
    case 'started': return onStarted(msg);
    case 'frame': return onFrame(msg);
    case 'history': return onHistory(msg);
    case 'viewers': return onViewers(msg);
    case 'stopped': explain.onProgramStopped(); return onStopped(msg);
    case 'error': explain.onError(msg); return onError(msg);
    case 'explain_started': case 'explain': case 'explain_stopped': return explain.onMessage(msg);
    default: return undefined; // later protocol revisions may add messages: ignore them
  }
}

function onHello(msg) {
  conn.healthy();
  ui.auth.hidden = true;
  S.authMessage = null;
  Object.assign(S, {
    hello: msg, session: msg.session ?? null, tick: msg.tick_ms ?? null,
    backend: Array.isArray(msg.backends) ? msg.backends.join(', ') : null,
    started: null, run: 'idle', stopReason: null, lastFrame: null,
  });
  if (S.mode === 'live') { // a past range or a file stays on screen across reconnects
    S.unit = null;
    resetSeqs(1);
    resetRun([]);
  }
  clearError();
  if (msg.protocol !== PROTOCOL) showError('protocol', `server speaks protocol ${msg.protocol}; this page speaks ${PROTOCOL}`);
  // A server without the field (before it existed) let everyone try: the server still decides.
  S.running = Array.isArray(msg.running) ? msg.running.filter((r) => r && typeof r.preset === 'string').map((r) => ({ ...r })) : [];
  fillPresets(Array.isArray(msg.presets) ? msg.presets : [], msg.custom_scripts !== false, msg.role);
  const [lo, hi] = Array.isArray(msg.tick_ms_range) ? msg.tick_ms_range : [100, 10000];
  ui.tick.min = lo;
  ui.tick.max = hi;
  ui.tick.value = clampInt(store.get('tick'), lo, hi, clampInt(msg.tick_ms, lo, hi, 1000));
  if (msg.tick_ms && S.mode === 'live') view.setTick(msg.tick_ms);
  // The watch list is read when someone looks for it (the Source picker) or a link names one:
  // not on every page load.
  if (S.source) loadWatches();
  if (S.mode === 'live' && S.source) startWatch(); // ?watch=NAME: join it
  renderTop();
}

function onStarted(msg) {
  if (S.mode !== 'live') return; // a program left while showing the past
  Object.assign(S, {
    started: msg, run: 'running', stopReason: null, cost: null,
    viewers: Number.isInteger(msg.viewers) ? msg.viewers : null,
    shared: typeof msg.shared === 'boolean' ? msg.shared : null,
    program: msg.program ?? null,
    backend: msg.engine ? `${msg.backend} · ${msg.engine}` : (msg.backend ?? S.backend), tick: msg.tick_ms ?? S.tick, session: msg.session ?? S.session, unit: msg.unit ?? null,
  });
  clearError();
  noteViewers();
  // A joiner's first frame is the oldest of the history that follows (v1.1); before v1.1, 1.
  resetSeqs(Number.isInteger(msg.first_seq) ? msg.first_seq : 1);
  resetRun(Array.isArray(msg.aggregations) ? msg.aggregations : []);
  if (S.tick) view.setTick(S.tick);
  renderPresetHint();
  renderTop();
}

function onFrame(msg) {
  if (S.mode !== 'live') return; // the picture shows the past: live frames are not its columns
  if (S.dropLive > 0) { S.dropLive--; return; } // test hook: as if the server had skipped it
  S.live++;
  const r = ingest([msg], true);
  S.lastFrame = msg;
  if (msg.cost) S.cost = msg.cost;
  if (S.run === 'idle' || S.run === 'starting') S.run = 'running';
  if (r.listChanged) fillAggregations();
  if (S.paused) {
    // Paused: the frame is in the model (nothing is lost); only the drawing waits.
    S.pausedFrames++;
  } else if (!r.listChanged) {
    if (r.filled) view.full(); else view.update(r.rowsChanged);
  }
  for (const [from, to] of r.gaps) S.fetches.queue.push([from, to]);
  pumpFetches();
  schedulePanels();
  renderTop();
}

/**
 * Frames of the past: the recent frames a joiner gets after `started`, or the answer to a
 * `fetch`. They go into the model before (or, for a fetch, between) the live ones, each at
 * its seq; one redraw for them all.
 */
function onHistory(msg) {
  if (S.mode !== 'live') return;
  if (S.fetches.inFlight > 0) S.fetches.inFlight--; // a fetch's answer (the joiner's comes before any fetch)
  const r = ingest(msg.frames, false);
  S.histories.push({ from: msg.from, to: msg.to, frames: msg.frames.length, liveBefore: S.live });
  if (S.histories.length > HISTORIES_KEPT) S.histories.shift();
  if (r.listChanged) fillAggregations();
  if (S.paused) S.pausedFrames += r.added + r.filled;
  else if (!r.listChanged) view.full();
  pumpFetches();
  schedulePanels();
  renderTop();
}

function onViewers(msg) {
  if (Number.isInteger(msg.count)) S.viewers = msg.count;
  noteViewers();
  renderTop();
}

/**
 * The picker's "N watching" follows what this tab knows: `hello.running` at connect, then the
 * viewer count of the program it watches (and one viewer less when it leaves).
 */
function noteViewers(leaving = false) {
  const st = S.started;
  if (!st || !st.preset || !st.shared || S.program === null || S.viewers === null) return;
  let entry = S.running.find((r) => r.program === S.program);
  if (!entry) { entry = { program: S.program, preset: st.preset, tick_ms: st.tick_ms, viewers: 0 }; S.running.push(entry); }
  entry.viewers = leaving ? S.viewers - 1 : S.viewers;
  S.running = S.running.filter((r) => r.viewers > 0);
  for (const o of ui.preset.options) {
    const n = o.value && o.value !== CUSTOM ? watching(o.value) : 0;
    if (o.value && o.value !== CUSTOM) o.textContent = n ? `${o.value} · ${n} watching` : o.value;
  }
  renderPresetHint();
}

/** A new run (or connection): frames from `first` on; no gap, no fetch pending. */
function resetSeqs(first) {
  S.frameLog = new Map();
  Object.assign(S, { frames: 0, live: 0, histories: [], dropped: 0, refetched: 0, expectSeq: first, missing: new Set(), fetches: { inFlight: 0, queue: [], sent: 0 } });
}

/**
 * Frames into the run, keyed by `seq`, whatever brought them (live, a joiner's history, a
 * fetch's answer). A frame past the expected seq first adds a placeholder column for each tick
 * in between (a gap: frames skipped while this page was behind); a frame before it fills its
 * placeholder, or is a duplicate and ignored. Returns what the drawing needs to know, and the
 * gaps a live frame revealed (`[from, to]`, to fetch).
 */
function ingest(frames, live) {
  const out = { rowsChanged: false, listChanged: false, added: 0, filled: 0, gaps: [] };
  for (const f of frames) {
    const seq = Number.isInteger(f.seq) ? f.seq : null;
    if (seq !== null && seq < S.expectSeq) {
      if (!S.missing.delete(seq)) continue; // already held: a duplicate
      fillFrame(f, out);
      continue;
    }
    if (seq !== null && seq > S.expectSeq) {
      S.dropped += seq - S.expectSeq;
      const gap = addMissing(S.expectSeq, seq, f);
      if (live && gap) out.gaps.push(gap);
    }
    appendFrame(f, out);
  }
  return out;
}

function frameMeta(f) {
  return { seq: f.seq, ts: Number.isFinite(f.ts_ms) ? f.ts_ms : Date.now(), interval: f.interval_ms, missing: false };
}

/** The newest frame: a column at the right of every model. */
function appendFrame(f, out) {
  S.frames++;
  out.added++;
  if (Number.isInteger(f.seq)) S.expectSeq = Math.max(S.expectSeq, f.seq + 1);
  const meta = frameMeta(f);
  logFrame(f, meta);
  if (f.interval_ms > 0 && !S.tick) view.setTick(f.interval_ms);
  const aggs = Array.isArray(f.aggregations) ? f.aggregations : [];
  const present = new Set();
  for (const a of aggs) {
    if (!a || typeof a.name !== 'string' || !HIST_KINDS.has(a.kind)) continue;
    let m = S.models.get(a.name);
    if (!m) { m = addModel(a.name, a.kind, a.layout); out.listChanged = true; }
    present.add(a.name);
    const changed = m.push(a, meta);
    if (a.name === S.selected) out.rowsChanged = out.rowsChanged || changed;
  }
  for (const [name, m] of S.models) {
    if (present.has(name)) continue;
    const changed = m.push(null, meta); // keep every history aligned in time
    if (name === S.selected) out.rowsChanged = out.rowsChanged || changed;
  }
  scalars.push(aggs, f.interval_ms, f.seq);
  if (Array.isArray(f.output) && f.output.length) appendOutput(f.output);
}

/**
 * Placeholder columns for the ticks `from` … `next.seq - 1`, whose frames were skipped: at most
 * a history's worth (older ones would scroll out at once). Returns the range they cover.
 */
function addMissing(from, to, next) {
  const first = Math.max(from, to - history);
  if (first >= to) return null;
  const tick = S.tick || next.interval_ms || 1000;
  const nextTs = Number.isFinite(next.ts_ms) ? next.ts_ms : Date.now();
  for (let seq = first; seq < to; seq++) {
    pushPlaceholder({ seq, ts: nextTs - (to - seq) * tick, interval: null, missing: true });
    S.missing.add(seq);
  }
  // Placeholders that scrolled out of every model can no longer be filled.
  if (S.missing.size > history) for (const seq of S.missing) if (seq < to - history) S.missing.delete(seq);
  return [first, to - 1];
}

/** An empty, marked column in every model: a tick with no frame (yet). */
function pushPlaceholder(meta) {
  for (const m of S.models.values()) m.push(null, meta);
  scalars.pushMissing(meta.seq);
}

/** Live frames are kept (the shown history's worth) so that Export can write them. */
function logFrame(f, meta) {
  if (S.mode !== 'live' || !Number.isInteger(f.seq)) return;
  S.frameLog.set(f.seq, { ...f, ts_ms: meta.ts });
  if (S.frameLog.size > history) {
    const keep = S.expectSeq - history;
    for (const seq of S.frameLog.keys()) if (seq < keep) S.frameLog.delete(seq);
  }
}

/** A skipped tick's frame, fetched back: into its placeholder column, in place. */
function fillFrame(f, out) {
  S.frames++;
  S.refetched++;
  out.filled++;
  const meta = frameMeta(f);
  logFrame(f, meta);
  const aggs = Array.isArray(f.aggregations) ? f.aggregations : [];
  const byName = new Map(aggs.filter((a) => a && typeof a.name === 'string').map((a) => [a.name, a]));
  for (const [name, m] of S.models) {
    const changed = m.fill(byName.get(name) ?? null, meta);
    if (name === S.selected && changed) out.rowsChanged = true;
  }
  scalars.fill(aggs, f.seq);
  if (Array.isArray(f.output) && f.output.length) appendOutput(f.output);
}

/**
 * Asks for skipped frames again (`fetch`, v1.1): each gap once, at most
 * MAX_FETCHES_IN_FLIGHT at a time; gaps found meanwhile go out as one range, trimmed to the
 * placeholders still waiting. What the server no longer holds stays a gap (red mark).
 */
function pumpFetches() {
  const q = S.fetches.queue;
  while (q.length && S.fetches.inFlight < MAX_FETCHES_IN_FLIGHT) {
    let [from, to] = q.length === 1 ? q[0] : [Math.min(...q.map((r) => r[0])), Math.max(...q.map((r) => r[1]))];
    q.length = 0;
    from = Math.max(from, S.expectSeq - history); // older ones have scrolled out
    while (from <= to && !S.missing.has(from)) from++;
    while (to >= from && !S.missing.has(to)) to--;
    if (from > to || S.run !== 'running' || !S.hello?.encodings) return; // nothing left, or a server before v1.1
    if (!conn.send({ type: 'fetch', from, to })) return;
    S.fetches.inFlight++;
    S.fetches.sent++;
  }
}

function onStopped(msg) {
  if (S.run === 'running') noteViewers(true);
  S.run = 'stopped';
  S.stopReason = msg.reason ?? null;
  renderTop();
}

function onError(msg) {
  if (msg.code === 'unauthorized') { // the close 4401 follows; the token field shows it
    S.authMessage = typeof msg.message === 'string' ? msg.message : null;
    return;
  }
  if (S.fetches.inFlight > 0 && typeof msg.message === 'string' && msg.message.startsWith('fetch:')) {
    // A fetch that crossed the program's end: its gap stays marked; nothing for the user to do.
    S.fetches.inFlight--;
    return;
  }
  showError(msg.code || 'error', typeof msg.message === 'string' ? msg.message : JSON.stringify(msg.message ?? ''));
  if (S.run === 'starting') S.run = 'idle';
  renderTop();
}

// ── run state ──

function resetRun(aggs) {
  S.models = new Map();
  for (const a of aggs) if (a && HIST_KINDS.has(a.kind)) addModel(a.name, a.kind, a.layout);
  scalars.reset(aggs.filter((a) => a && SCALAR_KINDS.has(a.kind)));
  S.outputLines = [];
  ui.output.textContent = '';
  ui.outputPanel.hidden = true;
  S.pausedFrames = 0;
  fillAggregations();
}

function addModel(name, kind, layout) {
  const m = new HistModel(name, kind, layout, history);
  S.models.set(name, m);
  return m;
}

function unitOf(m) { return S.unit || (m ? unitFromName(m.name) : null); }

function fillAggregations() {
  const names = [...S.models.keys()];
  const wanted = [S.selected, store.get('aggregation'), names[0]].find((n) => n && S.models.has(n)) ?? null;
  ui.aggregation.replaceChildren(...(names.length
    ? names.map((n) => el('option', { value: n, text: `${n}  (${S.models.get(n).kind})` }))
    : [el('option', { value: '', text: 'no histogram' })]));
  ui.aggregation.disabled = names.length < 2;
  ui.aggregation.value = wanted ?? '';
  selectAggregation(wanted);
}

function selectAggregation(name) {
  S.selected = name && S.models.has(name) ? name : null;
  const m = S.selected ? S.models.get(S.selected) : null;
  view.setEmptyText(S.run === 'running' ? 'This program has no histogram aggregation.' : 'Pick a program and press Start.');
  view.unit = unitOf(m);
  keys.setModel(m);
  view.setModel(m);
  showCell(null);
  renderHeatMeta();
}

function currentModel() { return S.selected ? S.models.get(S.selected) : null; }

function setFilter(f) {
  const m = currentModel();
  if (!m) return;
  m.setFilter(f);
  keys.invalidate();
  keys.render();
  view.full();
  refreshCell();
  selection.dirty = true;
  selection.render();
}

// Side panels (keys, scalars, cell details, meta) are rebuilt at most once per animation frame
// and outside the heatmap's per-tick drawing.
let panelsQueued = false;
function schedulePanels() {
  if (panelsQueued) return;
  panelsQueued = true;
  requestAnimationFrame(() => {
    panelsQueued = false;
    applyPendingView();
    if (keys.render() && view.hueByKey) view.full(); // a key took another hue
    scalars.render();
    refreshCell();
    selection.render();
    renderHeatMeta();
    if (S.mode === 'live' && S.source) renderTimeline();
  });
}

function renderHeatMeta() {
  const m = currentModel();
  const parts = [];
  if (isFleet(S.source) && S.mode === 'past') parts.push(`fleet ${S.source.slice(FLEET.length)} · hosts as keys`);
  else if (S.started && S.started.preset) parts.push(S.started.preset);
  if (m) {
    const r = m.visibleRange();
    parts.push(`${m.kind} · ${m.rows.length} buckets${r && (r[1] - r[0] + 1) < m.rows.length ? ` (${r[1] - r[0] + 1} shown)` : ''}`);
    const u = unitOf(m);
    if (u) parts.push(u === 'us' ? 'µs' : u);
    parts.push(S.mode === 'live' ? `${m.length}/${history} ticks` : `${m.length} columns`);
  }
  if (S.paused) parts.push(`paused, ${S.pausedFrames} new frame${S.pausedFrames === 1 ? '' : 's'} buffered`);
  ui.heatMeta.textContent = parts.join(' · ');
}

function renderLegend(scale) {
  const [text, lo, hi] = scale.describe();
  ui.legendText.textContent = text;
  ui.legendMin.textContent = lo;
  ui.legendMax.textContent = /^\d+$/.test(hi) ? fmtNum(Number(hi)) : hi;
  $('legend').setAttribute('aria-label', `colour scale: ${scale.kind}, ${text}`);
  if (view.hueByKey) {
    // Hue by key: one strip per hue, brightness still follows the scale.
    const stops = KEY_HUES.slice(0, 5).map((h, i, a) => `rgb(${[...hueLut(h).slice(200 * 4, 200 * 4 + 3)].join(',')}) ${(i / a.length) * 100}% ${((i + 1) / a.length) * 100}%`);
    ui.legendRamp.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
    ui.legendText.textContent = `hue = top key in cell · brightness ${text.replace('colour ', '')}`;
  } else {
    ui.legendRamp.style.background = rampCss();
  }
}

// ── cell details (click) ──

function showCell(info) {
  const m = currentModel();
  S.cell = info && m ? { abs: m.pushed - m.length + info.col, row: info.row } : null;
  refreshCell();
}

/** Re-render the clicked cell's breakdown from the model (it may have scrolled or expired). */
function refreshCell() {
  const m = currentModel();
  const box = ui.cell;
  if (!S.cell || !m) { box.hidden = true; box.replaceChildren(); return; }
  const col = S.cell.abs - (m.pushed - m.length);
  if (col < 0 || col >= m.length) { box.hidden = true; S.cell = null; return; }
  const info = view.cellInfo({ col, row: S.cell.row });
  const close = el('button', { type: 'button', class: 'ghost small', text: 'Close' });
  close.addEventListener('click', () => { S.cell = null; view.selected = null; view.paintLayer(); refreshCell(); });
  const total = info.keys.reduce((a, k) => a + k.count, 0);
  const table = el('table', { class: 'cell-keys' },
    el('thead', {}, el('tr', {}, el('th', { text: 'key' }), el('th', { class: 'num', text: 'events' }), el('th', { class: 'num', text: 'share' }))));
  const body = el('tbody');
  for (const k of info.keys) {
    const tr = el('tr', { class: k.shown ? null : 'off', 'data-key': k.name }, el('td', { class: 'mono', text: k.name }), el('td', { class: 'num', text: fmtNum(k.count) }), el('td', { class: 'num', text: fmtPct(total ? k.count / total : 0) }));
    body.append(tr);
  }
  if (!info.keys.length) body.append(el('tr', {}, el('td', { class: 'muted', colspan: 3, text: 'No events in this cell.' })));
  table.append(body);
  box.replaceChildren(
    el('div', { class: 'cell-head' },
      el('div', {},
        el('b', { text: rangeText(info.range, unitOf(m)) }),
        el('span', { class: 'muted', text: ` · ${fmtClock(info.ts)} (seq ${info.seq ?? '–'}) · ${fmtNum(total)} events, ${fmtPct(info.pct)} of the column, ${fmtPct(info.below)} below` })),
      close),
    table);
  box.hidden = false;
}

// ── controls ──

/**
 * The program picker: the presets, and "Custom script" only when this session may run one
 * (`custom`); a viewer is not offered what the server would refuse. Why not, under the picker.
 */
function fillPresets(presets, custom, role) {
  const saved = store.get('preset');
  const opts = presets.map((p) => {
    const n = watching(p.name);
    return el('option', { value: p.name, title: p.description || null, text: n ? `${p.name} · ${n} watching` : p.name });
  });
  if (custom) opts.push(el('option', { value: CUSTOM, text: 'Custom script…' }));
  if (!opts.length) opts.push(el('option', { value: '', disabled: true, text: S.hello ? 'no presets' : 'waiting for the server…' }));
  ui.preset.replaceChildren(...opts);
  S.presets = presets;
  S.custom = custom;
  ui.scriptField.hidden = !custom;
  ui.customOff.hidden = custom || !S.hello;
  ui.customOff.textContent = role === 'viewer'
    ? 'This token runs presets only; custom scripts need an operator token.'
    : 'Custom scripts are off on this server (policy.custom_scripts = false).';
  const names = presets.map((p) => p.name);
  ui.preset.value = (saved === CUSTOM && custom) || names.includes(saved) ? saved : (names[0] ?? CUSTOM);
  renderLang();
  renderPresetHint();
}

/** The language the editor's script is sent as (`startMessage`). */
function scriptLang() { return looksLikeD(ui.script.value) ? 'd' : 'bpftrace'; }

/** The editor's label and the picker's custom entry name the language the script runs as. */
function renderLang() {
  const name = LANG_NAMES[scriptLang()];
  ui.scriptLang.textContent = name;
  const opt = [...ui.preset.options].find((o) => o.value === CUSTOM && !o.disabled);
  if (opt) opt.textContent = `Custom script (${name})…`;
}

/** Shared programs of a preset running now, as far as this tab knows (`hello.running`, v1.1). */
function runningOf(name) {
  return S.running.filter((r) => r.preset === name);
}

/** Viewers of a preset's running programs. */
function watching(name) { return runningOf(name).reduce((a, r) => a + (Number(r.viewers) || 0), 0); }

function renderPresetHint() {
  const p = S.presets.find((x) => x.name === ui.preset.value);
  ui.presetHint.replaceChildren();
  if (p) {
    ui.presetHint.append(p.description || '');
    // Starting with the same tick (and filters) joins a running program and shows its past.
    const joinable = runningOf(p.name).filter((r) => r.pid == null && r.comm == null).map((r) => `${r.tick_ms} ms`);
    const tags = [p.lang, p.unit && `unit: ${p.unit}`, joinable.length && `running at tick ${joinable.join(', ')}`].filter(Boolean).join(' · ');
    if (tags) ui.presetHint.append(el('span', { class: 'tags', text: tags }));
    // Why this preset runs on bpftrace when its native version was the first choice.
    const why = S.started && S.started.preset === p.name ? S.started.fallback : null;
    if (why) ui.presetHint.append(el('ul', { class: 'notes' }, el('li', { text: `on bpftrace: ${why}` })));
  } else if (S.custom) {
    ui.presetHint.append(scriptLang() === 'd'
      ? 'Runs the script below as D (on libdtrace where the server has it, else compiled to bpftrace). Ctrl+Enter starts it.'
      : 'Runs the script below with bpftrace (D is recognised by its probes and aggregations, and runs as D). Ctrl+Enter starts it.');
    // What a D translation only approximates, as `started.notes` says.
    const notes = S.started && Array.isArray(S.started.notes) ? S.started.notes : [];
    if (notes.length) ui.presetHint.append(el('ul', { class: 'notes' }, ...notes.map((n) => el('li', { text: n }))));
  }
  ui.script.classList.toggle('inactive', !!p);
}

function startMessage() {
  const lo = Number(ui.tick.min) || 100, hi = Number(ui.tick.max) || 10000;
  const tick = clampInt(ui.tick.value, lo, hi, S.hello?.tick_ms ?? 1000);
  ui.tick.value = tick;
  store.set('tick', tick);
  // Compact frames when the server offers them (v1.1); a server before v1.1 gets no field.
  const encoding = chooseEncoding(S.hello, params.get('encoding'));
  const enc = encoding ? { encoding } : {};
  if (ui.preset.value !== CUSTOM || !S.custom) return { type: 'start', preset: ui.preset.value, tick_ms: tick, ...enc };
  return { type: 'start', lang: scriptLang(), script: ui.script.value, tick_ms: tick, ...enc };
}

/** D's probe syntax and aggregating functions have no bpftrace spelling. */
function looksLikeD(script) {
  return /:::|\bself->|\bthis->|\b(l|ll)?quantize\s*\(|\b(tick|profile)-\d|\bsyscall::/.test(script);
}

function start() {
  const msg = startMessage();
  if (!msg.script && !msg.preset) { showError('client', 'Pick a program first.'); return; }
  if (msg.script !== undefined && !msg.script.trim()) { showError('client', 'The script is empty.'); return; }
  const before = S.run;
  S.run = 'starting'; // before sending: the answer may arrive before send() returns
  ui.error.classList.add('stale');
  if (!conn.send(msg)) {
    S.run = before;
    showError('client', 'Not connected; the page reconnects by itself.');
  }
  renderTop();
}

function stop() { conn.send({ type: 'stop' }); }

function setPaused(p) {
  S.paused = p;
  view.frozen = p;
  ui.pause.textContent = p ? 'Resume' : 'Pause';
  ui.pause.classList.toggle('active', p);
  ui.pause.setAttribute('aria-pressed', String(p));
  if (!p) { S.pausedFrames = 0; view.full(); } // catch up on everything buffered in one redraw
  renderHeatMeta();
  renderTop();
}

function setHistory(n) {
  history = n;
  store.set('history', n);
  if (S.mode === 'past') { openRange(S.past.watch, S.past.from, S.past.to); return; } // columns = history
  if (S.mode === 'file') { showFile({ name: S.file.name, ...parseExport(S.file.text) }); return; }
  for (const m of S.models.values()) m.setCapacity(n);
  view.setCapacity(n);
  refreshCell();
  renderHeatMeta();
}

async function exportPng() {
  const blob = await view.toBlob();
  if (!blob) return;
  const a = el('a', { href: URL.createObjectURL(blob), download: `heat-${S.started?.preset || 'custom'}-${S.selected || ''}-${new Date().toISOString().replace(/[:.]/g, '-')}.png`.replace(/@/g, '') });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function showError(code, message) {
  ui.error.dataset.code = code;
  ui.error.textContent = message;
  ui.error.classList.remove('stale');
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  delete ui.error.dataset.code;
  ui.error.classList.remove('stale');
  ui.error.hidden = true;
}

function appendOutput(lines) {
  S.outputLines.push(...lines.map(String));
  if (S.outputLines.length > MAX_OUTPUT_LINES) S.outputLines.splice(0, S.outputLines.length - MAX_OUTPUT_LINES);
  ui.output.textContent = S.outputLines.join('\n');
  ui.output.scrollTop = ui.output.scrollHeight;
  ui.outputCount.textContent = `(${S.outputLines.length} lines)`;
  ui.outputPanel.hidden = false;
}

// ── top bar ──

function renderTop() {
  ui.status.textContent = S.state;
  ui.status.dataset.state = S.state;
  document.body.dataset.conn = S.state;
  renderRetry();
  const runText = S.run === 'stopped' && S.stopReason ? `stopped (${S.stopReason.replace(/_/g, ' ')})` : S.run;
  const what = S.run === 'running' && S.started ? S.started.preset || 'custom script' : null;
  ui.run.textContent = what ? `running ${what}` : runText;
  ui.run.dataset.run = S.run;
  ui.live.textContent = S.mode !== 'live' ? S.mode : S.paused ? 'paused' : S.run === 'running' ? 'live' : runText;
  ui.live.dataset.live = S.mode !== 'live' ? 'paused' : S.paused ? 'paused' : S.run;
  ui.session.textContent = S.session ?? '–';
  ui.backend.textContent = S.backend ?? '–';
  ui.tickInfo.textContent = S.tick ? `${S.tick} ms` : '–';
  ui.frames.textContent = fmtNum(S.frames);
  // Skipped frames, and how many of them were fetched back into their place.
  ui.dropped.textContent = S.refetched ? `${fmtNum(S.dropped)} (${fmtNum(S.refetched)} fetched)` : fmtNum(S.dropped);
  ui.dropped.classList.toggle('bad', S.dropped > S.refetched);
  ui.viewers.textContent = viewersText();
  ui.cost.textContent = S.run === 'running' ? fmtCost(S.cost) : '–';
  const open = S.state === 'open' && !!S.hello;
  ui.start.disabled = !open;
  ui.stop.disabled = !open; // stop is harmless when nothing runs
}

/** "shared · 3 viewers" while a program runs (v1.1 servers say so in `started`). */
function viewersText() {
  if (S.run !== 'running' || !S.started || S.viewers === null) return '–';
  const n = `${fmtNum(S.viewers)} viewer${S.viewers === 1 ? '' : 's'}`;
  return S.shared === null ? n : `${S.shared ? 'shared' : 'private'} · ${n}`;
}

function renderRetry() {
  let t = '';
  if (S.state === 'closed' && conn.needsToken) {
    t = ' · token needed';
  } else if (S.state === 'closed') {
    const close = conn.lastClose;
    const why = close && close.code === 1013 ? `${close.reason || 'server full'} · ` : '';
    const secs = conn.retryAt ? Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) : null;
    t = ` ${why}${secs != null ? `retry in ${secs} s` : ''}`;
  }
  ui.retry.textContent = t;
}

// ── wiring ──

function setControlsHidden(hidden) {
  document.body.classList.toggle('kiosk', hidden);
  ui.toggle.textContent = hidden ? 'Show controls' : 'Hide controls';
  ui.toggle.setAttribute('aria-expanded', String(!hidden));
}

function overlaySet() {
  return Object.keys(OVERLAYS).filter((k) => $(`ov-${k}`).checked);
}

ui.script.value = store.get('script') || EXAMPLE_SCRIPT;
ui.script.addEventListener('input', () => {
  store.set('script', ui.script.value);
  if (S.custom && ui.preset.value !== CUSTOM) { ui.preset.value = CUSTOM; store.set('preset', CUSTOM); }
  renderLang();
  renderPresetHint();
});
ui.script.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); start(); }
  if (ev.key === 'Tab' && !ev.shiftKey && !ev.ctrlKey && !ev.altKey) { // indent instead of leaving
    ev.preventDefault();
    ui.script.setRangeText('  ', ui.script.selectionStart, ui.script.selectionEnd, 'end');
  }
});
ui.preset.addEventListener('change', () => { store.set('preset', ui.preset.value); renderPresetHint(); });
ui.tick.addEventListener('change', () => store.set('tick', ui.tick.value));
ui.start.addEventListener('click', start);
ui.stop.addEventListener('click', stop);
ui.aggregation.addEventListener('change', () => { store.set('aggregation', ui.aggregation.value); selectAggregation(ui.aggregation.value); });
ui.toggle.addEventListener('click', () => setControlsHidden(!document.body.classList.contains('kiosk')));
ui.scale.addEventListener('change', () => { store.set('scale', ui.scale.value); view.setScale(ui.scale.value); });
ui.colour.addEventListener('change', () => { store.set('colour', ui.colour.value); view.setHueByKey(ui.colour.value === 'key'); });
for (const k of Object.keys(OVERLAYS)) {
  const box = $(`ov-${k}`);
  const saved = store.get(`ov-${k}`);
  if (saved !== null) box.checked = saved === '1';
  box.addEventListener('change', () => { store.set(`ov-${k}`, box.checked ? '1' : '0'); view.setOverlays(overlaySet()); });
}
ui.history.addEventListener('change', () => setHistory(clampInt(ui.history.value, HISTORY_MIN, HISTORY_MAX, HISTORY_DEFAULT)));
ui.auth.addEventListener('submit', submitToken);
ui.pause.addEventListener('click', () => setPaused(!S.paused));
ui.export.addEventListener('click', exportPng);
ui.keysMerge.addEventListener('click', () => setFilter({ isolate: null, exclude: new Set() }));
document.addEventListener('keydown', (ev) => {
  if (ev.target instanceof HTMLElement && ev.target.closest('input, textarea, select')) return;
  if (ev.key === 'p' || ev.key === 'P') setPaused(!S.paused);
});

if (!HISTORY_CHOICES.includes(history)) ui.history.append(el('option', { value: history, text: `${history} ticks` }));
ui.history.value = String(history);
ui.scale.value = ['log', 'linear', 'rank'].includes(params.get('scale') ?? store.get('scale')) ? (params.get('scale') ?? store.get('scale')) : 'log';
ui.colour.value = (params.get('colour') ?? store.get('colour')) === 'key' ? 'key' : 'heat';
view.scaleKind = ui.scale.value;
view.hueByKey = ui.colour.value === 'key';
if (params.has('overlays')) { // ?overlays=p50,p99 (or empty): for wall screens and benchmarks
  const want = params.get('overlays').split(',');
  for (const k of Object.keys(OVERLAYS)) $(`ov-${k}`).checked = want.includes(k);
}
view.overlays = new Set(overlaySet());
// ?kiosk holds for the load that asks for it; pages before this one kept it in localStorage,
// where it hid the controls of every later visit: that value is dropped, never read.
store.remove('kiosk');
if (params.has('kiosk')) setControlsHidden(true);
setInterval(renderRetry, 500);

fillPresets([], false, null);
keys.setModel(null);
renderTop();
view.full();
wireHistory();
if (!params.has('offline')) conn.connect();

// ── history: sources, past ranges, files, permalinks (issue 13) ──

/** The API's URLs with this tab's token as a header (never in a URL). */
function apiFetch(path) {
  const headers = conn.token ? { Authorization: `Bearer ${conn.token}` } : {};
  return fetch(path, { headers });
}

async function apiError(res) {
  try { const b = await res.json(); return b.error?.message || `HTTP ${res.status}`; } catch { return `HTTP ${res.status}`; }
}

/** The watches the server runs or has recorded, into the Source picker. */
async function loadWatches() {
  S.watchesAsked = true;
  let list;
  try {
    const res = await apiFetch('/api/watches');
    if (!res.ok) return;
    const body = await res.json();
    list = body.watches;
    S.fleetOn = body.fleet === true;
  } catch { return; }
  S.watches = Array.isArray(list) ? list.filter((w) => w && typeof w.name === 'string') : [];
  if (S.fleetOn) await loadFleet();
  const opts = [el('option', { value: '', text: 'live program' })];
  for (const w of S.watches) opts.push(el('option', { value: w.name, text: `watch ${w.name}${w.preset ? ` (${w.preset})` : ''}` }));
  if (S.fleet.length) {
    opts.push(el('optgroup', { label: 'fleet (Prometheus)' }, ...S.fleet.map((w) => {
      const n = Array.isArray(w.instances) ? w.instances.length : 0;
      return el('option', { value: FLEET + w.name, text: `fleet ${w.name} · ${n} host${n === 1 ? '' : 's'}` });
    })));
  }
  if (S.source && ![...S.watches.map((w) => w.name), ...S.fleet.map((w) => FLEET + w.name)].includes(S.source)) opts.push(sourceOption(S.source));
  hui.source.replaceChildren(...opts);
  hui.source.value = S.source;
  if (S.mode === 'live' && S.source && S.run === 'idle' && S.hello) startWatch(); // ?watch=NAME
  renderRangeControls();
  renderTimeline();
}

function watchOf(name) { return S.watches.find((w) => w.name === name) ?? null; }

function isFleet(source) { return typeof source === 'string' && source.startsWith(FLEET); }
function fleetOf(source) { return isFleet(source) ? S.fleet.find((w) => FLEET + w.name === source) ?? null : null; }
function sourceOption(source) {
  return el('option', { value: source, text: isFleet(source) ? `fleet ${source.slice(FLEET.length)}` : `watch ${source}` });
}

/** The watches hosts export to the fleet's Prometheus (asked only when the server has one). */
async function loadFleet() {
  try {
    const res = await apiFetch('/api/fleet/watches');
    if (!res.ok) { showError('fleet', `fleet: ${await apiError(res)}`); return; }
    const list = (await res.json()).watches;
    S.fleet = Array.isArray(list) ? list.filter((w) => w && typeof w.name === 'string') : [];
  } catch (e) {
    showError('fleet', `fleet: ${e.message}`);
  }
}

/** A fleet source has no live program: "Live" reads the same span again, ending now. */
function refreshFleet() {
  const span = S.past ? S.past.to - S.past.from : FLEET_RANGE_MS;
  const to = Date.now();
  return openRange(S.source, to - span, to);
}

/** Joins the source watch's program by name (its configured filters included), history first. */
function startWatch() {
  const w = watchOf(S.source);
  if (!w || !S.hello) return; // the list arrives after hello; loadWatches comes back here
  const encoding = chooseEncoding(S.hello, params.get('encoding'));
  S.run = 'starting';
  conn.send({ type: 'start', watch: w.name, ...(encoding ? { encoding } : {}) });
  renderTop();
}

/**
 * Back to the websocket's frames: an empty picture that live frames fill; with a watch as the
 * source, its program is joined (its recent ticks first). `reset`: the source changed.
 */
function goLive(reset = false) {
  S.loadGen++;
  const wasLive = S.mode === 'live';
  Object.assign(S, { mode: 'live', past: null, file: null, marks: [] });
  if (!wasLive || reset) {
    S.tick = S.hello?.tick_ms ?? S.tick;
    resetSeqs(1);
    view.setCapacity(history);
    resetRun([]);
  }
  if (S.source && (reset || !wasLive || S.run !== 'running')) startWatch(); // a start replaces the program
  else if (reset && (S.run === 'running' || S.run === 'starting')) stop();
  renderRangeControls();
  renderTimeline();
  renderTop();
}

/** Leaves the live program (others keep it; a watch never stops) before showing the past. */
function leaveLive() {
  if (S.mode === 'live' && (S.run === 'running' || S.run === 'starting')) conn.send({ type: 'stop' });
}

/** A range picked on the timeline, the buttons or the custom inputs. */
function pickRange(from, to) {
  if (!S.source) { showError('client', 'Pick a watch as the source to look back.'); return; }
  openRange(S.source, Math.round(from), Math.round(to));
}

/**
 * A watch's recorded [from, to) into `history` columns, summed server-side (`/frames`), drawn
 * like live frames. Resolves when drawn (or refused: the error is shown).
 */
async function openRange(watch, from, to) {
  const gen = ++S.loadGen;
  const q = `from=${from}&to=${to}&columns=${history}`;
  // A fleet watch: the same answer, from Prometheus through the server, hosts as keys.
  const path = isFleet(watch) ? `/api/fleet/watches/${encodeURIComponent(watch.slice(FLEET.length))}` : `/api/watches/${encodeURIComponent(watch)}`;
  let body, kept = null;
  try {
    const res = await apiFetch(`${path}/frames?${q}`);
    if (!res.ok) { if (gen === S.loadGen) showError('history', `${watch}: ${await apiError(res)}`); return; }
    const text = await res.text();
    body = JSON.parse(text);
    // Prometheus's answer cannot be asked for again as it was: Export writes this text's frames.
    if (isFleet(watch)) kept = text;
  } catch (e) {
    if (gen === S.loadGen) showError('history', `${watch}: ${e.message}`);
    return;
  }
  if (gen !== S.loadGen) return; // a newer range was asked for meanwhile
  leaveLive();
  const frames = Array.isArray(body.frames) ? body.frames.filter((f) => f && typeof f === 'object').map(packFrame) : [];
  const { runs, marks, slices } = body;
  body = null; // the parsed series are garbage now: only the packed entries go on
  const grid = slices && slices.width > 0 ? slices : fineGrid(from, to, history);
  // A server without `slice` per column: its fine slices are the page's own.
  for (const f of frames) if (!Number.isInteger(f.slice)) f.slice = sliceOf(grid, f.ts_ms);
  S.source = watch;
  if (![...hui.source.options].some((o) => o.value === watch)) hui.source.append(sourceOption(watch));
  hui.source.value = watch;
  clearError();
  Object.assign(S, { mode: 'past', file: null, past: { watch, from, to, grid, kept } });
  showFrames({ aggs: unionAggs(runs), grid, frames, marks: Array.isArray(marks) ? marks : [] });
}

/** How the server cuts [from, to) into `columns` slices when they are finer than its roll-ups. */
function fineGrid(from, to, columns) {
  const width = Math.max(1, Math.ceil((to - from) / columns));
  return { origin: from, width, count: Math.ceil((to - from) / width) };
}

function sliceOf(grid, ts) { return Math.floor((ts - grid.origin) / grid.width); }

/** Every run's aggregations, by name (a watch's runs of one preset announce the same ones). */
function unionAggs(runs) {
  const by = new Map();
  for (const r of Array.isArray(runs) ? runs : []) {
    for (const a of Array.isArray(r?.aggregations) ? r.aggregations : []) if (a && !by.has(a.name)) by.set(a.name, a);
  }
  return [...by.values()];
}

/**
 * A past frame with its histograms packed (model.js packHist) as soon as it is parsed: a range
 * of a day is half a million buckets, which as parsed arrays kept until the model is built cost
 * more in garbage collection than parsing them did.
 */
function packFrame(f) {
  if (!Array.isArray(f.aggregations)) return f;
  return { ...f, aggregations: f.aggregations.map((a) => (a && HIST_KINDS.has(a.kind) ? packHist(a) : a)) };
}

/** Two frames of one column as one: histograms and counts add, so their series go together. */
function mergeFrames(a, b) {
  const by = new Map();
  for (const f of [a, b]) {
    for (const g of Array.isArray(f.aggregations) ? f.aggregations : []) {
      if (!g) continue;
      const t = by.get(g.name);
      if (t && t.packed && g.packed) by.set(g.name, mergePacked(t, g));
      else if (t) t.series.push(...(Array.isArray(g.series) ? g.series : []));
      else by.set(g.name, g.packed ? g : { ...g, series: [...(Array.isArray(g.series) ? g.series : [])] });
    }
  }
  return { ...a, aggregations: [...by.values()] };
}

/**
 * Past frames into the picture: one column per slice of `grid` (the frames of a slice summed),
 * a marked empty column where nothing was recorded. The columns go through appendFrame like
 * live frames, so hover, breakdown, keys, scales and overlays work the same.
 */
function showFrames({ aggs, grid, frames, marks }) {
  const count = Math.max(1, grid.count);
  const bySlice = new Map();
  for (const f of frames) {
    const k = Math.min(count - 1, Math.max(0, f.slice));
    bySlice.set(k, bySlice.has(k) ? mergeFrames(bySlice.get(k), f) : f);
  }
  // A reload of past data (another history length, the same range again) builds new models:
  // the key filter the user set carries over by key name, as a permalink's does.
  S.pendingView ??= filterByNames();
  // One full redraw at the end, of the new model (see HeatmapView.batch).
  view.batch(() => {
    setPaused(false);
    S.unit = unitOfAggs(aggs);
    resetSeqs(1);
    view.setCapacity(count);
    resetRun(aggs);
    for (const m of S.models.values()) m.setCapacity(count);
    view.tickMs = grid.width;
    const out = { rowsChanged: false, listChanged: false, added: 0, filled: 0, gaps: [] };
    for (let k = 0; k < count; k++) {
      const ts = grid.origin + (k + 1) * grid.width;
      const f = bySlice.get(k);
      if (f) appendFrame({ ...f, seq: k + 1, ts_ms: ts, interval_ms: grid.width }, out);
      else pushPlaceholder({ seq: k + 1, ts, interval: grid.width, missing: true, why: isFleet(S.source) ? FLEET_GAP : RECORDED_GAP });
    }
    S.expectSeq = count + 1;
    S.marks = marks.filter((m) => m && Number.isFinite(m.from) && Number.isFinite(m.to));
    if (out.listChanged) fillAggregations(); // else resetRun's choice stands: one full draw below
    applyPendingView();
    keys.render();
    view.full();
  });
  schedulePanels();
  S.loads++;
  renderRangeControls();
  renderTimeline();
  renderTop();
}

/** A preset's unit, when the aggregations name one (imported files have no `started`). */
function unitOfAggs(aggs) {
  const w = watchOf(S.source);
  const p = w && S.presets.find((x) => x.name === w.preset);
  return p?.unit ?? aggs.find((a) => a.unit)?.unit ?? null;
}

/**
 * An export file (text) → {header, frames, text}, the frames' histograms packed line by line
 * (packFrame); throws with a readable message. The text is kept: Export gives it back as it
 * was, and another history length cuts it again.
 */
function parseExport(text) {
  const lines = text.split('\n').filter((l) => l.trim());
  if (!lines.length) throw new Error('the file is empty');
  let header;
  try { header = JSON.parse(lines[0]); } catch { throw new Error('line 1 is not JSON'); }
  if (!header || header.type !== 'export' || header.format !== EXPORT_FORMAT) throw new Error(`line 1 is not a ${EXPORT_FORMAT} header`);
  if (!(Number.isFinite(header.from) && Number.isFinite(header.to) && header.from < header.to)) throw new Error('the header has no valid from/to');
  const frames = [];
  for (let i = 1; i < lines.length; i++) {
    let f;
    try { f = JSON.parse(lines[i]); } catch { throw new Error(`line ${i + 1} is not JSON`); }
    if (!f || typeof f !== 'object' || !Array.isArray(f.aggregations) || !Number.isFinite(f.ts_ms)) throw new Error(`line ${i + 1} is not a frame`);
    frames.push(packFrame(f));
  }
  return { header, frames, text };
}

/** An imported file, cut into `history` columns over its [from, to) as the server cuts a watch. */
function showFile(file) {
  leaveLive();
  S.loadGen++;
  const { name, header, frames, text } = file;
  const grid = fineGrid(header.from, header.to, history);
  const placed = frames.map((f) => ({ ...f, slice: sliceOf(grid, f.ts_ms) }));
  S.source = '';
  hui.source.value = '';
  Object.assign(S, { mode: 'file', past: null, file: { name, header, text, frameCount: frames.length, grid } });
  showFrames({ aggs: unionAggs(header.runs), grid, frames: placed, marks: Array.isArray(header.marks) ? header.marks : [] });
}

async function importFile(f) {
  if (!f) return;
  try {
    const parsed = parseExport(await f.text());
    clearError();
    showFile({ name: f.name, ...parsed });
  } catch (e) {
    showError('import', `${f.name}: ${e.message}`);
  }
}

/**
 * The shown range as NDJSON: a watch's range from /export (every tick), else the page's own
 * frames (a live history, or the imported file) in the same format.
 */
async function exportText() {
  if (S.mode === 'past' && isFleet(S.past.watch)) { // Prometheus's columns, as the page got them
    const { watch, from, to } = S.past;
    const { runs, frames } = JSON.parse(S.past.kept);
    const name = watch.slice(FLEET.length);
    const header = { type: 'export', format: EXPORT_FORMAT, watch: `fleet-${name}`, from, to, runs: Array.isArray(runs) ? runs : [] };
    return { name: `fleet-${name}-${from}-${to}.ndjson`, text: ndjson(header, frames) };
  }
  if (S.mode === 'past') {
    const { watch, from, to } = S.past;
    const res = await apiFetch(`/api/watches/${encodeURIComponent(watch)}/export?from=${from}&to=${to}`);
    if (!res.ok) throw new Error(await apiError(res));
    return { name: `${watch}-${from}-${to}.ndjson`, text: await res.text() };
  }
  if (S.mode === 'file') {
    return { name: S.file.name, text: S.file.text };
  }
  const frames = [...S.frameLog.values()].sort((a, b) => a.seq - b.seq);
  if (!frames.length) throw new Error('no frames to export yet');
  // Half a tick either side: re-imported, every tick lands in a slice of its own.
  const half = (f) => Math.round((f.interval_ms > 0 ? f.interval_ms : S.tick || 1000) / 2);
  const from = frames[0].ts_ms - half(frames[0]), to = frames[frames.length - 1].ts_ms + half(frames[frames.length - 1]);
  const header = { type: 'export', format: EXPORT_FORMAT, watch: S.source || null, from, to,
    runs: [{ run: 0, aggregations: Array.isArray(S.started?.aggregations) ? S.started.aggregations : [] }] };
  const name = `${S.source || S.started?.preset || 'live'}-${from}-${to}.ndjson`;
  return { name, text: ndjson(header, frames.map((f) => ({ ...f, type: 'frame', run: f.run ?? 0 }))) };
}

function ndjson(header, frames) { return [header, ...frames].map((x) => JSON.stringify(x)).join('\n') + '\n'; }

async function exportNdjson() {
  let out;
  try { out = await exportText(); } catch (e) { showError('export', `export: ${e.message}`); return; }
  download(new Blob([out.text], { type: 'application/x-ndjson' }), out.name);
}

function download(blob, name) {
  const a = el('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

/** A URL that reopens this source, range and view. Never the token. */
function permalink() {
  const u = new URL('/', location.href);
  const p = u.searchParams;
  if (isFleet(S.source)) p.set('fleet', S.source.slice(FLEET.length));
  else if (S.source) p.set('watch', S.source);
  if (S.mode === 'past') { p.set('from', S.past.from); p.set('to', S.past.to); }
  p.set('columns', history);
  p.set('scale', view.scaleKind);
  if (view.hueByKey) p.set('colour', 'key');
  p.set('overlays', overlaySet().join(','));
  const m = currentModel();
  if (m && m.isolate !== null) p.set('isolate', m.keys[m.isolate].name);
  if (m && m.isolate === null) for (const id of m.exclude) p.append('exclude', m.keys[id].name);
  if (S.selected) p.set('agg', S.selected);
  selection.params(p);
  return u.href;
}

async function copyLink() {
  const link = S.lastLink = permalink();
  let copied = false;
  try { await navigator.clipboard.writeText(link); copied = true; } catch { /* no clipboard permission */ }
  hui.rangeInfo.textContent = copied ? 'link copied' : link;
  setTimeout(renderRangeControls, 4000);
}

/** The shown model's key filter as key names (null when every key is shown). */
function filterByNames() {
  const m = currentModel();
  if (!m || (m.isolate === null && !m.exclude.size)) return null;
  if (m.isolate !== null) return { isolate: m.keys[m.isolate].name, exclude: [] };
  return { isolate: null, exclude: [...m.exclude].map((id) => m.keys[id].name) };
}

/** Key names from a permalink, turned into the model's filter once those keys are known. */
function applyPendingView() {
  const pv = S.pendingView, m = currentModel();
  if (!pv || !m || !m.keys.length) return;
  const id = (name) => m.keyIds.get(name);
  if (pv.isolate !== null) {
    if (id(pv.isolate) === undefined) return; // not seen yet (live): try again next frame
    m.setFilter({ isolate: id(pv.isolate), exclude: new Set() });
  } else {
    const ex = pv.exclude.map(id).filter((x) => x !== undefined);
    if (ex.length < pv.exclude.length && S.mode === 'live') return;
    m.setFilter({ isolate: null, exclude: new Set(ex) });
  }
  S.pendingView = null;
  keys.invalidate();
  view.full();
}

/** The CSS x on the timeline canvas of a time, over the heatmap's plot; null before a layout. */
function plotX(ms) {
  const g = view.g, m = currentModel();
  if (!g || !m || !m.length) return null;
  const cap = view.capacity;
  let end, colMs;
  if (S.mode === 'live') {
    const w = view.win();
    if (!w.n) return null;
    end = m.cols[w.at(w.hi - 1)].meta.ts;
    colMs = S.tick || 1000;
  } else {
    const grid = (S.past ?? S.file).grid;
    end = grid.origin + grid.count * grid.width;
    colMs = grid.width;
  }
  const slot = cap - (end - ms) / colMs;
  const x = (g.x + Math.max(0, Math.min(cap, slot)) * (g.w / cap)) / g.dpr;
  const off = view.canvas.getBoundingClientRect().left - timeline.canvas.getBoundingClientRect().left;
  return x + off;
}

function renderTimeline() {
  const w = watchOf(S.source);
  const recorded = w?.recorded ? [w.recorded.first_ms, w.recorded.last_ms] : null;
  if (S.mode === 'past') {
    timeline.set({ live: false, from: S.past.from, to: S.past.to, recorded, marks: S.marks });
  } else if (S.mode === 'file') {
    timeline.set({ live: false, from: S.file.header.from, to: S.file.header.to, recorded: [S.file.header.from, S.file.header.to], marks: S.marks });
  } else if (S.source) {
    const now = S.lastFrame && Number.isFinite(S.lastFrame.ts_ms) ? S.lastFrame.ts_ms : Date.now();
    timeline.set({ live: true, from: now - history * (S.tick || 1000), to: now, recorded, marks: S.marks });
  } else {
    timeline.set({ live: true, from: null, to: null, recorded: null, marks: [] });
  }
}

const toLocalInput = (ms) => { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000); return d.toISOString().slice(0, 19); };
const fromLocalInput = (v) => (v ? new Date(v).getTime() : NaN);

function renderRangeControls() {
  const span = S.mode === 'past' ? S.past.to - S.past.from : null;
  for (const b of hui.rangeButtons) {
    const r = b.dataset.range;
    b.disabled = r !== 'live' && !S.source;
    b.classList.toggle('active', r === 'live' ? S.mode === 'live' : r === 'custom' ? !hui.customRange.hidden : span === Number(r));
  }
  const fmt = (ms) => new Date(ms).toLocaleString('en-GB', { hour12: false });
  const per = (g) => (g.width >= 60000 ? `${(g.width / 60000).toFixed(1).replace(/\.0$/, '')} min` : `${(g.width / 1000).toFixed(g.width < 10000 ? 1 : 0)} s`);
  hui.rangeInfo.textContent = S.mode === 'past'
    ? `${fmt(S.past.from)} – ${fmt(S.past.to)} · ${S.past.grid.count} columns of ${per(S.past.grid)}`
    : S.mode === 'file' ? `file ${S.file.name} · ${S.file.frameCount} frames` : '';
}

function wireHistory() {
  for (const ev of ['pointerdown', 'focus']) hui.source.addEventListener(ev, () => { if (!S.watchesAsked) loadWatches(); });
  hui.source.addEventListener('change', () => {
    S.source = hui.source.value;
    if (isFleet(S.source)) { const to = Date.now(); openRange(S.source, to - FLEET_RANGE_MS, to); return; }
    goLive(true);
  });
  for (const b of hui.rangeButtons) {
    b.addEventListener('click', () => {
      const r = b.dataset.range;
      if (r === 'live') { hui.customRange.hidden = true; if (isFleet(S.source)) refreshFleet(); else goLive(); return; }
      if (r === 'custom') {
        hui.customRange.hidden = !hui.customRange.hidden;
        const to = S.past ? S.past.to : Date.now();
        hui.rangeFrom.value = toLocalInput(S.past ? S.past.from : to - 3600000);
        hui.rangeTo.value = toLocalInput(to);
        renderRangeControls();
        return;
      }
      hui.customRange.hidden = true;
      const to = Date.now();
      pickRange(to - Number(r), to);
    });
  }
  hui.rangeGo.addEventListener('click', () => {
    const from = fromLocalInput(hui.rangeFrom.value), to = fromLocalInput(hui.rangeTo.value);
    if (!(from < to)) { showError('client', 'The range needs a from before its to.'); return; }
    pickRange(from, to);
  });
  hui.copyLink.addEventListener('click', copyLink);
  hui.exportNdjson.addEventListener('click', exportNdjson);
  hui.importFile.addEventListener('change', () => { importFile(hui.importFile.files[0]); hui.importFile.value = ''; });
  // Drop a file anywhere on the page to open it.
  document.addEventListener('dragover', (ev) => { if (ev.dataTransfer?.types.includes('Files')) { ev.preventDefault(); document.body.classList.add('dropping'); } });
  document.addEventListener('dragleave', (ev) => { if (!ev.relatedTarget) document.body.classList.remove('dropping'); });
  document.addEventListener('drop', (ev) => {
    document.body.classList.remove('dropping');
    const f = ev.dataTransfer?.files?.[0];
    if (!f) return;
    ev.preventDefault();
    importFile(f);
  });
  new ResizeObserver(() => timeline.draw()).observe(view.canvas);

  // A permalink: ?watch=NAME[&from=MS&to=MS] with the view (scale, colour, overlays, keys, agg).
  if (params.has('agg')) store.set('aggregation', params.get('agg'));
  if (params.has('isolate') || params.has('exclude')) S.pendingView = { isolate: params.get('isolate'), exclude: params.getAll('exclude') };
  selection.applyParams(params);
  S.source = params.has('fleet') ? FLEET + params.get('fleet') : params.get('watch') || '';
  const from = Number(params.get('from')), to = Number(params.get('to'));
  if (S.source) hui.source.append(sourceOption(S.source));
  hui.source.value = S.source;
  if (S.source && Number.isFinite(from) && Number.isFinite(to) && from < to && params.has('from')) openRange(S.source, from, to);
  else if (isFleet(S.source)) refreshFleet();
  else if (params.has('offline')) loadWatches();
  renderRangeControls();
  renderTimeline();
}

// ── test / console API ──
// Stable, read-mostly view of the state for tests and for people poking at the console.

window.heat = {
  /** The Explain panel (explain.js): start({band, keys}), stop(), summary(). */
  explain,
  get state() { return S.state; },
  get run() { return S.run; },
  get session() { return S.session; },
  get backend() { return S.backend; },
  get tick() { return S.tick; },
  get unit() { return unitOf(currentModel()); },
  get frames() { return S.frames; },
  get dropped() { return S.dropped; },
  /** Skipped frames fetched back into their place. */
  get refetched() { return S.refetched; },
  /** Seqs whose frame is still missing (placeholder columns). */
  get missing() { return [...S.missing].sort((a, b) => a - b); },
  get fetchesSent() { return S.fetches.sent; },
  /** The last `history` messages of this run: {from, to, frames, liveBefore (live frames before it)}. */
  get histories() { return S.histories.map((h) => ({ ...h })); },
  get viewers() { return S.viewers; },
  /** The last live frame's `cost`, as received. */
  get cost() { return S.cost; },
  get shared() { return S.shared; },
  get program() { return S.program; },
  /** Binary (compact) messages received on this connection, and their bytes. */
  get binary() { return { messages: proto.binaryMessages, bytes: proto.binaryBytes }; },
  /** The seq of each column of the shown histogram, oldest first. */
  get seqs() { const m = currentModel(); return m ? m.cols.map((c) => c.meta.seq) : []; },
  /**
   * One column of a histogram by seq: its events as {"key|lo|hi": count} (the frame's buckets,
   * as received), or null when no column has that seq; `missing` for a placeholder.
   */
  column(seq, name) {
    const m = S.models.get(name ?? S.selected);
    const i = m ? m.indexOfSeq(seq) : -1;
    if (i < 0) return null;
    const col = m.cols[i];
    const cells = {};
    for (const [id, lo, hi, c] of entries(col.raw)) { const k = `${m.keys[id].name}|${lo}|${hi}`; cells[k] = (cells[k] || 0) + c; }
    return { seq, missing: !!col.meta.missing, cells };
  },
  /** Test hook: drop the next `n` live frames as if the server had skipped them (a gap). */
  dropLive(n) { S.dropLive = n; },
  get paused() { return S.paused; },
  get lastFrame() { return S.lastFrame; },
  get hello() { return S.hello; },
  /** Closed for want of a valid token (4401): the token field is shown, nothing retries. */
  get needsToken() { return conn.needsToken; },
  get retryPending() { return conn.retryPending; },
  get customScripts() { return S.custom; },
  get started() { return S.started; },
  get aggregation() { return S.selected; },
  get aggregations() { return [...S.models.keys()]; },
  get columns() { const m = currentModel(); return m ? m.columns : []; },
  get rows() { const m = currentModel(); return m ? m.rows.map((r) => [...r]) : []; },
  get visibleRows() { const m = currentModel(); return m ? m.visibleRange() : null; },
  get keys() { const m = currentModel(); return m ? m.keyList().map((k) => ({ name: k.name, total: k.total, shown: m.includes(k.id) })) : []; },
  get scaleMax() { return view.scaleMax; },
  get scale() { return view.scaleKind; },
  get draws() { return { full: view.fullRedraws, incremental: view.incrementalDraws }; },
  /** Columns ever pushed when the picture was last drawn (lags behind while paused). */
  get drawnColumns() { return view.drawnPushed; },
  get history() { return history; },
  model: (name) => S.models.get(name ?? S.selected) ?? null,
  /** CSS-pixel point (page coordinates) of a cell: col indexes the history, row the rows. */
  cellPoint(col, row) {
    const c = view.cellCentre(col, row);
    if (!c) return null;
    const r = view.canvas.getBoundingClientRect();
    return { x: r.left + c.x, y: r.top + c.y };
  },
  /** Feed a protocol message as if the server had sent it (benchmarks, offline demos). */
  inject: (msg) => onMessage(msg),
  redraw: () => view.full(),
  select(name) { ui.aggregation.value = name; selectAggregation(name); },
  send: (msg) => conn.send(msg),
  start,
  stop,
  /** History: live | past | file, the source watch, the grid of a past range or file. */
  get mode() { return S.mode; },
  get source() { return S.source; },
  get past() { return S.past ? { watch: S.past.watch, from: S.past.from, to: S.past.to, grid: { ...S.past.grid } } : null; },
  get loads() { return S.loads; },
  get marks() { return S.marks.map((m) => ({ ...m })); },
  /** Marks as the timeline drew them: [{label, x0, x1}] in CSS px of the timeline canvas. */
  get drawnMarks() { return timeline.drawnMarks.map((m) => ({ ...m })); },
  /** Test hook: show these marks on the timeline as if a range's answer had carried them. */
  showMarks(marks) { S.marks = marks.map((m) => ({ ...m })); renderTimeline(); },
  openRange: (watch, from, to) => openRange(watch, from, to),
  /** The fleet: whether the server has one, and the watches hosts export (after the picker is used). */
  get fleet() { return { on: S.fleetOn, watches: S.fleet.map((w) => ({ ...w })) }; },
  loadWatches: () => loadWatches(),
  permalink,
  /** The box selection {from, to, lo, hi} (select.js), or null; the compare baseline likewise. */
  get selection() { return selection.box ? { ...selection.box } : null; },
  get baseline() { return selection.baseBox ? { ...selection.baseBox } : null; },
  /** The band of the selection as Explain takes it ({agg, lo, hi, unit, from, to}), or null. */
  get band() { return selection.band(); },
  setSelection: (box) => selection.set(box),
  clearSelection: () => selection.clear(),
  setBaseline: (box) => selection.setBaseline(box ?? selection.box),
  /** The over-representation ranking last shown ({inside, outside, keys: [{name, inside, ...}]}). */
  get ranking() { return selection.lastRanking; },
  /** The compare tables last shown ({keys, rows}, largest change first). */
  get comparison() { return selection.lastCompare ?? null; },
  /**
   * A differential flame graph under Compare from stacks given by hand: folded maps (flame.js
   * parseFolded) of the baseline's and the target's stacks, drawn instead of Explain's (null
   * gives Explain's back). Returns the FlameGraph.
   */
  compareStacks: (baseline, target, title) => selection.compareStacks(baseline, target, title),
  /**
   * Compare's differential flame graph from Explain's stacks, as last shown: per side
   * {ticks, samples, stacks, columns, runs}, `missing` (sides with no stacks) and `drawn`.
   */
  get flameDiff() { return selection.lastDiff; },
  /** The box as the page's CSS pixels (page coordinates): {x0, y0, x1, y1}, or null. */
  get selectionRect() {
    const r = view.boxRect(selection.box);
    if (!r) return null;
    const c = view.canvas.getBoundingClientRect(), d = view.g.dpr;
    return { x0: c.left + r.x0 / d, y0: c.top + r.y0 / d, x1: c.left + r.x1 / d, y1: c.top + r.y1 / d };
  },
  exportText,
  importText: (name, text) => showFile({ name, ...parseExport(text) }),
  goLive,
  pause: () => setPaused(true),
  resume: () => setPaused(false),
};
