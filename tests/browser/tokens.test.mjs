// Browser tests of a server with tokens: the page passes `?token=` to the websocket (as the
// `token.` subprotocol), takes it out of the address, offers a viewer presets only, and after a
// refused token (close 4401) stops reconnecting and asks for another one.
//
// The tokens are made per run and hashed by the binary's own `hash-token`.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer, launchBrowser, openPage, artifact, hashTokenLine, metric } from './harness.mjs';

const TICK_MS = 500;
const WAIT = { timeout: 60000 };
/** How long a refused page is watched for reconnect attempts: several of its first backoff delays (0.4–0.6 s). */
const NO_RETRY_WINDOW_MS = 3000;
const AUTH_REJECTIONS = 'heat_sessions_rejected_total{reason="auth"}';

const VIEWER = `v-${randomBytes(12).toString('hex')}`;
const OPERATOR = `o-${randomBytes(12).toString('hex')}`;
/** base64 with `/` and `=`: characters a subprotocol cannot carry. */
const SLASHED = `${randomBytes(9).toString('base64')}/x=`;
let server, browser, current;

before(async () => {
  const config = [['wall', 'viewer', VIEWER], ['ops', 'operator', OPERATOR], ['b64', 'viewer', SLASHED]]
    .map(([name, role, token]) => `[[auth.tokens]]\nname = "${name}"\nrole = "${role}"\n${hashTokenLine(token)}\n`)
    .join('');
  server = await startServer({ tickMs: TICK_MS, config });
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** Opens `path`; `current.sockets` records every websocket handshake with the subprotocols offered. */
async function page(path, opts = {}) {
  const sockets = [];
  const beforeLoad = async (p) => {
    // Playwright does not show websocket handshake headers; the DevTools protocol does.
    const cdp = await p.context().newCDPSession(p);
    await cdp.send('Network.enable');
    cdp.on('Network.webSocketWillSendHandshakeRequest', ({ request }) => {
      const h = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k.toLowerCase(), v]));
      sockets.push({ protocols: h['sec-websocket-protocol'] ?? '' });
    });
    cdp.on('Network.webSocketCreated', ({ url }) => sockets.push({ url }));
  };
  current = await openPage(browser.context, `${server.url}${path}`, { ...opts, beforeLoad });
  current.sockets = sockets;
  return current.page;
}

/** The handshakes recorded: [{url, protocols}], one per websocket. */
function handshakes() {
  const urls = current.sockets.filter((s) => s.url !== undefined).map((s) => s.url);
  const protos = current.sockets.filter((s) => s.protocols !== undefined).map((s) => s.protocols);
  return urls.map((url, i) => ({ url, protocols: protos[i] }));
}

afterEach(async () => {
  if (!current) return;
  const { page: p, errors, console: lines } = current;
  current = null;
  await p.close();
  assert.deepEqual(errors, [], 'the page logged errors');
  for (const t of [VIEWER, OPERATOR, SLASHED]) assert.ok(!lines.some((l) => l.includes(t)), 'the page never logs a token');
});

/** What the page keeps of a token: the address, both storages. */
async function traces(p) {
  return p.evaluate(() => ({
    href: location.href,
    local: JSON.stringify({ ...localStorage }),
    tab: sessionStorage.getItem('heat.token'),
    historyLength: history.length,
  }));
}

test('viewer token: connects, the token leaves the address, presets only, a preset runs', async () => {
  const p = await page(`/?token=${VIEWER}&scale=rank`);
  const hello = await p.evaluate(() => window.heat.hello);
  assert.equal(hello.role, 'viewer');
  assert.equal(hello.user, 'wall');
  assert.equal(hello.custom_scripts, false);

  const t = await traces(p);
  assert.ok(!t.href.includes(VIEWER) && !t.href.includes('token'), `address without the token: ${t.href}`);
  assert.match(t.href, /\?scale=rank$/, 'the other parameters stay');
  assert.equal(p.url(), t.href);
  assert.ok(!t.local.includes(VIEWER), 'the token is not in localStorage');
  assert.equal(t.tab, VIEWER, 'this tab keeps the token for reloads');

  // presets only: no custom-script entry, no editor, and a word on why
  const options = await p.$$eval('#preset option', (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
  assert.deepEqual(options.map((o) => o.value), hello.presets.map((x) => x.name));
  assert.ok(!options.some((o) => /custom/i.test(o.text)), 'no "Custom script" entry');
  assert.equal(await p.isVisible('#script'), false, 'no script editor');
  assert.match(await p.textContent('#custom-off'), /presets only/);
  assert.equal(await p.evaluate(() => window.heat.customScripts), false);

  await p.selectOption('#preset', 'syscall-latency');
  await p.fill('#tick', String(TICK_MS));
  await p.click('#start');
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.frames >= 2 && window.heat.started?.preset === 'syscall-latency', null, WAIT);
  // the first data clears the "waiting" note, on the rank scale too (drawn incrementally after)
  await p.waitForFunction(() => window.heat.model()?.seenMin != null, null, WAIT);
  assert.equal(await p.isVisible('#heat-empty'), false, 'no "waiting for data" over the data');
  await p.screenshot({ path: artifact('tokens-viewer-running.png') });

  // a reload connects again with the tab's token, and the address stays clean
  await p.reload();
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello?.role === 'viewer', null, WAIT);
  assert.ok(!p.url().includes('token'));
  // the token went as a subprotocol, never in a websocket URL
  const hs = handshakes();
  assert.equal(hs.length, 2, 'one websocket per load');
  for (const s of hs) {
    assert.ok(!s.url.includes(VIEWER) && !s.url.includes('token'), `websocket URL without the token: ${s.url}`);
    assert.deepEqual(s.protocols.split(',').map((x) => x.trim()), ['heat-actix.v1', `token.${VIEWER}`]);
  }
});

