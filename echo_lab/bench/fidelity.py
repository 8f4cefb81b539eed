"""`echo-bench fidelity`: accuracy vs kept tokens for every sieve on the synthetic world.

Every method sees the same clips and questions. For each (method, rope, keep) the sieve
selects AV tokens from the question's sequence, the LLM prefills the kept tokens and the
greedy first answer token is compared with the ground truth (one-word answers). A row
also reports which share of the kept budget went to audio and to video, and, for the
scorer-based sieves, the correlation of that share with the clip's true share of audio
events (does the joint budget follow the information?).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.model.generate import prefill
from echo_core.model.rope import RopeMode
from echo_core.sieve import CS2, METHODS, Sieve, SieveResult, make_sieve
from echo_core.speech import Question, SpokenQuestion

from ..train.examples import encode_clips, question_sequence
from ..world import FAMILIES, iter_clips
from ..world.speech import spoken_question

DEFAULT_KEEPS = (1.0, 0.5, 0.2, 0.1, 0.05)
QUESTION_MODES = ("typed", "spoken", "both")
CS2_ROPES = ("tmrope", "compact", "sync")
OTHER_ROPES = ("tmrope", "sync")


@dataclass
class Tally:
    """Running counts for one (method, rope, keep) row."""

    correct: int = 0
    total: int = 0
    by_family: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    audio_share: list[float] = field(default_factory=list)
    audio_event_share: list[float] = field(default_factory=list)
    kept_audio_frac: list[float] = field(default_factory=list)
    kept_video_frac: list[float] = field(default_factory=list)

    def add(self, family: str, hit: bool, result: SieveResult, audio_event_share: float) -> None:
        self.add_counts(
            family,
            hit,
            n_audio=result.n_audio,
            n_video=result.n_video,
            kept_audio=result.kept_audio,
            kept_video=result.kept_video,
            audio_event_share=audio_event_share,
        )

    def add_counts(
        self,
        family: str,
        hit: bool,
        *,
        n_audio: int,
        n_video: int,
        kept_audio: int,
        kept_video: int,
        audio_event_share: float,
    ) -> None:
        """Count one answer given the AV tokens seen and those the LLM attended to."""
        self.correct += int(hit)
        self.total += 1
        self.by_family[family][0] += int(hit)
        self.by_family[family][1] += 1
        self.kept_audio_frac.append(kept_audio / max(1, n_audio))
        self.kept_video_frac.append(kept_video / max(1, n_video))
        self.audio_share.append(kept_audio / max(1, kept_audio + kept_video))
        self.audio_event_share.append(audio_event_share)

    def row(self, method: str, rope: str, keep: float) -> dict[str, object]:
        """The report row of this tally."""
        return {
            "method": method,
            "rope": rope,
            "keep": keep,
            "accuracy": self.correct / max(1, self.total),
            "by_family": {f: c / n for f, (c, n) in sorted(self.by_family.items()) if n},
            "kept_audio_frac": sum(self.kept_audio_frac) / max(1, len(self.kept_audio_frac)),
            "kept_video_frac": sum(self.kept_video_frac) / max(1, len(self.kept_video_frac)),
            "audio_budget_share": sum(self.audio_share) / max(1, len(self.audio_share)),
            "density_correlation": pearson(self.audio_share, self.audio_event_share),
        }


#: Sieves that rank by CS2's scorer (trained head, or its training-free attention mode).
CS2_SCORED = ("cs2", "per_modality", "audio_guided")


def method_labels(method: str, cs2: CS2) -> dict[str, str]:
    """How a row's sieve scores tokens and what its LLM reads: {"scoring", "feed"}.

    scoring: "head" (trained CS2), "head+salience" (a trained head over the encoder-salience
    prior, CS2.prior_weight > 0) or "attention" (CS2's training-free mode) for CS2-scored
    methods, "training_free" for the other sieves, "none" for full tokens; feed: CS2's
    feed for cs2 rows ("embeddings" or "refined"), "embeddings" for every other sieve.
    """
    if method in CS2_SCORED:
        scoring = ("head+salience" if cs2.prior_weight > 0 else "head") if cs2.trained else "attention"
    else:
        scoring = "none" if method == "none" else "training_free"
    return {"scoring": scoring, "feed": cs2.feed if method == "cs2" else "embeddings"}


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson correlation, None when either side is constant or too short."""
    if len(xs) < 3:
        return None
    x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else None


def plan(methods: list[str], keeps: list[float], ropes: list[str] | None) -> list[tuple[str, str, float]]:
    """(method, rope, keep) rows; `none` only at keep 1.0, the others only below 1.0."""
    rows = []
    for method in methods:
        allowed = CS2_ROPES if method == "cs2" else OTHER_ROPES
        for rope in [r for r in allowed if ropes is None or r in ropes]:
            for keep in keeps:
                if (method == "none") == (keep >= 1.0):
                    rows.append((method, rope, keep))
    return rows


@torch.no_grad()
def predict(backend: OmniBackend, seq: object, result: SieveResult, rope: RopeMode) -> str:
    """The greedy first answer token, as a word."""
    state = prefill(backend.lm, seq, rope, result)  # type: ignore[arg-type]
    return str(backend.tokenizer.decode([int(state.logits.argmax())])).strip()


def run_fidelity(
    backend: OmniBackend,
    cs2: CS2,
    *,
    split: str,
    limit: int,
    methods: list[str] | None = None,
    keeps: list[float] | None = None,
    ropes: list[str] | None = None,
    model_name: str = "echo-tiny",
    progress: bool = True,
    questions: str = "typed",
) -> dict[str, object]:
    """Evaluate the planned rows on `limit` clips of `split`; returns the JSON report.

    `questions`: `typed`, `spoken` (each question spoken by its split's voices; every split but
    train has voices held out from training, world/speech.py) or `both` (every row twice, on the
    same clips and questions; rows carry `questions`).
    """
    if questions not in QUESTION_MODES:
        raise ConfigError(f"questions must be one of {', '.join(QUESTION_MODES)}, got {questions!r}")
    asked_as = ("typed", "spoken") if questions == "both" else (questions,)
    rows = plan(methods or list(METHODS), list(keeps or DEFAULT_KEEPS), ropes)
    sieves: dict[tuple[str, str], Sieve] = {}
    for method, rope, _ in rows:
        if (method, rope) not in sieves:
            sieves[(method, rope)] = make_sieve(method, backend.lm, cs2, rope=RopeMode.parse(rope))
    tallies: dict[tuple[str, str, float, str], Tally] = {(*row, a): Tally() for row in rows for a in asked_as}
    n_questions = 0
    for clip in tqdm(
        iter_clips(split, 0, limit), total=limit, desc=f"fidelity/{split}", disable=not progress
    ):
        enc = encode_clips(backend, [clip])[0]
        n_a, n_v = clip.spec.n_audio_events, clip.spec.n_video_events
        event_share = n_a / max(1, n_a + n_v)
        for q in clip.questions:
            n_questions += 1
            for mode in asked_as:
                asked: Question = q.text if mode == "typed" else SpokenQuestion(spoken_question(clip.spec, q))
                seq, _ = question_sequence(backend, enc, asked)
                for method, rope, keep in rows:
                    result = sieves[(method, rope)].select(seq, keep=keep)
                    hit = predict(backend, seq, result, RopeMode.parse(rope)) == q.answer
                    tallies[(method, rope, keep, mode)].add(q.family, hit, result, event_share)
    out_rows = [
        t.row(m, rope, keep) | method_labels(m, cs2) | {"questions": mode}
        for (m, rope, keep, mode), t in tallies.items()
    ]
    return {
        "model": model_name,
        "mode": "offline",
        "split": split,
        "n": n_questions,
        "n_clips": limit,
        "families": list(FAMILIES),
        "rows": out_rows,
    }


def find_row(
    report: dict[str, object], method: str, rope: str, keep: float, questions: str = "typed"
) -> dict[str, object] | None:
    """The row of `report` for (method, rope, keep) and how questions were asked, if present."""
    for row in report["rows"]:  # type: ignore[attr-defined]
        same = row["method"] == method and row["rope"] == rope and math.isclose(row["keep"], keep)
        if same and row.get("questions", "typed") == questions:
            return row  # type: ignore[no-any-return]
    return None


def plot_fidelity(report: dict[str, object], path: str | Path) -> None:
    """Accuracy vs keep per method (Sync-RoPE solid, others dashed) and cs2+sync per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]  # type: ignore[index]
    full = find_row(report, "none", "sync", 1.0) or find_row(report, "none", "tmrope", 1.0)
    fig, (ax, ax_f) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:  # type: ignore[attr-defined]
        series[(row["method"], row["rope"])].append((row["keep"], row["accuracy"]))
    palette = plt.get_cmap("tab10")
    colour = {m: palette(i) for i, m in enumerate(METHODS)}
    for (method, rope), pts in sorted(series.items()):
        if method == "none":
            continue
        pts.sort()
        style = "-" if rope == "sync" else ("--" if rope == "tmrope" else ":")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            style,
            color=colour.get(method),
            marker="o",
            ms=3,
            label=f"{method} ({rope})",
        )
    if full:
        ax.axhline(float(str(full["accuracy"])), color="k", lw=1, label="full tokens")
    ax.set_xscale("log")
    ax.set_xlabel("keep ratio (AV tokens kept)")
    ax.set_ylabel("accuracy")
    mode = "streaming, " if report.get("mode") == "streaming" else ""
    ax.set_title(f"{report['model']} on {report['split']} ({mode}n={report['n']})")
    ax.legend(fontsize=7, ncol=2)
    fam: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:  # type: ignore[attr-defined]
        if row["method"] == "cs2" and row["rope"] == "sync":
            for f, acc in row["by_family"].items():
                fam[f].append((row["keep"], acc))
    for f, pts in sorted(fam.items()):
        pts.sort()
        ax_f.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f)
    ax_f.set_xscale("log")
    ax_f.set_xlabel("keep ratio")
    ax_f.set_title("cs2 + sync by question family")
    ax_f.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(report: dict[str, object]) -> str:
    """Accuracy per method and rope (rows) and keep (columns), as a markdown table."""
    rows = report["rows"]  # type: ignore[index]
    keeps = sorted({r["keep"] for r in rows}, reverse=True)  # type: ignore[attr-defined]
    lines = [
        "| method | scoring | feed | rope | questions | " + " | ".join(f"keep {k:g}" for k in keeps) + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in keeps) + " |",
    ]
    seen: dict[tuple[str, str, str, str, str], dict[float, float]] = {}
    for r in rows:  # type: ignore[attr-defined]
        key = (r["method"], r.get("scoring", ""), r.get("feed", ""), r["rope"], r.get("questions", "typed"))
        seen.setdefault(key, {})[r["keep"]] = r["accuracy"]
    for (method, scoring, feed, rope, asked), by_keep in seen.items():
        cells = [f"{100 * by_keep[k]:.1f}" if k in by_keep else "" for k in keeps]
        lines.append(f"| {method} | {scoring} | {feed} | {rope} | {asked} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
