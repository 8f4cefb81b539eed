// "See what the sieve keeps": drawings of a `window.stats` event.
//  - heat-map over the preview: the merged-grid cells of video tokens kept from the most
//    recent frames, recent ones brighter;
//  - timeline of the window: a tick per kept audio token, a bar per second of kept video tokens;
//  - the audio/video split of the cache budget, and the counters.
// What was drawn is also written on the elements (data-*) so tests and tools can read it.

/** Frames this recent (seconds before the newest kept video token) light the heat-map. */
export const RECENT_S = 4;
const HALF_LIFE_S = 1.5; // a cell's weight halves for every 1.5 s of age
export const COLOURS = Object.freeze({ audio: "#1fb5a8", video: "#f5a623", axis: "#8a94a6" });

/** Size the canvas backing store to its CSS box × devicePixelRatio; returns [ctx, width, height] in CSS px. */
function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const { width, height } = canvas.getBoundingClientRect();
  const w = Math.max(1, Math.round(width * ratio));
  const h = Math.max(1, Math.round(height * ratio));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return [ctx, width, height];
}

/**
 * The merged video grid. `window.stats` reports one more than the largest kept (h, w), which
 * falls short when no kept token lies in the last row or column; the largest grid seen since
 * the source (session, frame size) last changed is the real one.
 */
export class GridTracker {
  constructor() {
    this.source = "";
    this.rows = 0;
    this.cols = 0;
  }

  /**
   * @param {{grid?: number[]}} stats
   * @param {string} source changes when the session or the frame size changes
   * @returns {[number, number]} [rows, cols]
   */
  update(stats, source) {
    if (source !== this.source) {
      this.source = source;
      this.rows = 0;
      this.cols = 0;
    }
    const [rows, cols] = stats.grid && stats.grid.length === 2 ? stats.grid : [0, 0];
    this.rows = Math.max(this.rows, rows);
    this.cols = Math.max(this.cols, cols);
    return [this.rows, this.cols];
  }
}

/**
 * Heat-map of the video patches kept from the last RECENT_S seconds of frames.
 * @param {HTMLCanvasElement} canvas laid over the preview, same box
 * @param {{video_patches: number[][]}} stats
 * @param {[number, number]} grid [rows, cols] of the merged video grid (GridTracker)
 * @returns {number} patches drawn (also `data-kept-patches`)
 */
export function drawHeatmap(canvas, stats, [rows, cols]) {
  const [ctx, width, height] = fit(canvas);
  const patches = stats.video_patches || [];
  let drawn = 0;
  if (rows > 0 && cols > 0 && patches.length > 0) {
    const newest = Math.max(...patches.map((p) => p[0]));
    const weight = new Float32Array(rows * cols);
    for (const [t, h, w] of patches) {
      const age = newest - t;
      if (age > RECENT_S || h < 0 || w < 0 || h >= rows || w >= cols) continue;
      weight[h * cols + w] += 0.5 ** (age / HALF_LIFE_S);
      drawn += 1;
    }
    const cw = width / cols;
    const ch = height / rows;
    ctx.lineWidth = 1;
    for (let i = 0; i < weight.length; i++) {
      if (weight[i] <= 0) continue;
      const x = (i % cols) * cw;
      const y = Math.floor(i / cols) * ch;
      const alpha = 0.08 + 0.32 * Math.min(1, weight[i]);
      ctx.fillStyle = `rgba(245, 166, 35, ${alpha.toFixed(3)})`;
      ctx.fillRect(x, y, cw, ch);
      ctx.strokeStyle = "rgba(245, 166, 35, 0.9)";
      ctx.strokeRect(x + 0.5, y + 0.5, cw - 1, ch - 1);
    }
  }
  canvas.dataset.keptPatches = String(drawn);
  canvas.setAttribute(
    "aria-label",
    `Heat-map: ${drawn} video patches kept from the last ${RECENT_S} s of frames` +
      (rows ? ` on a ${rows} × ${cols} grid` : ""),
  );
  return drawn;
}