test('operator token: the custom-script entry is there and a script runs', async () => {
  const p = await page(`/?token=${OPERATOR}`);
  const hello = await p.evaluate(() => window.heat.hello);
  assert.equal(hello.role, 'operator');
  assert.equal(hello.custom_scripts, true);
  const values = await p.$$eval('#preset option', (os) => os.map((o) => o.value));
  assert.ok(values.includes(''), 'the custom-script entry');
  assert.ok(values.length > 1, 'and the presets');
  assert.ok(!p.url().includes('token'));

  await p.selectOption('#preset', '');
  await p.fill('#script', 'tracepoint:raw_syscalls:sys_exit { @lat_ns = hist(nsecs % 1000); @calls = count(); }');
  await p.click('#start');
  await p.waitForFunction(() => window.heat.run === 'running' && window.heat.started && window.heat.started.preset == null && window.heat.frames >= 2, null, WAIT);
  assert.deepEqual(await p.evaluate(() => window.heat.aggregations), ['@lat_ns']);
});

test('a wrong token: the token field, no reconnect loop; the right token typed in connects', async () => {
  const before = await metric(server.url, AUTH_REJECTIONS);
  const p = await page('/?token=not-a-valid-token', { connected: false });
  await p.waitForFunction(() => window.heat?.needsToken, null, WAIT);
  assert.ok(await p.isVisible('#auth'), 'the token field is shown');
  assert.ok(await p.isVisible('#token-input'));
  assert.match(await p.textContent('#auth-message'), /refused the token \(the token is not valid\)/);
  assert.equal(await p.textContent('#status'), 'closed');
  assert.match(await p.textContent('#retry'), /token needed/);
  assert.ok(!p.url().includes('token'), 'the refused token left the address too');
  assert.equal(await p.evaluate(() => sessionStorage.getItem('heat.token')), null, 'a refused token is not kept');
  await p.screenshot({ path: artifact('tokens-refused.png') });

  // Watch the server: one refused upgrade, and no more however long the page waits.
  await sleep(NO_RETRY_WINDOW_MS);
  assert.equal(await metric(server.url, AUTH_REJECTIONS), before + 1, 'exactly one upgrade was refused');
  assert.equal(handshakes().length, 1, 'the page opened no other websocket');
  assert.equal(await p.evaluate(() => window.heat.retryPending), false, 'no reconnect is scheduled');
  assert.equal(await p.evaluate(() => window.heat.state), 'closed');

  await p.fill('#token-input', VIEWER);
  await p.click('#token-submit');
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello?.role === 'viewer', null, WAIT);
  assert.equal(await p.isVisible('#auth'), false, 'the field goes once connected');
  assert.equal(await p.inputValue('#token-input'), '', 'the field does not keep the token');
  assert.equal(await metric(server.url, AUTH_REJECTIONS), before + 1);
  assert.ok(!p.url().includes(VIEWER), 'typing the token did not put it in the address');
  assert.equal(await p.evaluate(() => sessionStorage.getItem('heat.token')), VIEWER);
  assert.deepEqual(handshakes().map((s) => s.protocols.replace(/\s/g, '')), ['heat-actix.v1,token.not-a-valid-token', `heat-actix.v1,token.${VIEWER}`]);
});

test('no token on a server that needs one: the field says so', async () => {
  const before = await metric(server.url, AUTH_REJECTIONS);
  const p = await page('/', { connected: false });
  await p.waitForFunction(() => window.heat?.needsToken, null, WAIT);
  assert.match(await p.textContent('#auth-message'), /needs a token/);
  assert.equal(await metric(server.url, AUTH_REJECTIONS), before + 1);
  await p.fill('#token-input', OPERATOR);
  await p.press('#token-input', 'Enter');
  await p.waitForFunction(() => window.heat.state === 'open' && window.heat.hello?.role === 'operator', null, WAIT);
});

test('a token a subprotocol cannot carry goes as the query parameter instead', async () => {
  const p = await page(`/?token=${encodeURIComponent(SLASHED)}`);
  assert.equal(await p.evaluate(() => window.heat.hello.user), 'b64');
  assert.ok(!p.url().includes('token'));
  const [hs] = handshakes();
  assert.equal(new URL(hs.url).searchParams.get('token'), SLASHED);
  assert.equal(hs.protocols, 'heat-actix.v1');
});
