"""`echo-bench`: Echo's benchmarks, each writing a JSON report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import EchoError

TOLERANCE = 1e-5


def _write(report: dict[str, object], path: str | None) -> None:
    text = json.dumps(report, indent=2)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)


def cmd_equivalence(args: argparse.Namespace) -> int:
    from .equivalence import run_equivalence

    report = run_equivalence(args.preset, args.seed)
    _write(report, args.json)
    worst = max(float(str(report["max_abs_logit_diff"])), float(str(report["max_abs_logit_diff_sync_zero"])))
    if worst > TOLERANCE:
        print(f"FAIL: max |Δlogit| {worst:.3g} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    print(f"OK: max |Δlogit| {worst:.3g} ≤ {TOLERANCE:g}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="echo-bench", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = p.add_subparsers(dest="command", required=True)
    eq = sub.add_parser("equivalence", help="our path vs upstream transformers logits (fp32)")
    eq.add_argument("--json", help="write the report here")
    eq.add_argument("--preset", default="tiny", help="model size preset (default: tiny)")
    eq.add_argument("--seed", type=int, default=0)
    eq.set_defaults(func=cmd_equivalence)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except EchoError as exc:
        print(f"echo-bench: {exc.code}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
