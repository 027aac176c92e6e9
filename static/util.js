// Small DOM and formatting helpers shared by every module. No state lives here.

export const $ = (id) => document.getElementById(id);

/** createElement with attributes ('class', 'text' and plain attributes) and children. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

/** Web storage that never throws (private mode, disabled storage). */
function storage(area) {
  const s = () => window[area];
  return {
    get(k, d = null) { try { const v = s().getItem('heat.' + k); return v == null ? d : v; } catch { return d; } },
    set(k, v) { try { s().setItem('heat.' + k, String(v)); } catch { /* not persisted */ } },
    remove(k) { try { s().removeItem('heat.' + k); } catch { /* nothing stored */ } },
  };
}

/** Preferences kept across visits (localStorage). Never secrets. */
export const store = storage('localStorage');
/** This tab only, until it closes (sessionStorage): the token survives a reload, nothing more. */
export const tabStore = storage('sessionStorage');

export function clampInt(v, lo, hi, dflt) {
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n)) return dflt;
  return Math.min(hi, Math.max(lo, n));
}

const numFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
export const fmtNum = (v) => (typeof v === 'number' && Number.isFinite(v) ? numFmt.format(v) : String(v ?? '–'));
export const fmtPct = (f) => (!(f >= 0) ? '–' : f >= 0.995 && f < 1 ? '>99%' : f > 0 && f < 0.001 ? '<0.1%' : `${(f * 100).toFixed(f < 0.1 ? 1 : 0)}%`);

/** 1234567 → "1.2 M": a rate read at a glance. */
export function fmtSi(v) {
  if (!(v >= 0)) return '–';
  if (v >= 1e9) return `${(v / 1e9).toFixed(1)} G`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return String(Math.round(v));
}

/**
 * A frame's `cost` as the top bar shows it: "0.4% of a CPU · 1.2 M events/s · 190 ns/event",
 * and "(sampled 15%)" when the kernel's statistics were on for part of the tick only.
 */
export function fmtCost(cost) {
  if (!cost || !(cost.cpu_share >= 0)) return '–';
  const pct = cost.cpu_share * 100;
  const share = pct === 0 ? '0%' : pct < 0.1 ? '<0.1%' : `${pct < 10 ? pct.toFixed(1) : Math.round(pct)}%`;
  const sampled = cost.sampled > 0 && cost.sampled < 1 ? ` (sampled ${Math.round(cost.sampled * 100)}%)` : '';
  return `${share} of a CPU · ${fmtSi(cost.events_per_s)} events/s · ${Math.round(cost.ns_per_event)} ns/event${sampled}`;
}

export const keyText = (key) => (Array.isArray(key) && key.length ? key.join(', ') : '(no key)');

/** Smallest 1/2/5 × 10^n that is ≥ x: a stable colour-scale maximum. */
export function niceCeil(x) {
  if (!(x > 1)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

export const fmtClock = (ms) => new Date(ms).toLocaleTimeString('en-GB', { hour12: false });

export function fmtAgo(sec) {
  if (sec < 0.5) return 'now';
  if (sec < 120) return `${Math.round(sec)} s ago`;
  return `${(sec / 60).toFixed(1).replace(/\.0$/, '')} min ago`;
}