/** Seconds between labelled ticks for a window of `span` seconds. */
function tickStep(span) {
  return [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((s) => span / s <= 6) || 7200;
}

/**
 * Timeline of the window [window_start_s, window_end_s]: audio ticks on top, video bars below.
 * @param {HTMLCanvasElement} canvas
 * @param {{window_start_s: number, window_end_s: number, audio_times: number[], video_patches: number[][]}} stats
 * @returns {{audio: number, video: number}} tokens drawn (also `data-kept-audio` / `data-kept-video`)
 */
export function drawTimeline(canvas, stats) {
  const [ctx, width, height] = fit(canvas);
  const start = stats.window_start_s || 0;
  const end = Math.max(stats.window_end_s || 0, start + 1e-3);
  const span = end - start;
  const axisH = 14;
  const lane = (height - axisH) / 2;
  const x = (t) => ((t - start) / span) * width;
  const inside = (t) => t >= start - 1e-6 && t <= end + 1e-6;

  ctx.fillStyle = COLOURS.audio;
  let audio = 0;
  for (const t of stats.audio_times || []) {
    if (!inside(t)) continue;
    ctx.fillRect(Math.min(width - 1.5, x(t)), 2, 1.5, lane - 4);
    audio += 1;
  }

  const seconds = Math.max(1, Math.ceil(span));
  const perSecond = new Array(seconds).fill(0);
  let video = 0;
  for (const [t] of stats.video_patches || []) {
    if (!inside(t)) continue;
    perSecond[Math.min(seconds - 1, Math.floor(t - start))] += 1;
    video += 1;
  }
  const most = Math.max(1, ...perSecond);
  ctx.fillStyle = COLOURS.video;
  const barW = Math.max(1, width / seconds - 1);
  perSecond.forEach((n, i) => {
    if (n === 0) return;
    const h = Math.max(2, ((lane - 4) * n) / most);
    ctx.fillRect(x(start + i), lane + (lane - h) - 2, barW, h);
  });

  ctx.strokeStyle = COLOURS.axis;
  ctx.fillStyle = COLOURS.axis;
  ctx.font = "10px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(0, height - axisH + 0.5);
  ctx.lineTo(width, height - axisH + 0.5);
  ctx.stroke();
  const step = tickStep(span);
  for (let ago = 0; ago <= span + 1e-6; ago += step) {
    const px = width - (ago / span) * width;
    ctx.fillRect(Math.min(width - 1, px), height - axisH, 1, 4);
    const label = ago === 0 ? "now" : `−${Math.round(ago)} s`;
    ctx.textAlign = ago === 0 ? "right" : px < 20 ? "left" : "center";
    ctx.fillText(label, Math.min(width, Math.max(0, px)), height - 2);
  }

  canvas.dataset.keptAudio = String(audio);
  canvas.dataset.keptVideo = String(video);
  canvas.dataset.windowStart = start.toFixed(2);
  canvas.dataset.windowEnd = (stats.window_end_s || 0).toFixed(2);
  canvas.setAttribute(
    "aria-label",
    `Timeline of the last ${span.toFixed(0)} s: ${audio} audio and ${video} video tokens kept`,
  );
  return { audio, video };
}

/**
 * The bar of kept audio vs video tokens against the cache budget.
 * @param {HTMLElement} bar holding span.audio and span.video
 * @param {HTMLElement} caption
 * @param {{kept_audio: number, kept_video: number}} stats
 * @param {number | undefined} budget
 */
export function drawSplit(bar, caption, stats, budget) {
  const a = stats.kept_audio || 0;
  const v = stats.kept_video || 0;
  const whole = Math.max(budget || 0, a + v, 1);
  const pct = (n) => `${((100 * n) / whole).toFixed(1)}%`;
  bar.querySelector(".audio").style.width = pct(a);
  bar.querySelector(".video").style.width = pct(v);
  const share = a + v > 0 ? Math.round((100 * a) / (a + v)) : 0;
  const text =
    `Audio ${a} · video ${v} tokens kept in the window` +
    (budget ? ` (${pct(a + v)} of the ${budget}-token budget)` : "") +
    (a + v > 0 ? `; split ${share} % audio / ${100 - share} % video` : "");
  caption.textContent = text;
  bar.setAttribute("aria-label", text);
}

/** Numbers for the counters block: {id suffix: text}. */
export function statLines(stats, lastTtftMs) {
  const seen = (stats.seen_audio || 0) + (stats.seen_video || 0);
  const kept = (stats.kept_audio || 0) + (stats.kept_video || 0);
  return {
    seen: `${seen.toLocaleString()} (audio ${stats.seen_audio || 0}, video ${stats.seen_video || 0})`,
    kept: `${kept.toLocaleString()} in the window (audio ${stats.kept_audio || 0}, video ${stats.kept_video || 0})`,
    lag: `${(stats.ingest_lag_s || 0).toFixed(2)} s`,
    drops: String(stats.drops || 0),
    ttft: lastTtftMs == null ? "—" : `${lastTtftMs.toFixed(0)} ms`,
  };
}
