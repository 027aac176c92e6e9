// The websocket, with automatic reconnect (exponential backoff with jitter; 1013 "server
// full" waits longer). The server proves it is healthy with `hello`; only then is the backoff reset.

/** One websocket with automatic reconnect (exponential backoff with jitter). */
export class Connection {
  constructor(url, { onState, onMessage }) {
    this.url = url;
    this.onState = onState;
    this.onMessage = onMessage;
    this.ws = null;
    this.state = 'closed';
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.lastClose = null;
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.retryAt = 0;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      console.debug('heat: websocket constructor failed', e);
      this.scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    ws.onopen = () => { if (ws === this.ws) this.setState('open'); };
    ws.onmessage = (ev) => {
      if (ws !== this.ws || typeof ev.data !== 'string') return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { console.debug('heat: ignoring non-JSON message'); return; }
      if (msg && typeof msg === 'object' && !Array.isArray(msg)) this.onMessage(msg);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.lastClose = { code: ev.code, reason: ev.reason || '' };
      this.setState('closed');
      this.scheduleReconnect(ev.code);
    };
  }

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
