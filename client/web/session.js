// One Echo session seen from the page: create or re-attach it, keep its token fresh, and
// remember it (and a few earlier ones, whose history stays readable) in sessionStorage so
// a reload can attach again or replay what was asked.

import { EchoError } from "./protocol.js";

const STORE_KEY = "echo.session";
const EARLIER_KEPT = 4; // earlier sessions of this tab whose history a reload replays
const REFRESH_BEFORE_S = 120; // renew the token this long before it expires

/**
 * @typedef {{session_id: string, token: string}} Credentials
 * @typedef {{session_id: string, token: string, earlier: Credentials[]}} Saved
 */

/** @returns {Saved | null} */
function load(storage) {
  try {
    const saved = JSON.parse(storage.getItem(STORE_KEY) || "null");
    if (saved && typeof saved.session_id === "string" && typeof saved.token === "string") {
      return { ...saved, earlier: Array.isArray(saved.earlier) ? saved.earlier : [] };
    }
  } catch {
    // unreadable: start afresh
  }
  return null;
}

export class Session extends EventTarget {
  /**
   * @param {import("./protocol.js").EchoSocket} socket
   * @param {Storage} [storage]
   */
  constructor(socket, storage = window.sessionStorage) {
    super();
    this.socket = socket;
    this.storage = storage;
    this.id = "";
    this.token = "";
    this.expiresAt = 0;
    /** @type {Record<string, any>} the settings in force, as the server last reported them */
    this.settings = {};
    /** @type {Credentials[]} earlier sessions of this tab, newest first */
    this.earlier = [];
    this.refreshTimer = 0;
    const saved = load(storage);
    if (saved) this.earlier = saved.earlier;
    /** @type {Saved | null} what a reload left behind, until `resume` has used it */
    this.saved = saved && saved.token ? saved : null;
  }

  get live() {
    return this.token !== "";
  }

  /**
   * Re-attach to the remembered session (after a reload or a lost connection).
   * @returns {Promise<boolean>} true if attached; false if there was none or it is gone
   *   (then it joins `earlier`, so its history can still be read).
   */
  async resume() {
    const saved = this.token ? { session_id: this.id, token: this.token } : this.saved;
    this.saved = null;
    if (!saved) return false;
    try {
      this.adopt(
        await this.socket.request(
          { type: "session.attach", session_id: saved.session_id, token: saved.token },
          "session.created",
        ),
      );
      return true;
    } catch (err) {
      if (!(err instanceof EchoError) || err.code === "connection_lost" || err.code === "timeout") throw err;
      console.info(`echo: cannot re-attach to session ${saved.session_id} (${err.code})`);
      if (saved.token === this.token) {
        this.token = "";
        this.id = "";
        window.clearTimeout(this.refreshTimer);
      }
      this.retire({ session_id: saved.session_id, token: saved.token });
      return false;
    }
  }

  /**
   * A new session; the current one (if any) joins `earlier`.
   * @param {string} apiKey
   * @param {Record<string, unknown>} settings
   */
  async create(apiKey, settings) {
    const created = await this.socket.request({ type: "session.create", api_key: apiKey, settings }, "session.created");
    if (this.token) this.retire({ session_id: this.id, token: this.token });
    this.adopt(created);
  }

  /** Forget the current session (it ended); it joins `earlier`. */
  drop() {
    if (this.token) this.retire({ session_id: this.id, token: this.token });
    this.token = "";
    this.id = "";
    window.clearTimeout(this.refreshTimer);
    this.save();
  }

  /** @param {Record<string, unknown>} settings */
  async update(settings) {
    const updated = await this.socket.request({ type: "session.update", token: this.token, settings }, "session.updated");
    this.settings = updated.settings || {};
    return this.settings;
  }

  /**
   * Past questions and answers of this session, or of an earlier one (readable after it ended).
   * @returns {Promise<{question: string, answer: string, at: number, response_id: string}[]>}
   */
  async history(token = this.token, limit = 50) {
    const reply = await this.socket.request({ type: "history.get", token, limit }, "history");
    return reply.items || [];
  }

  /** @param {Record<string, any>} created a session.created event */
  adopt(created) {
    this.id = created.session_id;
    this.token = created.token;
    this.expiresAt = created.expires_at;
    this.settings = created.settings || {};
    this.save();
    window.clearTimeout(this.refreshTimer);
    const inMs = (this.expiresAt - Date.now() / 1000 - REFRESH_BEFORE_S) * 1000;
    this.refreshTimer = window.setTimeout(() => this.refresh(), Math.max(5000, inMs));
    this.dispatchEvent(new CustomEvent("change", { detail: created }));
  }

  /** A fresh token for the same session before the current one expires. */
  async refresh() {
    if (!this.token || !this.socket.isOpen) return;
    try {
      if (!(await this.resume())) this.dispatchEvent(new CustomEvent("gone"));
    } catch (err) {
      console.warn("echo: token refresh failed; the next reconnection retries", err);
    }
  }

  /** @param {Credentials} creds */
  retire(creds) {
    this.earlier = [creds, ...this.earlier.filter((c) => c.session_id !== creds.session_id)].slice(
      0,
      EARLIER_KEPT,
    );
    this.save();
  }

  save() {
    const value = this.token
      ? { session_id: this.id, token: this.token, earlier: this.earlier }
      : { session_id: "", token: "", earlier: this.earlier };
    try {
      this.storage.setItem(STORE_KEY, JSON.stringify(value));
    } catch {
      // storage full or disabled: the page still works, a reload just starts afresh
    }
  }
}
