// Bucket values in the right units. Latency presets name their unit in `hello`/`started`
// (ns, us, ms); values are shown human-scaled (1024 ns → "1 µs") so that a log2 axis spanning
// nanoseconds to seconds stays readable. Other units keep compact plain numbers.

const TIME_NS = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };
const TIME_STEPS = [[1e9, 's'], [1e6, 'ms'], [1e3, 'µs'], [1, 'ns']];

export const isTimeUnit = (unit) => Object.hasOwn(TIME_NS, unit ?? '');

/**
 * `ms-offset` (cpu-profile): rows are the offset of a sample within its second, FlameScope's
 * view, so they read as a time of the second ("+120 ms"), never as a latency.
 */
export const isOffsetUnit = (unit) => unit === 'ms-offset';

/**
 * Custom scripts have no declared unit; a histogram named like `@lat_us` or `@ns` says it.
 * Returns null when the name says nothing.
 */
export function unitFromName(name) {
  const m = /(?:^@?|_)(ns|us|usecs|ms|msecs|nsecs)$/i.exec(name || '');
  if (!m) return null;
  const u = m[1].toLowerCase();
  return u.startsWith('ns') ? 'ns' : u.startsWith('us') ? 'us' : u.startsWith('ms') ? 'ms' : null;
}

/** Compact number: 3 significant digits at most, trailing zeros dropped. */
function compact(x) {
  const a = Math.abs(x);
  if (a >= 100 || Number.isInteger(x)) return String(Math.round(x));
  if (a >= 10) return x.toFixed(1).replace(/\.0$/, '');
  return x.toFixed(a >= 1 ? 1 : 2).replace(/\.?0+$/, '');
}

/** Split a time value into [number, unit] on the human scale. */
function timeParts(v, unit) {
  const ns = v * TIME_NS[unit];
  const a = Math.abs(ns);
  for (const [d, u] of TIME_STEPS) if (a >= d * 0.9995) return [ns / d, u];
  return [ns, 'ns'];
}

/** One value with its unit, compact ("1 µs", "4.1 ms", "512 ns", "12k", "4 Ki"). */
export function fmtValue(v, unit) {
  if (v == null) return '∞';
  if (isOffsetUnit(unit)) return `+${v} ms`;
  if (isTimeUnit(unit)) {
    if (v === 0) return '0';
    const [x, u] = timeParts(v, unit);
    return `${compact(x)} ${u}`;
  }
  return fmtPlain(v, unit);
}

function fmtPlain(v, unit) {
  const a = Math.abs(v);
  if (a < 10000) return String(v);
  const steps = unit === 'bytes'
    ? [[2 ** 40, 'Ti'], [2 ** 30, 'Gi'], [2 ** 20, 'Mi'], [2 ** 10, 'Ki']]
    : [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [d, s] of steps) if (a >= d) return compact(v / d) + s;
  return String(v);
}

/**
 * Axis label for a row [lo, hi] (inclusive integer bounds, null = open). Ranges are written
 * with the exclusive upper end ("2–4 µs" for [2, 3]) because integer buckets hold everything
 * up to the next bound; the unit is written once when both ends share it.
 */
export function rowLabel([lo, hi], unit) {
  if (lo == null && hi == null) return 'all';
  if (isOffsetUnit(unit) && lo != null && hi != null) return `+${lo}–${hi + 1} ms`;
  if (lo == null) return `< ${fmtValue(hi + 1, unit)}`;
  if (hi == null) return `≥ ${fmtValue(lo, unit)}`;
  if (lo === hi) return fmtValue(lo, unit);
  const a = fmtValue(lo, unit), b = fmtValue(hi + 1, unit);
  const sa = a.split(' '), sb = b.split(' ');
  if (sa.length === 2 && sb.length === 2 && sa[1] === sb[1]) return `${sa[0]}–${b}`;
  if (lo === 0 && sb.length === 2) return `0–${b}`;
  return `${a}–${b}`;
}

/** Exact, inclusive description of a bucket for the tooltip, with the human scale beside it. */
export function rangeText([lo, hi], unit) {
  if (isOffsetUnit(unit) && lo != null && hi != null) {
    return `${lo} … ${hi + 1} ms into the second`;
  }
  const u = unit ? ` ${unit === 'us' ? 'µs' : unit}` : '';
  const n = (x) => x.toLocaleString('en-US');
  let exact;
  if (lo == null && hi == null) exact = 'any value';
  else if (lo == null) exact = `≤ ${n(hi)}${u}`;
  else if (hi == null) exact = `≥ ${n(lo)}${u}`;
  else if (lo === hi) exact = `${n(lo)}${u}`;
  else exact = `${n(lo)} … ${n(hi)}${u}`;
  const human = rowLabel([lo, hi], unit);
  return isTimeUnit(unit) && human !== exact ? `${exact}  (${human})` : exact;
}
