// Echo's page: wires the camera, the event socket, the session, the WebRTC link, the
// controls and the views together. Each concept lives in its own module; this one only
// decides what happens when.
//
// Start-up: API key (?key= or the remembered one, else the key form) → camera and
// microphone → WebSocket → re-attach the tab's session or create one → WebRTC offer →
// history replay → live. A lost socket reconnects with backoff and runs the same path.

import { AnswerView, HistoryView } from "./answers.js";
import { SESSION_GONE, connectionText, errorText, mediaErrorText } from "./messages.js";
import { EchoError, EchoSocket, socketUrl } from "./protocol.js";
import { Session } from "./session.js";
import {
  createSettings,
  initialKey,
  loadPrefs,
  rememberKey,
  savePrefs,
  showSettings,
  windowSetting,
  windowText,
} from "./settings.js";
import { GridTracker, drawHeatmap, drawSplit, drawTimeline, statLines } from "./sieve_view.js";
import { MediaLink, openMedia } from "./webrtc.js";

const MEDIA_TIMEOUT_MS = 15000; // loopback connects in well under a second; a blocked network never
const LIVE_TEXT = "Live: Echo is watching and listening. Ask a question.";
const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  retry: $("retry"),
  keyPanel: $("key-panel"),
  keyForm: $("key-form"),
  keyInput: $("api-key"),
  stage: $("stage"),
  preview: $("preview"),
  heatmap: $("heatmap"),
  showHeatmap: $("show-heatmap"),
  timeline: $("timeline"),
  split: $("split"),
  splitText: $("split-text"),
  controls: { window: $("window"), keep: $("keep"), budget: $("budget") },
  askForm: $("ask-form"),
  question: $("question"),
  askButton: $("ask-button"),
  stop: $("stop"),
};
const answer = new AnswerView($("answer"));
const history = new HistoryView($("history"), $("history-empty"));
const grid = new GridTracker();

const state = {
  apiKey: initialKey(),
  prefs: loadPrefs(),
  /** @type {{stream: MediaStream, missing: string | null} | null} */
  media: null,
  /** @type {EchoSocket | null} */
  socket: null,
  /** @type {Session | null} */
  session: null,
  /** @type {MediaLink | null} */
  link: null,
  /** @type {{eventId: string} | null} the question waiting for its answer */
  ask: null,
  lastStats: null,
  lastTtftMs: null,
  establishing: false,
  mediaInterrupted: false,
};

// ------------------------------------------------------------------ status
function announce(text, tone = "info") {
  ui.status.textContent = text;
  ui.status.dataset.tone = tone;
}

function setPhase(phase) {
  document.body.dataset.state = phase;
}

function askForKey(text, invalid) {
  setPhase(invalid ? "key-error" : "key");
  announce(text, invalid ? "error" : "info");
  ui.keyPanel.open = true;
  if (invalid) ui.keyInput.setAttribute("aria-invalid", "true");
  ui.keyInput.focus();
  ui.keyInput.select(); // typing replaces the rejected key
}

function offerRetry() {
  ui.retry.hidden = false;
}

// ----------------------------------------------------------------- start-up
async function start() {
  ui.retry.hidden = true;
  if (!state.apiKey) {
    askForKey("Enter your Echo API key to start.", false);
    return;
  }
  if (state.media === null) {
    setPhase("media");
    announce("Asking for your camera and microphone…");
    try {
      state.media = await openMedia();
    } catch (err) {
      setPhase("media-error");
      announce(mediaErrorText(err), "error");
      offerRetry();
      return;
    }
    ui.preview.srcObject = state.media.stream;
  }
  connect();
}

