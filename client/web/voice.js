// Talking to Echo: the speech indicator, the push-to-talk button (and the space bar), and the
// player of Echo's spoken answers with its mute control. The protocol side (session settings,
// input_audio.* events) is app.js's; these classes only keep the controls and what they show.

/** A press shorter than this is a slip, not a question: it is abandoned (input_audio.clear). */
export const SHORTEST_TALK_MS = 300;
/** How long the indicator says "heard you" while no answer to it has started. */
const HEARD_WAIT_MS = 15000;

/** Elements where the space bar has its own meaning (typing, pressing, toggling, choosing). */
const OWN_SPACE = "input, textarea, select, button, summary, a[href], [contenteditable]";

/**
 * The live speech indicator. Its `data-state`: `off` (waiting for speech), `on` (speech is being
 * heard: between input_audio.speech_started and .speech_stopped, or while push-to-talk is
 * held) and `heard` (the utterance ended; its answer has not started yet).
 */
export class SpeechIndicator {
  /** @param {HTMLElement} root holding a `.speech-text` */
  constructor(root) {
    this.root = root;
    this.text = root.querySelector(".speech-text");
    this.handsFree = true;
    this.timer = 0;
  }

  get state() {
    return this.root.dataset.state;
  }

  /** @param {string} state @param {string} text */
  show(state, text) {
    window.clearTimeout(this.timer);
    this.root.dataset.state = state;
    this.text.textContent = text;
  }

  /** Waiting for the next question; `note` says why it went out (a slip, no answer). */
  idle(note = "") {
    const waiting = this.handsFree
      ? "Listening for a question: just speak."
      : "Hold “Hold to talk” (or the space bar) while you speak.";
    this.show("off", note ? `${note} ${waiting}` : waiting);
  }

  /** Speech is being heard. @param {boolean} held by push-to-talk */
  hearing(held) {
    this.show("on", held ? "Listening… release to ask." : "Listening… (hearing you)");
  }

  /** The utterance ended; it goes out by itself if no answer starts. @param {number | null} seconds */
  heard(seconds) {
    const length = seconds != null && seconds > 0 ? ` (${seconds.toFixed(1)} s)` : "";
    this.show("heard", `Heard you${length}. Asking Echo…`);
    this.timer = window.setTimeout(() => this.idle("No answer came back for that."), HEARD_WAIT_MS);
  }
}

/**
 * The push-to-talk button: held with the pointer, or with the space bar (anywhere the space bar
 * does not already type or press something); Enter or a click without a pointer (assistive
 * technology) toggles it. Fires "press" and "release" (detail {heldMs}); `aria-pressed` is on
 * while held.
 */
export class PushToTalk extends EventTarget {
  /** @param {HTMLButtonElement} button */
  constructor(button) {
    super();
    this.button = button;
    this.pressedAt = 0;
    button.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || button.disabled) return;
      e.preventDefault(); // keeps a long touch from selecting text or opening a menu
      button.setPointerCapture(e.pointerId);
      this.press();
    });
    for (const name of ["pointerup", "pointercancel", "lostpointercapture"]) {
      button.addEventListener(name, () => this.release());
    }
    button.addEventListener("click", (e) => {
      if (e.detail !== 0) return; // a pointer click: pointerdown/up did it
      if (this.held) this.release();
      else this.press();
    });
    document.addEventListener("keydown", (e) => {
      if (e.code !== "Space" || !this.spaceIsOurs(e.target)) return;
      e.preventDefault(); // no scrolling, no click on the button
      if (!e.repeat) this.press();
    });
    document.addEventListener("keyup", (e) => {
      if (e.code !== "Space" || !this.spaceIsOurs(e.target)) return;
      e.preventDefault();
      this.release();
    });
    window.addEventListener("blur", () => this.release()); // the key-up would never come
  }

  get held() {
    return this.pressedAt !== 0;
  }

  /** @param {EventTarget | null} target */
  spaceIsOurs(target) {
    if (this.button.disabled) return false;
    if (target === this.button) return true;
    return !(target instanceof Element && target.closest(OWN_SPACE));
  }

  press() {
    if (this.held || this.button.disabled) return;
    this.pressedAt = performance.now();
    this.button.setAttribute("aria-pressed", "true");
    this.dispatchEvent(new CustomEvent("press"));
  }

  release() {
    if (!this.held) return;
    const heldMs = performance.now() - this.pressedAt;
    this.pressedAt = 0;
    this.button.setAttribute("aria-pressed", "false");
    this.dispatchEvent(new CustomEvent("release", { detail: { heldMs } }));
  }

  /** @param {boolean} enabled */
  enable(enabled) {
    if (!enabled) this.release();
    this.button.disabled = !enabled;
  }
}

/** Echo's spoken answers: the server's audio track played by an `<audio autoplay>`, and the
 * mute control (it mutes this page's playback only; the session goes on speaking). */
export class AnswerSpeaker {
  /**
   * @param {HTMLAudioElement} audio
   * @param {HTMLInputElement} mute a checkbox
   * @param {(blocked: boolean) => void} onBlocked told when the browser refuses to play without a click
   */
  constructor(audio, mute, onBlocked) {
    this.audio = audio;
    this.mute = mute;
    this.onBlocked = onBlocked;
    mute.addEventListener("change", () => this.sync());
    // a browser that blocked autoplay plays after the next click or key press
    const retry = () => {
      if (this.audio.srcObject && this.audio.paused) this.play();
    };
    document.addEventListener("pointerdown", retry);
    document.addEventListener("keydown", retry);
    this.sync();
  }

  /** @param {MediaStreamTrack} track the server's answer audio */
  attach(track) {
    this.audio.srcObject = new MediaStream([track]);
    this.play();
  }

  play() {
    this.audio.play().then(
      () => this.onBlocked(false),
      (err) => {
        if (err && err.name === "NotAllowedError") this.onBlocked(true);
      },
    );
  }

  sync() {
    this.audio.muted = this.mute.checked;
  }
}
