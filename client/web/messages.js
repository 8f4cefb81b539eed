// Every text the page shows a person about a failure, in one place: protocol error codes
// (docs/protocol.md, and push-to-talk's from the server's voice input), camera/microphone
// errors (getUserMedia), and the client's own conditions (server unreachable, connection lost).

/** Readable text for each `error.code` of the protocol, and the client-side codes. */
export const ERROR_TEXT = Object.freeze({
  message_too_large: "That message was too large for the server to accept.",
  invalid_json: "The page sent something the server could not read. Reload the page.",
  too_deep: "The page sent something the server could not read. Reload the page.",
  invalid_event: "The page sent an event the server does not accept. Reload the page.",
  unknown_event: "This server does not understand this page (different versions?). Reload the page.",
  invalid_field: "The server rejected part of a request.",
  question_too_long: "Questions can be at most 500 characters long. Shorten it and ask again.",
  bad_api_key: "The server did not accept this API key. Check it and connect again.",
  invalid_token: "The server did not accept this session's token. Starting a new session…",
  token_expired: "Your session expired. Starting a new session…",
  forbidden: "That session belongs to another API key. Starting a new session…",
  session_not_found: "The session has ended. Starting a new session…",
  session_quota:
    "This API key already has the most live sessions it may have. Close another Echo tab, " +
    "wait a minute, then press Try again.",
  rate_limited: "You are asking faster than this API key allows. Wait a moment, then ask again.",
  server_busy:
    "Echo is serving as many sessions as it can right now. Wait a minute, then press Try again.",
  worker_lost: "The Echo machine serving this session stopped. Starting a new session…",
  store_unavailable:
    "Echo's shared state is unreachable for the moment. Wait a few seconds and try again.",
  route_timeout: "The Echo machine serving this session did not answer in time. Try again.",
  worker_restarted: "The Echo machine serving this session restarted. Try again.",
  internal_error: "Echo hit a fault handling that request. Try again; the session goes on.",
  turn_detection_active: "Echo is listening for your voice by itself; push-to-talk is off while it does.",
  audio_span_open: "Push-to-talk is already on: release it to ask.",
  no_audio_span: "Push-to-talk was not on, so there was nothing to ask.",
  utterance_too_short: "That was too short to hear a question. Hold the button while you speak.",
  invalid_audio: "Echo could not take that recording as a question. Please ask again.",
  too_many_listeners: "Too many pages or streams are following this session. Close one and try again.",
  invalid_settings: "The server refused that setting.",
  bad_sdp: "The audio/video connection could not be set up with the server.",
  bad_candidate: "The server could not use one of this browser's network addresses.",
  too_many_candidates: "This browser offered more network addresses than the server accepts for one session.",
  body_timeout: "The request reached the server too slowly and was cut off. Check the connection and try again.",
  empty_av:
    "Echo has not seen or heard anything in that window yet. Wait a few seconds, " +
    "or choose a longer window.",
  turn_detection_active: "Echo is listening hands-free right now; untick Hands-free to use push-to-talk.",
  audio_span_open: "Push-to-talk is already on: release it to ask.",
  no_audio_span: "Push-to-talk had not started: hold the button (or the space bar) while you speak.",
  utterance_too_short: "That was too short to be a question: hold the button while you speak.",
  invalid_audio: "Echo could not take that as a spoken question. Say it again, or type it.",
  too_many_listeners: "Too many pages are following this session. Close another Echo tab and reload.",
  connection_lost: "The connection to the server was lost. Reconnecting…",
  media_failed:
    "Your camera and microphone could not reach the server (a firewall or network may block " +
    "WebRTC). Press Try again.",
  server_unreachable: "Cannot reach the Echo server.",
  timeout: "The server did not answer in time.",
});

/** Codes after which the session cannot be used any more: the page starts a new one. */
export const SESSION_GONE = new Set([
  "invalid_token",
  "token_expired",
  "forbidden",
  "session_not_found",
  "worker_lost",
]);

/** Codes whose server message adds something a person can act on (which setting, which field). */
const WITH_DETAIL = new Set(["invalid_settings", "invalid_field", "bad_sdp", "message_too_large"]);

/**
 * The text for a protocol error.
 * @param {string} code the `error.code`
 * @param {string} [detail] the server's `error.message`
 * @returns {string}
 */
export function errorText(code, detail = "") {
  const text = ERROR_TEXT[code];
  if (text === undefined) {
    return detail ? `The server reported a problem (${code}): ${detail}` : `The server reported ${code}.`;
  }
  return WITH_DETAIL.has(code) && detail ? `${text} (${detail})` : text;
}

/**
 * The text for a failed `getUserMedia` (a DOMException, or a TypeError on insecure pages).
 * @param {{name?: string, message?: string}} error
 * @returns {string}
 */
export function mediaErrorText(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
      return (
        "Camera and microphone access was denied. Allow them for this site (the camera icon in " +
        "the address bar, or the browser's site settings), then press Try again."
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "No camera or microphone was found. Connect one, then press Try again.";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return (
        "The camera or microphone is busy or could not start. Close other apps that use it, " +
        "then press Try again."
      );
    case "SecurityError":
    case "InsecureContext":
      return "The camera needs a secure page: open Echo over https:// (or on localhost).";
    default:
      return `The camera or microphone could not start (${(error && error.message) || error}).`;
  }
}

/**
 * The text for a socket that failed to open or closed, with the wait before the next try.
 * @param {{everOpened: boolean, delayMs: number, attempt: number, host: string}} info
 * @returns {string}
 */
export function connectionText({ everOpened, delayMs, attempt, host }) {
  const wait = `Retrying in ${Math.max(1, Math.round(delayMs / 1000))} s (attempt ${attempt}).`;
  if (everOpened) return `The connection to the server was lost. ${wait}`;
  return `Cannot reach the Echo server at ${host}. Is it running? ${wait}`;
}
