// The event WebSocket (docs/protocol.md): JSON events in and out, request/reply matched by
// `event_id`, and automatic reconnection with exponential backoff and jitter.
//
// Server events are re-dispatched as DOM events named after their `type` (detail = the
// event). Lifecycle events: "open" (detail {reconnect}), "down" (detail {everOpened,
// attempt, delayMs}) before each wait to reconnect.

/** Client event types and their fields besides `type` and `event_id` (server/protocol.py's event
 * table, EVENTS; tests/test_web_protocol.py keeps the two equal). `send` refuses any other. */
export const CLIENT_EVENTS = Object.freeze({
  "session.create": ["api_key", "settings"],
  "session.attach": ["session_id", "token", "api_key"],
  "session.update": ["token", "settings"],
  "webrtc.offer": ["token", "sdp"],
  "webrtc.candidate": ["token", "candidate", "sdp_mid", "sdp_mline_index"],
  "response.create": ["token", "question", "window_s"],
  "response.cancel": ["token", "response_id"],
  "input_audio.start": ["token"],
  "input_audio.commit": ["token"],
  "input_audio.clear": ["token"],
  "history.get": ["token", "limit"],
});

/** Server event types and their fields (the same table); the page listens for these by name and
 * ignores fields it does not know, so a newer server may add some. */
export const SERVER_EVENTS = Object.freeze({
  "session.created": ["session_id", "token", "expires_at", "settings", "version"],
  "session.updated": ["session_id", "settings"],
  "webrtc.answer": ["sdp"],
  "webrtc.candidate": ["candidate", "sdp_mid", "sdp_mline_index"],
  "window.stats": [
    "session_id",
    "seen_audio",
    "seen_video",
    "kept_audio",
    "kept_video",
    "cache_audio",
    "cache_video",
    "cache_budget",
    "ingest_lag_s",
    "drops",
    "window_start_s",
    "window_end_s",
    "audio_times",
    "video_patches",
    "grid",
  ],
  "input_audio.speech_started": ["audio_start_ms"],
  "input_audio.speech_stopped": ["audio_end_ms"],
  "input_audio.committed": ["audio_start_ms", "audio_end_ms"],
  "response.created": ["response_id", "question", "input", "spoken_s"],
  "response.output_text.delta": ["response_id", "delta"],
  "response.output_audio.started": ["response_id"],
  "response.output_audio.done": ["response_id", "duration_ms", "status"],
  "response.done": ["response_id", "answer", "status", "reason", "usage"],
  "history": ["session_id", "items"],
  "error": ["code", "message"],
});

/** A failed request: `code` is the protocol's error code (or a client code like connection_lost). */
export class EchoError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "EchoError";
    this.code = code;
  }
}

/** @returns {string} ws(s)://host/ws of the page's own origin. */
export function socketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

