// Shared by the browser tests and the benchmark: start the real heat-actix binary on a free
// loopback port, launch Debian's chromium through playwright-core, open the page with every
// page error and console error recorded, and run a known workload.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '../..');
export const ARTIFACTS = join(here, 'artifacts');
export const BINARY = process.env.HEAT_BINARY || join(ROOT, 'target/debug/heat-actix');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => ok(port)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The `sha256 = "…"` config line of a token, as `heat-actix hash-token` prints it. */
export function hashTokenLine(token) {
  return execFileSync(BINARY, ['hash-token'], { input: `${token}\n`, encoding: 'utf8' }).trim();
}

/**
 * Starts target/debug/heat-actix; resolves once /healthz answers. `config` is appended to the
 * test config (e.g. `[[auth.tokens]]` tables); `env` is added to its environment (e.g.
 * `HEAT_ACTIX_FAULT`).
 */
export async function startServer({ tickMs = 500, port = null, config: extra = '', env = {} } = {}) {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build first`);
  port = port ?? await freePort();
  // Custom scripts are off by default; these tests run some (loopback, no tokens), and start
  // programs back to back.
  const config = join(tmpdir(), `heat-actix-browser-${process.pid}-${port}.toml`);
  // A config naming no store would record into the machine's default one: each server gets its own.
  const store = /^\[store\]/m.test(extra) ? null : mkdtempSync(join(tmpdir(), 'heat-browser-store-'));
  const storeToml = store ? `\n[store]\npath = ${JSON.stringify(store)}\n` : '';
  writeFileSync(config, `[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\nmax_program_cpu_percent = 100\n${extra}${storeToml}`);
  const child = spawn(BINARY, ['--config', config, '--bind', `127.0.0.1:${port}`, '--tick-ms', String(tickMs), '--log', 'warn'], {
    cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, ...env },
  });
  const exited = new Promise((r) => child.once('exit', (code, sig) => r({ code, sig })));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch { /* not up yet */ }
    if (child.exitCode !== null) throw new Error(`heat-actix exited at start-up (${child.exitCode})`);
    await sleep(50);
    if (i === 199) throw new Error('heat-actix did not answer /healthz within 10 s');
  }
  return {
    url,
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      rmSync(config, { force: true });
      if (store) rmSync(store, { recursive: true, force: true });
    },
  };
}

/** Headless Debian chromium with a fresh profile that is deleted on close. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), 'heat-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1600, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  return {
    context,
    async close() { await context.close(); rmSync(profile, { recursive: true, force: true }); },
  };
}

/**
 * Opens a page and records page errors and console errors (a test fails on any), and every
 * console line (`console`). `beforeLoad(page)` runs before the page loads. Waits for `hello`
 * unless `connected` is false.
 */
export async function openPage(context, url, { connected = true, beforeLoad = null } = {}) {
  const page = await context.newPage();
  if (beforeLoad) await beforeLoad(page);
  const errors = [];
  const console = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    console.push(m.text());
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(url);
  if (connected) await page.waitForFunction(() => window.heat && window.heat.state === 'open' && window.heat.hello);
  return { page, errors, console };
}

/** A counter of the server's /metrics, by name and labels as they appear there (0 when absent). */
export async function metric(url, series) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** Two animation frames: the side panels (keys, hues, selection) have run and any redraw they asked for. */
export async function settled(p) {
  await p.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
}

/** Drags with the mouse from the centre of heatmap cell `from` ([col, row]) to the centre of `to`. */
export async function drag(p, from, to) {
  await settled(p); // a panel that just opened has resized the heatmap
  const a = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), from);
  const b = await p.evaluate(([c, r]) => window.heat.cellPoint(c, r), to);
  await p.mouse.move(a.x, a.y);
  await p.mouse.down();
  await p.mouse.move(b.x, b.y, { steps: 8 });
  await p.mouse.up();
  await settled(p);
}

export function artifact(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

/**
 * A workload with a known latency: a process that sleeps `us` microseconds in a loop
 * (perl's Time::HiRes::usleep is glibc nanosleep, i.e. the clock_nanosleep syscall). With
 * `comm`, the process renames itself first (perl's `$0` sets the kernel's comm on Linux), so a
 * `comm` filter sees it and no other perl.
 */
export function sleeper(us, { comm = null } = {}) {
  const rename = comm === null ? '' : `$0 = ${JSON.stringify(comm)}; `;
  const child = spawn('perl', ['-MTime::HiRes=usleep', '-e', `${rename}usleep(${us}) while 1`], { stdio: 'ignore' });
  return { pid: child.pid, stop() { child.kill('SIGKILL'); } };
}