function connect() {
  if (state.socket !== null) state.socket.close();
  const socket = new EchoSocket(socketUrl());
  const session = new Session(socket);
  state.socket = socket;
  state.session = session;
  session.addEventListener("change", (e) => {
    document.body.dataset.sessionId = e.detail.session_id;
    showSettings(ui.controls, e.detail.settings || {});
  });
  session.addEventListener("gone", () => restartSession(errorText("session_not_found")));
  socket.addEventListener("open", (e) => onOpen(socket, e.detail.reconnect));
  socket.addEventListener("down", (e) => onDown(e.detail));
  socket.addEventListener("window.stats", (e) => onStats(e.detail));
  socket.addEventListener("response.created", (e) => onCreated(e.detail));
  socket.addEventListener("response.output_text.delta", (e) => onDelta(e.detail));
  socket.addEventListener("response.done", (e) => onDone(e.detail));
  socket.addEventListener("webrtc.candidate", (e) => state.link?.addRemoteCandidate(e.detail));
  socket.addEventListener("error", (e) => onServerError(e.detail));
  setPhase("connecting");
  announce(`Connecting to the Echo server at ${window.location.host}…`);
  socket.connect();
}

/** The socket is open: re-attach or create the session, stream media, replay the history. */
async function onOpen(socket, reconnect) {
  if (socket !== state.socket) return;
  setPhase("session");
  announce(reconnect ? "Reconnected. Re-attaching to your session…" : "Connected. Starting a session…");
  await establish(async () => {
    let resumed = await state.session.resume();
    if (!resumed) await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs));
    if (!resumed || state.link === null || !state.link.usable) resumed = await streamMedia(resumed);
    await replayHistory();
    goLive(resumed ? "Re-attached: your session goes on." : LIVE_TEXT);
  });
}

/** Run one start-up or restart sequence at a time; its failure is handled after it ended. */
async function establish(steps) {
  state.establishing = true;
  let failure = null;
  try {
    await steps();
  } catch (err) {
    failure = err;
  } finally {
    state.establishing = false;
  }
  if (failure !== null) onFailure(failure);
}

/** Offer the camera/microphone to the session. A re-attached session whose server peer cannot
 * take this page's new one (after a reload the server answers bad_sdp, or the link never
 * connects) is replaced by a new session; its history stays readable.
 * @returns {Promise<boolean>} `resumed`, or false when a new session replaced the resumed one */
async function streamMedia(resumed) {
  try {
    await negotiate();
    return resumed;
  } catch (err) {
    const refused = err instanceof EchoError && (err.code === "bad_sdp" || err.code === "media_failed");
    if (!(resumed && refused)) throw err;
    console.info(`echo: session ${state.session.id} cannot take a new peer (${err.code}); starting a new one`);
    announce("Your earlier session cannot take this page's camera. Starting a new session…");
    state.session.drop();
    await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs));
    await negotiate();
    return false;
  }
}

async function negotiate() {
  const { socket, session } = state;
  if (state.link !== null) state.link.close();
  const link = new MediaLink(state.media.stream, {
    onCandidate: (c) => {
      if (!socket.isOpen || !session.live) return; // the next negotiation gathers afresh
      socket.send({ type: "webrtc.candidate", token: session.token, ...c });
    },
    onState: (s) => onLinkState(link, s),
  });
  state.link = link;
  const sdp = await link.createOffer();
  const reply = socket.request({ type: "webrtc.offer", token: session.token, sdp }, "webrtc.answer");
  link.startTrickle();
  await link.acceptAnswer((await reply).sdp);
  if (!(await link.whenConnected(MEDIA_TIMEOUT_MS))) {
    throw new EchoError("media_failed", `the peer connection is ${link.state}`);
  }
}

async function replayHistory() {
  const session = state.session;
  const groups = [];
  for (const earlier of [...session.earlier].reverse()) {
    try {
      groups.push({ items: await session.history(earlier.token), earlier: true });
    } catch (err) {
      if (err instanceof EchoError && err.code === "connection_lost") throw err;
      // expired or forgotten: that session's history is gone
    }
  }
  groups.push({ items: await session.history(), earlier: false });
  history.replay(groups);
}

function goLive(text) {
  setPhase("live");
  const missing = state.media?.missing;
  const note = !missing
    ? ""
    : missing === "audio"
      ? " (No microphone found: streaming video only.)"
      : " (No camera found: streaming sound only.)";
  announce(text + note, "ok");
}

