// The answer being streamed (question, text growing delta by delta, usage, whether it is
// being spoken) and the history list of past questions and answers.

/** How the server names a spoken question (`response.created`, `history`): "(spoken, 1.8 s)". */
const SPOKEN = /^\(spoken, ([0-9.]+) s\)$/;

/** "you asked (spoken, 1.8 s)" for an utterance of `seconds`. */
export function spokenText(seconds) {
  return `you asked (spoken, ${Number(seconds).toFixed(1)} s)`;
}

/**
 * @typedef {{question: string, input?: string, spoken_s?: number}} Asked a response.created or a
 *   history item: what was asked, and how
 */

/** @param {Asked} asked @returns {boolean} */
export function isSpoken({ question, input }) {
  return input === "spoken" || SPOKEN.test(question || "");
}

/** How a question reads on the page: typed text as typed, a spoken one as `spokenText`. @param {Asked} asked */
export function questionText({ question, input, spoken_s: spokenS }) {
  if (input === "spoken" && spokenS != null) return spokenText(spokenS);
  const spoken = SPOKEN.exec(question || "");
  return spoken ? spokenText(spoken[1]) : question;
}

/** The word for how an answer ended, shown after its usage ("" when it completed). */
export function endText({ status, reason }) {
  if (status === "completed") return "";
  return status === "cancelled" && reason === "barge_in" ? "interrupted" : status;
}

/** Usage of a `response.done`, as one line. */
export function usageText(usage) {
  if (!usage) return "";
  return (
    `TTFT ${Number(usage.ttft_ms || 0).toFixed(0)} ms · total ${Number(usage.total_ms || 0).toFixed(0)} ms · ` +
    `${usage.av_tokens || 0} AV tokens (audio ${usage.audio_tokens || 0}, video ${usage.video_tokens || 0})`
  );
}

/** The current answer card. Its `data-state`: empty, waiting, streaming, completed, cancelled,
 * interrupted (the person spoke over it), failed; `data-speaking` while its speech plays. */
export class AnswerView {
  /** @param {HTMLElement} root holding .question, .text and .usage */
  constructor(root) {
    this.root = root;
    this.question = root.querySelector(".question");
    this.text = root.querySelector(".text");
    this.usage = root.querySelector(".usage");
    this.voice = root.querySelector(".voice-note");
    this.deltas = 0;
    this.responseId = "";
  }

  get busy() {
    return this.root.dataset.state === "waiting" || this.root.dataset.state === "streaming";
  }

  setState(state) {
    this.root.dataset.state = state;
    this.root.setAttribute("aria-busy", String(state === "waiting" || state === "streaming"));
  }

  /** @param {string} question */
  begin(question) {
    this.question.textContent = question;
    this.text.textContent = "…";
    this.usage.textContent = "";
    this.deltas = 0;
    this.responseId = "";
    this.root.dataset.deltas = "0";
    this.root.dataset.responseId = "";
    this.speaking(false);
    this.setState("waiting");
  }

  /** @param {string} responseId */
  started(responseId) {
    this.responseId = responseId;
    this.root.dataset.responseId = responseId;
    this.text.textContent = "";
    this.setState("streaming");
  }

  /** @param {string} delta */
  append(delta) {
    this.deltas += 1;
    this.text.textContent += delta;
    this.root.dataset.deltas = String(this.deltas);
  }

  /** @param {{answer: string, status: string, reason?: string, usage: object}} done */
  finish(done) {
    const end = endText(done);
    this.text.textContent = done.answer || this.text.textContent.trim() || "(no answer)";
    this.usage.textContent = usageText(done.usage) + (end ? ` · ${end}` : "");
    this.setState(end === "" ? "completed" : end === "interrupted" || end === "cancelled" ? end : "failed");
  }

  /**
   * Whether the answer is being spoken (between response.output_audio.started and .done).
   * @param {boolean} on
   * @param {string} [text] what to say about it
   */
  speaking(on, text = "") {
    this.root.dataset.speaking = String(on);
    this.voice.textContent = text;
  }

  /** @param {string} message */
  fail(message) {
    this.text.textContent = message;
    this.usage.textContent = "";
    this.setState("failed");
  }
}

/** The history list: newest first; items carry data-response-id. */
export class HistoryView {
  /** @param {HTMLOListElement} list @param {HTMLElement} empty shown while the list is empty */
  constructor(list, empty) {
    this.list = list;
    this.empty = empty;
  }

  clear() {
    this.list.replaceChildren();
    this.sync();
  }

  /**
   * Add one item (skipped when an item with its response id is already shown). A spoken
   * question reads "you asked (spoken, 1.8 s)".
   * @param {{response_id: string, question: string, input?: string, spoken_s?: number, answer: string,
   *   at?: number}} item
   * @param {{earlier?: boolean, usage?: object, end?: string}} [extra] `end`: see `endText`
   */
  add(item, { earlier = false, usage, end = "" } = {}) {
    if (item.response_id && this.list.querySelector(`[data-response-id="${CSS.escape(item.response_id)}"]`)) return;
    const li = document.createElement("li");
    li.dataset.responseId = item.response_id || "";
    if (earlier) li.classList.add("earlier");
    const q = document.createElement("p");
    q.className = "q";
    q.textContent = questionText(item);
    const a = document.createElement("p");
    a.className = "a";
    a.textContent = item.answer || "(no answer)";
    li.append(q, a);
    li.dataset.input = isSpoken(item) ? "spoken" : "text";
    const meta = [earlier ? "earlier session" : "", usage ? usageText(usage) : "", end].filter(Boolean).join(" · ");
    if (meta) {
      const m = document.createElement("p");
      m.className = "meta";
      m.textContent = meta;
      li.append(m);
    }
    this.list.prepend(li);
    this.sync();
  }

  /** Replace the list by replayed items (each list oldest first; earlier sessions first). */
  replay(groups) {
    this.list.replaceChildren();
    for (const { items, earlier } of groups) for (const item of items) this.add(item, { earlier });
    this.sync();
  }

  sync() {
    this.empty.hidden = this.list.children.length > 0;
    this.list.dataset.count = String(this.list.children.length);
  }
}
