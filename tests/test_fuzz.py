"""A short seeded fuzz run against a real echo-server process, beside a healthy WebRTC session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echo_lab.fuzz.fuzz import MAKERS, WRONG_TYPES, baseline, generate_cases
from echo_lab.fuzz.hostile_fuzz import SCENARIOS
from echo_lab.fuzz.media_fuzz import FAMILIES as MEDIA_FAMILIES
from echo_lab.service_bench.cli import main as bench_main
from server.protocol import CLIENT_EVENTS, encode, parse_client_event, wire_fields

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_cases_are_seeded_and_cover_every_family() -> None:
    a = list(generate_cases(7, 2 * len(MAKERS), "tok.1.sig"))
    b = list(generate_cases(7, 2 * len(MAKERS), "tok.1.sig"))
    assert a == b and {c.family for c in a} == set(MAKERS)
    assert any(isinstance(c.payload, bytes) for c in a)


def test_cases_start_from_the_protocols_own_events() -> None:
    """Every client event type has a valid baseline (one the server's parser takes as it is), and
    each wrong-type mutation targets a field its event really has."""
    for kind, cls in CLIENT_EVENTS.items():
        event = baseline(kind, "tok.1.sig")
        assert type(event) is cls and parse_client_event(encode(event)) == event
    for kind, field, _ in WRONG_TYPES:
        assert field in wire_fields(CLIENT_EVENTS[kind]), (kind, field)


def test_hostile_messages_get_errors_and_the_healthy_session_is_unharmed(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"  # through `echo-bench fuzz`, as the committed run
    args = ["fuzz", "--config", str(ROOT / "configs" / "demo.yaml"), "--cases", str(10 * len(MAKERS))]
    assert bench_main([*args, "--seed", "1", "--media-cases", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    print({k: v for k, v in report.items() if k != "failed_cases"})
    assert report["failures"] == 0, report["failed_cases"]
    by_family = report["by_family"]
    hostile = {f"hostile:{name}" for name in SCENARIOS}
    assert set(by_family) == set(MAKERS) | {f"media:{f}" for f in MEDIA_FAMILIES} | hostile
    assert all(by_family[f] == {"ok": 1} for f in hostile), by_family  # flood … charsets held
    assert all(by_family[f].get("error", 0) > 0 for f in MAKERS), by_family
    assert sum(sum(by_family[f"media:{f}"].values()) for f in MEDIA_FAMILIES) == 5
    # every question of the healthy session was answered while the attack ran, about as well as
    # by a fresh session afterwards (WebRTC timing may move one chunk boundary, hence the 1)
    assert report["healthy_questions"] > 0 and all(report["healthy_answers_during"])
    assert report["healthy_correct_during"] >= report["healthy_correct_after"] - 1, report
