// Echo's page: wires the camera, the event socket, the session, the WebRTC link, the
// controls and the views together. Each concept lives in its own module; this one only
// decides what happens when.
//
// Start-up: API key (?key= or the remembered one, else the key form) → camera and
// microphone → WebSocket → re-attach the tab's session or create one → WebRTC offer →
// history replay → live. A lost socket reconnects with backoff and runs the same path.
//
// Voice: with a microphone the session listens for spoken questions (server VAD, hands-free)
// and speaks its answers on the peer connection's audio track; holding "Hold to talk" (or the
// space bar) switches to push-to-talk (turn detection none, input_audio.start / .commit).

import { AnswerView, HistoryView, endText, questionText } from "./answers.js";
import { SESSION_GONE, connectionText, errorText, mediaErrorText } from "./messages.js";
import { EchoError, EchoSocket, socketUrl } from "./protocol.js";
import { Session } from "./session.js";
import {
  createSettings,
  handsFreePref,
  initialKey,
  loadPrefs,
  rememberKey,
  savePrefs,
  showSettings,
  turnDetection,
  windowSetting,
  windowText,
} from "./settings.js";
import { GridTracker, drawHeatmap, drawSplit, drawTimeline, statLines } from "./sieve_view.js";
import { AnswerSpeaker, PushToTalk, SHORTEST_TALK_MS, SpeechIndicator } from "./voice.js";
import { MediaLink, openMedia } from "./webrtc.js";

const MEDIA_TIMEOUT_MS = 15000; // loopback connects in well under a second; a blocked network never
const LIVE_TEXT = "Live: Echo is watching and listening. Ask a question.";
const LIVE_VOICE_TEXT = "Live: Echo is watching and listening. Speak a question, or type one.";
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
  voice: $("voice"),
  handsFree: $("hands-free"),
  soundBlocked: $("sound-blocked"),
};
const answer = new AnswerView($("answer"));
const history = new HistoryView($("history"), $("history-empty"));
const grid = new GridTracker();
const indicator = new SpeechIndicator($("speech"));
const talk = new PushToTalk($("talk"));
const speaker = new AnswerSpeaker($("answer-audio"), $("mute"), (blocked) => {
  ui.soundBlocked.hidden = !blocked;
});

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
  /** @type {{eventId: string, question: string, responseId?: string} | null} the typed question
   * waiting for its answer (and the answer's id once it started) */
  ask: null,
  /** @type {Map<string, {question: string, input?: string, spoken_s?: number}>} answers under way */
  asked: new Map(),
  /** @type {Promise<void> | null} push-to-talk's start (switch to turn detection none, input_audio.start) */
  talking: null,
  /** @type {number | null} stream time (ms) the server heard the current utterance start */
  speechStartMs: null,
  lastStats: null,
  lastTtftMs: null,
  establishing: false,
  mediaInterrupted: false,
};

/** True when the page streams a microphone: it can be spoken to and speaks its answers. */
function hasMic() {
  return state.media !== null && state.media.missing !== "audio";
}

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
    showVoice(e.detail.settings || {});
  });
  session.addEventListener("gone", () => restartSession(errorText("session_not_found")));
  socket.addEventListener("open", (e) => onOpen(socket, e.detail.reconnect));
  socket.addEventListener("down", (e) => onDown(e.detail));
  socket.addEventListener("window.stats", (e) => onStats(e.detail));
  socket.addEventListener("response.created", (e) => onCreated(e.detail));
  socket.addEventListener("response.output_text.delta", (e) => onDelta(e.detail));
  socket.addEventListener("response.done", (e) => onDone(e.detail));
  socket.addEventListener("input_audio.speech_started", (e) => onSpeechStarted(e.detail));
  socket.addEventListener("input_audio.speech_stopped", (e) => onSpeechStopped(e.detail));
  socket.addEventListener("response.output_audio.started", (e) => onAudioStarted(e.detail));
  socket.addEventListener("response.output_audio.done", (e) => onAudioDone(e.detail));
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
    if (!resumed) await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs, hasMic()));
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
    await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs, hasMic()));
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
    onTrack: (track) => {
      if (track.kind === "audio") speaker.attach(track);
    },
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
    : state.media.micDenied
      ? " (The microphone is blocked for this site: type your questions, or allow the microphone " +
        "and reload to speak them.)"
      : missing === "audio"
        ? " (No microphone found: streaming video only; type your questions.)"
        : " (No camera found: streaming sound only.)";
  const voice = hasMic();
  ui.voice.hidden = !voice;
  talk.enable(voice);
  if (voice) indicator.idle();
  announce((voice && text === LIVE_TEXT ? LIVE_VOICE_TEXT : text) + note, "ok");
}