export class EchoSocket extends EventTarget {
  /**
   * @param {string} url
   * @param {{minDelayMs?: number, maxDelayMs?: number, requestTimeoutMs?: number}} [options]
   */
  constructor(url, { minDelayMs = 500, maxDelayMs = 15000, requestTimeoutMs = 30000 } = {}) {
    super();
    this.url = url;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.requestTimeoutMs = requestTimeoutMs;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.attempt = 0; // failed tries since the last successful open
    this.wasOpen = false; // this socket has been open once (so a failure is a lost connection)
    this.closedByUs = false;
    this.nextId = 0;
    /** @type {Map<string, {reply: string, resolve: Function, reject: Function, timer: number}>} */
    this.pending = new Map();
    this.retryTimer = 0;
    this.onOnline = () => this.reconnectNow();
    window.addEventListener("online", this.onOnline);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Open the socket (again); reconnects by itself until `close`. */
  connect() {
    this.closedByUs = false;
    window.clearTimeout(this.retryTimer);
    const reconnect = this.wasOpen;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      this.wasOpen = true;
      this.attempt = 0;
      this.dispatchEvent(new CustomEvent("open", { detail: { reconnect } }));
    });
    ws.addEventListener("message", (msg) => this.receive(msg.data));
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return; // an older socket, already replaced
      this.ws = null;
      this.failPending("connection_lost", "the connection to the server closed");
      if (this.closedByUs) return;
      this.attempt += 1;
      const delayMs = this.backoff(this.attempt);
      const everOpened = opened || this.wasOpen;
      this.dispatchEvent(new CustomEvent("down", { detail: { everOpened, attempt: this.attempt, delayMs } }));
      this.retryTimer = window.setTimeout(() => this.connect(), delayMs);
    });
  }

  /** Exponential backoff with full jitter in [delay / 2, delay]. */
  backoff(attempt) {
    const delay = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** Math.min(attempt - 1, 10));
    return Math.round(delay / 2 + (Math.random() * delay) / 2);
  }

  /** Skip the wait before the next reconnection (the browser came back online). */
  reconnectNow() {
    if (this.closedByUs || this.ws !== null) return;
    this.connect();
  }

  /** Close for good (no reconnection); pending requests fail with connection_lost. */
  close() {
    this.closedByUs = true;
    window.clearTimeout(this.retryTimer);
    window.removeEventListener("online", this.onOnline);
    const ws = this.ws;
    this.ws = null;
    this.failPending("connection_lost", "closed by the page");
    if (ws !== null) ws.close();
  }

  /**
   * Send one event; gives it an `event_id` (returned) so an `error` it causes can be matched.
   * @param {Record<string, unknown>} event
   * @returns {string} the event_id
   */
  send(event) {
    const type = String(event.type);
    if (!Object.hasOwn(CLIENT_EVENTS, type)) throw new EchoError("unknown_event", `no client event ${type}`);
    const extra = Object.keys(event).filter((k) => k !== "type" && k !== "event_id" && !CLIENT_EVENTS[type].includes(k));
    if (extra.length > 0) throw new EchoError("invalid_field", `${type} has no field ${extra.join(", ")}`);
    if (!this.isOpen) throw new EchoError("connection_lost", "not connected to the server");
    const eventId = event.event_id || `c${++this.nextId}`;
    this.ws.send(JSON.stringify({ ...event, event_id: eventId }));
    return eventId;
  }

  /**
   * Send an event and wait for its reply (the server echoes `event_id` on it).
   * Rejects with EchoError on the matching `error`, a lost connection or a timeout.
   * @param {Record<string, unknown>} event
   * @param {string} replyType
   * @returns {Promise<Record<string, any>>}
   */
  request(event, replyType) {
    return new Promise((resolve, reject) => {
      let eventId;
      try {
        eventId = this.send(event);
      } catch (err) {
        reject(err);
        return;
      }
      const timer = window.setTimeout(() => {
        this.pending.delete(eventId);
        reject(new EchoError("timeout", `no ${replyType} within ${this.requestTimeoutMs / 1000} s`));
      }, this.requestTimeoutMs);
      this.pending.set(eventId, { reply: replyType, resolve, reject, timer });
    });
  }

  /** @param {string} raw */
  receive(raw) {
    let event;
    try {
      event = JSON.parse(raw);
    } catch {
      console.warn("echo: ignored a message that is not JSON", raw.slice(0, 80));
      return;
    }
    if (!event || typeof event.type !== "string") return;
    if (!Object.hasOwn(SERVER_EVENTS, event.type)) console.info(`echo: server event ${event.type} is new to this page`);
    const waiting = event.event_id ? this.pending.get(event.event_id) : undefined;
    if (waiting && (event.type === waiting.reply || event.type === "error")) {
      this.pending.delete(event.event_id);
      window.clearTimeout(waiting.timer);
      if (event.type === "error") waiting.reject(new EchoError(event.code, event.message || ""));
      else waiting.resolve(event);
      return;
    }
    this.dispatchEvent(new CustomEvent(event.type, { detail: event }));
  }

  failPending(code, message) {
    for (const { reject, timer } of this.pending.values()) {
      window.clearTimeout(timer);
      reject(new EchoError(code, message));
    }
    this.pending.clear();
  }
}
