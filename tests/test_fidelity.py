"""The fidelity benchmark's schema, and the guard on the shipped echo-tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_core.errors import ConfigError
from echo_core.model.backend import OmniBackend
from echo_core.models import ECHO_TINY_DIR, default_model_dir
from echo_core.sieve import CS2
from echo_lab.bench.cli import main
from echo_lab.bench.fidelity import find_row, plan, run_fidelity

pytestmark = pytest.mark.quality

ROW_KEYS = {
    "method",
    "scoring",
    "feed",
    "rope",
    "keep",
    "accuracy",
    "by_family",
    "kept_audio_frac",
    "kept_video_frac",
}


def test_plan_defaults() -> None:
    rows = plan(["none", "cs2", "random"], [1.0, 0.1], None)
    assert ("none", "sync", 1.0) in rows and ("none", "tmrope", 1.0) in rows
    assert ("cs2", "compact", 0.1) in rows and ("random", "compact", 0.1) not in rows
    assert all(keep < 1.0 for m, _, keep in rows if m != "none")


def test_schema_on_random_checkpoint(backend: OmniBackend, cs2: CS2, tmp_path: Path) -> None:
    report = run_fidelity(
        backend,
        cs2,
        split="test",
        limit=2,
        methods=["none", "cs2", "uniform"],
        keeps=[1.0, 0.1],
        progress=False,
    )
    assert {"model", "split", "n", "rows"} <= set(report)
    assert report["split"] == "test" and isinstance(report["n"], int) and report["n"] > 0
    for row in report["rows"]:  # type: ignore[attr-defined]
        assert set(row) >= ROW_KEYS
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 <= row["kept_audio_frac"] <= 1.0 and 0.0 <= row["kept_video_frac"] <= 1.0
    none = find_row(report, "none", "sync", 1.0)
    assert none is not None and none["kept_audio_frac"] == 1.0
    cs2_row, uniform = find_row(report, "cs2", "sync", 0.1), find_row(report, "uniform", "sync", 0.1)
    assert cs2_row is not None and (cs2_row["scoring"], cs2_row["feed"]) == ("attention", "embeddings")
    assert uniform is not None and uniform["scoring"] == "training_free"


def test_typed_and_spoken_questions_on_the_same_clips(backend: OmniBackend, cs2: CS2) -> None:
    common = dict(split="test", limit=2, methods=["none", "uniform"], keeps=[1.0, 0.1], progress=False)
    typed = run_fidelity(backend, cs2, **common)  # type: ignore[arg-type]
    both = run_fidelity(backend, cs2, questions="both", **common)  # type: ignore[arg-type]
    assert len(both["rows"]) == 2 * len(typed["rows"]) and both["n"] == typed["n"]  # type: ignore[arg-type]
    for row in typed["rows"]:  # type: ignore[attr-defined]
        same = find_row(both, row["method"], row["rope"], row["keep"], "typed")
        assert same is not None and same["accuracy"] == row["accuracy"]
        spoken = find_row(both, row["method"], row["rope"], row["keep"], "spoken")
        assert spoken is not None and spoken["kept_audio_frac"] == row["kept_audio_frac"]  # same clips
    with pytest.raises(ConfigError, match="questions"):
        run_fidelity(backend, cs2, questions="sung", **common)  # type: ignore[arg-type]


bundled = pytest.mark.skipif(
    not (ECHO_TINY_DIR / "config.json").is_file(), reason="echo-tiny not trained yet"
)


@bundled
def test_cli_with_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    rc = main(
        [
            "fidelity",
            "--split",
            "shift",
            "--limit",
            "2",
            "--methods",
            "none,cs2",
            "--keep",
            "1.0,0.2",
            "--json",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["split"] == "shift" and data["model"] == "echo-tiny"
    assert png.stat().st_size > 10_000


@bundled
def test_shipped_checkpoint_guard() -> None:
    """A broken or badly trained echo-tiny fails here.

    The shipped checkpoint measures, on this slice (100 test clips, 489 questions;
    docs/results.md), 84.5 % full and 81.6 % cs2+sync at keep 0.1 (the head over the salience
    prior, cs2.json's context cue at prior_weight 1) with typed questions, and 80.8 % / 76.1 % with the same
    questions spoken in voices held out from training. The
    evaluation is deterministic (seeded clips, greedy answers, espeak-ng renders) on one
    machine, but other CPU kernels round differently; each threshold sits 3.0–3.3 points
    (15–16 questions) under the measured figure to absorb that and nothing more. A
    random-weight model scores about 30 % typed; the typed-only echo-tiny before spoken
    training scored 4.7 % on the spoken questions. Re-derive the thresholds when a model ships.
    """
    directory = default_model_dir()
    backend = OmniBackend.load(directory)
    cs2 = CS2.load_or_init(backend.lm, directory)
    assert cs2.trained
    report = run_fidelity(
        backend,
        cs2,
        split="test",
        limit=100,
        methods=["none", "cs2"],
        keeps=[1.0, 0.1],
        ropes=["sync"],
        progress=False,
        questions="both",
    )
    floors = {("none", 1.0, "typed"): 0.815, ("cs2", 0.1, "typed"): 0.785}
    floors |= {("none", 1.0, "spoken"): 0.775, ("cs2", 0.1, "spoken"): 0.730}
    for (method, keep, asked), floor in floors.items():
        row = find_row(report, method, "sync", keep, asked)
        assert row is not None and float(row["accuracy"]) >= floor, (method, asked, row)  # type: ignore[arg-type]