/** Start a new session on the open socket (the old one ended, or the budget changed). */
async function restartSession(text) {
  if (state.establishing || state.socket === null || !state.socket.isOpen) return;
  setPhase("session");
  announce(text);
  await establish(async () => {
    state.session.drop();
    await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs));
    await negotiate();
    await replayHistory();
    goLive("Live in a new session. Ask a question.");
  });
}

function onLinkState(link, linkState) {
  if (link !== state.link) return;
  document.body.dataset.media = linkState;
  if (linkState === "failed") {
    restartSession("The audio/video connection to the server failed. Starting a new session…");
  } else if (linkState === "disconnected") {
    state.mediaInterrupted = true;
    announce("The audio/video connection is interrupted; waiting for it to recover…", "error");
  } else if (linkState === "connected" && state.mediaInterrupted) {
    state.mediaInterrupted = false;
    announce("The audio/video connection recovered. " + LIVE_TEXT, "ok");
  }
}

function onDown(info) {
  setPhase("offline");
  announce(connectionText({ ...info, host: window.location.host }), "error");
  if (answer.busy) answer.fail(errorText("connection_lost"));
  state.ask = null;
  syncAskButtons();
}

/** A failed step of start-up, a setting or a restart. */
function onFailure(err) {
  if (!(err instanceof EchoError)) {
    console.error("echo:", err);
    announce(`Something went wrong: ${err && err.message ? err.message : err}`, "error");
    offerRetry();
    return;
  }
  if (err.code === "connection_lost") return; // the socket's "down" event reports it
  if (err.code === "bad_api_key") {
    state.socket.close();
    askForKey(errorText(err.code), true);
  } else if (SESSION_GONE.has(err.code)) {
    restartSession(errorText(err.code));
  } else if (err.code === "session_quota" || err.code === "server_busy") {
    state.socket.close();
    setPhase("error");
    announce(errorText(err.code), "error");
    offerRetry();
  } else {
    announce(errorText(err.code, err.message), "error");
    if (document.body.dataset.state !== "live") offerRetry();
  }
}

/** An `error` event no request was waiting for (an answer's, or a candidate's). */
function onServerError(event) {
  const forAsk = state.ask !== null && event.event_id === state.ask.eventId;
  if (forAsk) {
    answer.fail(errorText(event.code, event.message));
    state.ask = null;
    syncAskButtons();
  }
  if (SESSION_GONE.has(event.code)) restartSession(errorText(event.code));
  else if (!forAsk) announce(errorText(event.code, event.message), "error");
}

// ------------------------------------------------------------------- asking
function ask(question) {
  if (!question) return;
  if (answer.busy) {
    announce("Wait for the current answer, or press Stop.");
    return;
  }
  if (state.session === null || !state.session.live || !state.socket.isOpen) {
    announce("Not connected yet: ask again once the status says Live.", "error");
    return;
  }
  answer.begin(question);
  try {
    const eventId = state.socket.send({ type: "response.create", token: state.session.token, question });
    state.ask = { eventId };
    ui.question.value = "";
  } catch (err) {
    answer.fail(errorText(err.code || "connection_lost"));
  }
  syncAskButtons();
}

function onCreated(event) {
  if (state.ask === null) return;
  answer.started(event.response_id);
}

function onDelta(event) {
  if (event.response_id === answer.responseId) answer.append(event.delta);
}

function onDone(event) {
  if (event.response_id !== answer.responseId) return;
  answer.finish(event);
  history.add(
    { response_id: event.response_id, question: answer.question.textContent, answer: event.answer },
    { usage: event.usage },
  );
  if (event.usage && event.status === "completed") state.lastTtftMs = Number(event.usage.ttft_ms);
  state.ask = null;
  syncAskButtons();
  renderStats();
}

function syncAskButtons() {
  ui.askButton.disabled = answer.busy;
  ui.stop.disabled = !answer.busy;
}