/** Start a new session on the open socket (the old one ended, or the budget changed). */
async function restartSession(text) {
  if (state.establishing || state.socket === null || !state.socket.isOpen) return;
  setPhase("session");
  announce(text);
  await establish(async () => {
    state.session.drop();
    await state.session.create(state.apiKey, createSettings(ui.controls, state.prefs, hasMic()));
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
  state.asked.clear();
  talk.enable(false);
  if (hasMic()) indicator.idle();
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
  if (indicator.state !== "off" && hasMic()) indicator.idle(); // a refused spoken question
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
    state.ask = { eventId, question };
    ui.question.value = "";
  } catch (err) {
    answer.fail(errorText(err.code || "connection_lost"));
  }
  syncAskButtons();
}

/** An answer starts: to the typed question this page asked, or to a spoken one (which the
 * server found in the microphone audio, or push-to-talk marked); it takes the answer card. */
function onCreated(event) {
  const spoken = event.input === "spoken";
  if (!spoken && (state.ask === null || state.ask.responseId)) return; // another tab's question
  const asked = spoken
    ? { question: event.question, input: "spoken", spoken_s: event.spoken_s }
    : { question: state.ask.question };
  if (!spoken) state.ask.responseId = event.response_id;
  else if (hasMic()) indicator.idle();
  state.asked.set(event.response_id, asked);
  answer.begin(questionText(asked));
  answer.started(event.response_id);
  syncAskButtons();
}

function onDelta(event) {
  if (event.response_id === answer.responseId) answer.append(event.delta);
}

function onDone(event) {
  const asked = state.asked.get(event.response_id);
  if (asked === undefined) return;
  state.asked.delete(event.response_id);
  history.add(
    { response_id: event.response_id, ...asked, answer: event.answer },
    { usage: event.usage, end: endText(event) },
  );
  if (state.ask?.responseId === event.response_id) state.ask = null;
  if (event.response_id !== answer.responseId) return; // a newer answer holds the card
  answer.finish(event);
  if (event.usage && event.status === "completed") state.lastTtftMs = Number(event.usage.ttft_ms);
  syncAskButtons();
  renderStats();
}

function syncAskButtons() {
  ui.askButton.disabled = answer.busy;
  ui.stop.disabled = !answer.busy;
}

// -------------------------------------------------------------------- voice
/** The server's turn detection, when it reports it, sets the hands-free switch. */
function showVoice(settings) {
  const type = settings.turn_detection?.type;
  if (type === undefined) return; // a server that does not report it: the switch shows what was asked
  ui.handsFree.checked = type === "server_vad";
  ui.handsFree.dataset.applied = type;
  indicator.handsFree = ui.handsFree.checked;
}

function onSpeechStarted(event) {
  state.speechStartMs = Number(event.audio_start_ms);
  if (!talk.held) indicator.hearing(false);
}

function onSpeechStopped(event) {
  const start = state.speechStartMs;
  state.speechStartMs = null;
  if (talk.held) return;
  indicator.heard(start === null ? null : (Number(event.audio_end_ms) - start) / 1000);
}

function onAudioStarted(event) {
  if (event.response_id === answer.responseId) {
    answer.speaking(true, speaker.mute.checked ? "Speaking the answer (muted here)…" : "Speaking the answer…");
  }
}

function onAudioDone(event) {
  if (event.response_id !== answer.responseId) return;
  const seconds = (Number(event.duration_ms) / 1000).toFixed(1);
  const text = event.status === "completed" ? `Spoken (${seconds} s).` : `Speech cut short after ${seconds} s.`;
  answer.speaking(false, text);
}

/** Turn detection on the session: hands-free (server VAD) or push-to-talk (none). */
async function setHandsFree(on) {
  const session = state.session;
  const now = session !== null && session.live && state.socket.isOpen;
  const settings = now ? await session.update({ turn_detection: turnDetection(on) }) : {};
  state.prefs.handsFree = on;
  savePrefs(state.prefs);
  ui.handsFree.checked = on;
  indicator.handsFree = on;
  showVoice(settings);
  if (indicator.state === "off") indicator.idle();
}

/** Push-to-talk pressed: switch to push-to-talk if needed, then mark the start of the question. */
function onTalkPress() {
  indicator.hearing(true);
  const { socket, session } = state;
  state.talking = (async () => {
    if (ui.handsFree.checked) await setHandsFree(false); // the server's VAD would ask it a second time
    socket.send({ type: "input_audio.start", token: session.token });
  })();
}

/** Push-to-talk released: ask what was said, or abandon a slip of the finger. */
async function onTalkRelease(heldMs) {
  const started = state.talking;
  state.talking = null;
  if (started === null) return;
  try {
    await started;
    const token = state.session.token;
    if (heldMs < SHORTEST_TALK_MS) {
      state.socket.send({ type: "input_audio.clear", token });
      indicator.idle("Too short to be a question: hold the button while you speak.");
      return;
    }
    state.socket.send({ type: "input_audio.commit", token });
    indicator.heard(heldMs / 1000);
  } catch (err) {
    indicator.idle();
    onFailure(err);
  }
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
  ui.handsFree.checked = handsFreePref(state.prefs);
  indicator.handsFree = ui.handsFree.checked;
  speaker.mute.checked = state.prefs.muted === true;
  speaker.sync();
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
  ui.handsFree.addEventListener("change", () => {
    setHandsFree(ui.handsFree.checked).catch((err) => {
      ui.handsFree.checked = !ui.handsFree.checked; // back to what is in force
      onFailure(err);
    });
  });
  speaker.mute.addEventListener("change", () => {
    state.prefs.muted = speaker.mute.checked;
    savePrefs(state.prefs);
    announce(speaker.mute.checked ? "Spoken answers are muted." : "Spoken answers play aloud.", "ok");
  });
  talk.addEventListener("press", () => onTalkPress());
  talk.addEventListener("release", (e) => onTalkRelease(e.detail.heldMs));
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
