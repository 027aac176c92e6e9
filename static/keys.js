// Decomposition by key: the keys seen in the shown aggregation's history (e.g. syscall names)
// with their event counts, a hue per key, and the filter: merge all (every key, one colour
// ramp), isolate one key, or exclude keys. The model re-derives its columns from the raw
// per-key buckets it kept, so the filter applies to the whole history at once.

import { KEY_HUES, OTHER_HUE, rgbCss } from './colour.js';
import { el, fmtNum, fmtPct } from './util.js';

const LIST_LIMIT = 60;

export class KeysView {
  /** onChange(filter) is called with {isolate, exclude} when the user changes the filter. */
  constructor({ root, summary, onChange }) {
    this.root = root;
    this.summary = summary;
    this.onChange = onChange;
    this.model = null;
    this.hueOf = new Map(); // key id → palette entry, assigned by rank and kept stable
  }

  setModel(m) { this.model = m; this.hueOf = new Map(); this.dirty = true; this.render(); }

  /** The filter changed: the next render rebuilds the list even under the pointer. */
  invalidate() { this.dirty = true; }

  /** Hue of a key id for hue-by-key colouring; keys beyond the palette share a grey. */
  hue(id) { return this.hueOf.get(id) ?? OTHER_HUE; }

  /** Returns true when a key's hue changed (the picture then needs a full redraw). */
  assignHues(list) {
    // Keep a key's hue while it stays in the palette range, so colours do not jump each tick.
    const top = list.slice(0, KEY_HUES.length).map((k) => k.id);
    let changed = false;
    for (const id of [...this.hueOf.keys()]) if (!top.includes(id)) { this.hueOf.delete(id); changed = true; }
    const used = new Set(this.hueOf.values());
    for (const id of top) {
      if (this.hueOf.has(id)) continue;
      const free = KEY_HUES.find((h) => !used.has(h));
      if (!free) break;
      this.hueOf.set(id, free);
      used.add(free);
      changed = true;
    }
    return changed;
  }

  /**
   * Rebuilds the list; returns true when hues changed. While the pointer is over the list, only
   * the hues and the summary are updated, so that a row does not move under a click.
   */
  render() {
    const m = this.model;
    if (!m) { this.root.replaceChildren(el('p', { class: 'muted empty-note', text: 'No histogram.' })); this.summary.textContent = ''; return false; }
    const list = m.keyList();
    const huesChanged = this.assignHues(list);
    const all = list.reduce((a, k) => a + k.total, 0);
    const mode = m.isolate !== null ? 'isolate' : m.exclude.size ? 'exclude' : 'merge';
    this.summary.textContent = `${list.length} key${list.length === 1 ? '' : 's'} · ${mode === 'merge' ? 'all merged' : mode === 'isolate' ? 'one isolated' : `${m.exclude.size} excluded`}`;
    if (this.root.matches(':hover') && this.root.childElementCount > 0 && !this.dirty) return huesChanged;
    this.dirty = false;
    if (!list.length) { this.root.replaceChildren(el('p', { class: 'muted empty-note', text: 'No events yet.' })); return huesChanged; }
    const rows = list.slice(0, LIST_LIMIT).map((k) => {
      const on = m.includes(k.id);
      const li = el('li', { class: `key${on ? '' : ' off'}${m.isolate === k.id ? ' isolated' : ''}`, 'data-key': k.name });
      const box = el('input', { type: 'checkbox', 'aria-label': `show ${k.name}`, title: 'Show or exclude this key' });
      box.checked = on;
      box.disabled = m.isolate !== null;
      box.addEventListener('change', () => {
        const ex = new Set(m.exclude);
        if (box.checked) ex.delete(k.id); else ex.add(k.id);
        this.onChange({ isolate: null, exclude: ex });
      });
      const sw = el('span', { class: 'swatch' });
      sw.style.background = rgbCss(this.hue(k.id));
      const name = el('button', { type: 'button', class: 'key-name', title: m.isolate === k.id ? 'Show all keys again' : 'Show only this key', text: k.name });
      name.addEventListener('click', () => this.onChange(m.isolate === k.id ? { isolate: null, exclude: new Set() } : { isolate: k.id, exclude: new Set() }));
      const bar = el('span', { class: 'key-bar' });
      bar.style.width = `${all ? Math.max(1, (k.total / all) * 100) : 0}%`;
      li.append(box, sw, name, el('span', { class: 'key-count', text: fmtNum(k.total) }), el('span', { class: 'key-pct muted', text: fmtPct(all ? k.total / all : 0) }), bar);
      return li;
    });
    if (list.length > LIST_LIMIT) rows.push(el('li', { class: 'muted more', text: `+${list.length - LIST_LIMIT} more keys` }));
    this.root.replaceChildren(...rows);
    return huesChanged;
  }
}