// ------------------------------------------------------------------- sieve
function onStats(stats) {
  state.lastStats = stats;
  renderStats();
}

function renderStats() {
  const stats = state.lastStats;
  if (stats === null) return;
  const source = `${state.session?.id}:${ui.preview.videoWidth}x${ui.preview.videoHeight}`;
  drawHeatmap(ui.heatmap, stats, grid.update(stats, source));
  drawTimeline(ui.timeline, stats);
  drawSplit(ui.split, ui.splitText, stats, state.session?.settings.cache_budget);
  $("stats").dataset.seen = String((stats.seen_audio || 0) + (stats.seen_video || 0));
  for (const [name, text] of Object.entries(statLines(stats, state.lastTtftMs))) {
    $(`stat-${name}`).textContent = text;
  }
}

// ---------------------------------------------------------------- settings
async function changeSetting(name) {
  const value = ui.controls[name].value;
  state.prefs[name] = value;
  savePrefs(state.prefs);
  const session = state.session;
  if (session === null || !session.live || !state.socket.isOpen) return; // applies to the next session
  if (name === "budget") {
    restartSession(`Starting a new session with a ${value}-token budget…`);
    return;
  }
  const settings =
    name === "window" ? windowSetting(value, session.settings.window_s != null) : { keep: Number(value) };
  try {
    const now = Object.keys(settings).length > 0 ? await session.update(settings) : session.settings;
    showSettings(ui.controls, now);
    announce(
      name === "window" ? windowText(now) : `Echo now keeps ${Math.round(Number(now.keep) * 100)} % of each 2-s chunk.`,
      "ok",
    );
  } catch (err) {
    showSettings(ui.controls, session.settings); // back to what is in force
    onFailure(err);
  }
}

// ------------------------------------------------------------------ wiring
function init() {
  if (state.prefs.window) ui.controls.window.value = state.prefs.window;
  if (state.prefs.keep) ui.controls.keep.value = state.prefs.keep;
  if (state.prefs.budget) ui.controls.budget.value = state.prefs.budget;
  ui.keyInput.value = state.apiKey;
  if (new URLSearchParams(window.location.search).has("key")) {
    // keep the key out of the address bar, bookmarks and screenshots (it is remembered)
    window.history.replaceState(null, "", window.location.pathname);
  }

  ui.keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) {
      askForKey("Enter an API key.", true);
      return;
    }
    ui.keyInput.removeAttribute("aria-invalid");
    state.apiKey = key;
    rememberKey(key);
    ui.keyPanel.open = false;
    start();
  });
  ui.retry.addEventListener("click", () => start());
  ui.askForm.addEventListener("submit", (e) => {
    e.preventDefault();
    ask(ui.question.value.trim());
  });
  ui.stop.addEventListener("click", () => {
    if (!answer.busy || !state.socket?.isOpen) return;
    const event = { type: "response.cancel", token: state.session.token };
    if (answer.responseId) event.response_id = answer.responseId;
    state.socket.send(event);
  });
  for (const name of Object.keys(ui.controls)) {
    ui.controls[name].addEventListener("change", () => changeSetting(name));
  }
  ui.showHeatmap.addEventListener("change", () => {
    ui.heatmap.hidden = !ui.showHeatmap.checked;
  });
  ui.preview.addEventListener("playing", () => {
    $("stage-note").hidden = true;
  });
  ui.preview.addEventListener("loadedmetadata", () => {
    const { videoWidth: w, videoHeight: h } = ui.preview;
    if (w > 0 && h > 0) ui.stage.style.aspectRatio = `${w} / ${h}`;
  });
  const resized = new ResizeObserver(() => renderStats());
  resized.observe(ui.stage);
  resized.observe(ui.timeline);
  window.addEventListener("pagehide", () => {
    state.socket?.close();
    state.link?.close();
  });
  window.addEventListener("pageshow", (e) => {
    if (e.persisted && state.media !== null) {
      state.link = null;
      connect();
    }
  });
  syncAskButtons();
  start();
}

init();
