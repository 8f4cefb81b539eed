// The session controls (window, keep, budget, hands-free) ↔ the protocol's session settings,
// and the person's choices remembered in localStorage.

const PREFS_KEY = "echo.prefs";
const KEY_KEY = "echo.apiKey";

/**
 * The protocol cannot clear `window_s` once set (an absent field means "unchanged"), so
 * "everything kept" after a finite window is a window longer than any session retains
 * (positions span at most `stream.rebase_horizon_s`, 600 s by default).
 */
export const ALL_WINDOW_S = 86400;

/** @returns {Record<string, any>} the remembered choices ({window, keep, budget} as the controls'
 * values; handsFree and muted as booleans) */
export function loadPrefs(storage = window.localStorage) {
  try {
    const prefs = JSON.parse(storage.getItem(PREFS_KEY) || "{}");
    return prefs && typeof prefs === "object" ? prefs : {};
  } catch {
    return {};
  }
}

/** @param {Record<string, any>} prefs */
export function savePrefs(prefs, storage = window.localStorage) {
  try {
    storage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    // storage disabled: choices last for this page only
  }
}

/** The API key: `?key=` in the URL wins (and is remembered), else the remembered one. */
export function initialKey(loc = window.location, storage = window.localStorage) {
  const fromUrl = new URLSearchParams(loc.search).get("key");
  if (fromUrl) {
    rememberKey(fromUrl, storage);
    return fromUrl;
  }
  try {
    return storage.getItem(KEY_KEY) || "";
  } catch {
    return "";
  }
}

/** @param {string} key */
export function rememberKey(key, storage = window.localStorage) {
  try {
    storage.setItem(KEY_KEY, key);
  } catch {
    // storage disabled: the key lasts for this page only
  }
}

/**
 * Protocol settings of a window control value ("10", "30", "60" or "all").
 * @param {string} value
 * @param {boolean} clearing true when a finite window is already in force (see ALL_WINDOW_S)
 */
export function windowSetting(value, clearing) {
  if (value !== "all") return { window_s: Number(value) };
  return clearing ? { window_s: ALL_WINDOW_S } : {};
}

/**
 * The turn detection setting: the server finds spoken questions by itself (hands-free), or the
 * page marks them (push-to-talk).
 * @param {boolean} handsFree
 */
export function turnDetection(handsFree) {
  return { type: handsFree ? "server_vad" : "none" };
}

/** Hands-free unless the person switched to push-to-talk. @param {Record<string, any>} prefs */
export function handsFreePref(prefs) {
  return prefs.handsFree !== false;
}

/**
 * Settings for `session.create` from the controls: the window always, keep and budget only
 * when the person chose them (otherwise the server's defaults hold). With a microphone, Echo
 * listens for spoken questions (hands-free unless push-to-talk was chosen) and speaks its
 * answers; without one, questions are typed and answers are text, the server's defaults.
 * @param {{window: HTMLSelectElement, keep: HTMLSelectElement, budget: HTMLSelectElement}} controls
 * @param {Record<string, any>} prefs
 * @param {boolean} microphone
 */
export function createSettings(controls, prefs, microphone) {
  const settings = windowSetting(controls.window.value, false);
  if (prefs.keep) settings.keep = Number(prefs.keep);
  if (prefs.budget) settings.cache_budget = Number(prefs.budget);
  if (microphone) {
    settings.turn_detection = turnDetection(handsFreePref(prefs));
    settings.modalities = ["text", "audio"];
  }
  return settings;
}

/** Select `value` in a <select>, adding an option labelled `label` when it has none. */
function choose(select, value, label) {
  if (![...select.options].some((o) => o.value === value)) {
    select.add(new Option(label, value));
  }
  select.value = value;
}

/**
 * Show the settings in force on the controls; each control's `data-applied` holds the
 * value the server confirmed.
 * @param {{window: HTMLSelectElement, keep: HTMLSelectElement, budget: HTMLSelectElement}} controls
 * @param {Record<string, any>} settings
 */
export function showSettings(controls, settings) {
  const w = settings.window_s;
  const windowValue = w == null || w >= ALL_WINDOW_S ? "all" : String(w);
  choose(controls.window, windowValue, `the last ${w} s`);
  controls.window.dataset.applied = windowValue;
  if (settings.keep != null) {
    choose(controls.keep, String(settings.keep), `${Math.round(settings.keep * 1000) / 10} %`);
    controls.keep.dataset.applied = String(settings.keep);
  }
  if (settings.cache_budget != null) {
    choose(controls.budget, String(settings.cache_budget), `${settings.cache_budget} tokens`);
    controls.budget.dataset.applied = String(settings.cache_budget);
  }
}

/** A sentence about the window, for the status line. */
export function windowText(settings) {
  const w = settings.window_s;
  return w == null || w >= ALL_WINDOW_S
    ? "Questions now look at everything Echo keeps."
    : `Questions now look at the last ${w} s.`;
}
