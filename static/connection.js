// The websocket, with automatic reconnect (exponential backoff with jitter; 1013 "server
// full" waits longer). The server proves it is healthy with `hello`; only then is the backoff
// reset. A close with 4401 (no valid token) is final until the page is given another token:
// retrying the same refused token would only fill the server's log.

/** Close code of a connection refused for want of a valid token (docs/protocol.md). */
export const CLOSE_UNAUTHORIZED = 4401;
const SUBPROTOCOL = 'heat-actix.v1';
/** RFC 7230 token characters: all a Sec-WebSocket-Protocol value may hold. */
const SUBPROTOCOL_SAFE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * One websocket with automatic reconnect (exponential backoff with jitter). `onMessage` gets
 * each text message parsed (a JSON object) and each binary message as an ArrayBuffer.
 */
export class Connection {
  constructor(url, { onState, onMessage, token = null }) {
    this.url = url;
    this.onState = onState;
    this.onMessage = onMessage;
    this.token = token;
    this.ws = null;
    this.state = 'closed';
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.lastClose = null;
    this.needsToken = false; // the last close was a 4401: waiting for another token
  }

  /** Uses `token` from the next connection on (null: none). */
  setToken(token) {
    this.token = token || null;
  }

  /**
   * Where and how to connect. The token travels as the `token.TOKEN` subprotocol, so it stays
   * out of URLs (server access logs, the browser's own connection-failure messages); a token
   * with characters a subprotocol cannot carry goes in the `token` query parameter instead.
   */
  target() {
    const t = this.token;
    if (!t) return { url: this.url, protocols: [SUBPROTOCOL] };
    if (SUBPROTOCOL_SAFE.test(t)) return { url: this.url, protocols: [SUBPROTOCOL, `token.${t}`] };
    const u = new URL(this.url);
    u.searchParams.set('token', t);
    return { url: u.href, protocols: [SUBPROTOCOL] };
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = 0;
    this.needsToken = false;
    this.setState('connecting');
    let ws;
    try {
      const { url, protocols } = this.target();
      ws = new WebSocket(url, protocols);
    } catch (e) {
      // The message names neither the URL nor the protocols: they may hold the token.
      console.debug('heat: websocket constructor failed', e && e.name);
      this.scheduleReconnect(0);
      return;
    }
    // Compact frames (protocol v1.1) are binary messages: read them as bytes, not Blobs.
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => { if (ws === this.ws) this.setState('open'); };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      if (ev.data instanceof ArrayBuffer) { this.onMessage(ev.data); return; }
      if (typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { console.debug('heat: ignoring non-JSON message'); return; }
      if (msg && typeof msg === 'object' && !Array.isArray(msg)) this.onMessage(msg);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.lastClose = { code: ev.code, reason: ev.reason || '' };
      if (ev.code === CLOSE_UNAUTHORIZED) {
        this.needsToken = true;
        this.attempt = 0;
        this.setState('closed');
        return;
      }
      this.setState('closed');
      this.scheduleReconnect(ev.code);
    };
  }

  /** Whether a reconnect is scheduled. */
  get retryPending() { return this.timer !== null; }

  /** Called once the server proved healthy (hello received): reset the backoff. */
  healthy() { this.attempt = 0; }

  scheduleReconnect(code) {
    let delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    if (code === 1013) delay = Math.max(delay, 5000); // server full: try again later
    this.attempt = Math.min(this.attempt + 1, 10);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.onState(this.state);
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  setState(s) {
    this.state = s;
    this.onState(s);
  }
}
