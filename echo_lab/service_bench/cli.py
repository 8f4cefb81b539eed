"""`echo-bench`: the library benchmarks (echo_lab.bench) plus the service's load|soak|faults|fuzz.

echo-bench load --sessions 1,2,4,8 --seconds 20 --json FILE
echo-bench soak --minutes 10 --json FILE
echo-bench faults [--only worker_killed,...] --json FILE
echo-bench fuzz --cases 1000 --seed 0 --json FILE
echo-bench voice --clips 24 --json FILE [--families audio_pitch,count]
echo-bench live-accuracy --clips 20 --json FILE [--families count,colour]
echo-bench speech-latency --asks 20 --json FILE
echo-bench freshness --service --clips 2 --delays 0.5,1,2 --json FILE
echo-bench capacity --service --streams 1,2,4,8 --seconds 20 --json FILE
Anything else goes to the library benchmarks (`echo-bench fidelity …`, `efficiency`, …).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from server.resources import config_file

SERVICE_BENCHMARKS = ("load", "soak", "faults", "fuzz", "flood", "voice", "live-accuracy", "speech-latency")
#: Library benchmarks that also run through a local server with `--service`.
SERVICE_VARIANTS = ("freshness", "capacity")


def is_service(argv: list[str]) -> bool:
    """`argv` names a service benchmark (or a library benchmark's `--service` variant)."""
    if not argv:
        return False
    return argv[0] in SERVICE_BENCHMARKS or (argv[0] in SERVICE_VARIANTS and "--service" in argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not is_service(argv):
        from echo_lab.bench.cli import main as library_main

        return library_main(argv)
    from echo_lab.bench.cli import write_report

    p = argparse.ArgumentParser(
        prog="echo-bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    ld = sub.add_parser("load", help="N WebRTC sessions on one server, N doubling until it saturates")
    ld.add_argument("--sessions", default="1,2,4,8,16", help="session counts, comma-separated")
    ld.add_argument("--seconds", type=float, default=20.0, help="measured seconds per step")
    ld.add_argument("--ask-every", type=float, default=4.0, help="seconds between one client's questions")
    sk = sub.add_parser("soak", help="a gateway and two workers under rolling sessions; RSS over time")
    sk.add_argument("--minutes", type=float, default=10.0)
    sk.add_argument("--concurrent", type=int, default=2, help="sessions at any time")
    sk.add_argument("--session-seconds", type=float, default=45.0, help="each session's life")
    sk.add_argument(
        "--cache-budget", type=int, default=96, help="AV tokens per session (small: eviction runs)"
    )
    fl = sub.add_parser("faults", help="kill a worker, restart Redis, drop and stall clients")
    fl.add_argument("--only", help="scenarios, comma-separated (default: all)")
    fz = sub.add_parser("fuzz", help="seeded hostile messages and media beside a healthy session")
    fz.add_argument("--config", default="demo")
    fz.add_argument("--cases", type=int, default=1000)
    fz.add_argument("--seed", type=int, default=0)
    fz.add_argument("--media-cases", type=int, default=40, help="odd streams (rates, layouts, sizes, clocks)")
    fd = sub.add_parser("flood", help="two sockets of junk beside a healthy session; /healthz p95")
    fd.add_argument("--seconds", type=float, default=20.0)
    fd.add_argument("--sockets", type=int, default=2)
    fd.add_argument("--server-root", default=".", help="the checkout whose server is flooded")
    vc = sub.add_parser("voice", help="spoken questions with server VAD: delays from end of speech, accuracy")
    vc.add_argument("--clips", type=int, default=20)
    vc.add_argument("--config", default="demo")
    vc.add_argument("--duration", type=float, default=None, help="clip length in s (default: as sampled)")
    vc.add_argument("--families", help="question families asked in turn, comma-separated (default: all)")
    acc = sub.add_parser("live-accuracy", help="stream test clips to a local server, measure answer accuracy")
    acc.add_argument("--config", default="demo")
    acc.add_argument("--clips", type=int, default=20)
    acc.add_argument("--concurrency", type=int, default=2)
    acc.add_argument("--families", help="only these question families, comma-separated (default: all)")
    lat = sub.add_parser("speech-latency", help="ask N questions, time each answer's text → its speech")
    lat.add_argument("--config", default="demo")
    lat.add_argument("--asks", type=int, default=20)
    fr = sub.add_parser("freshness", help="--service: accuracy and TTFT δ s after an event, over WebRTC")
    fr.add_argument("--service", action="store_true", required=True, help="through a local echo-server")
    fr.add_argument("--config", default="demo")
    fr.add_argument("--clips", type=int, default=2, help="clips, each streamed once per δ in real time")
    fr.add_argument("--delays", help="comma-separated δ in seconds (default 0.25,0.5,1,2,3)")
    fr.add_argument("--split", default="test")
    fr.add_argument("--duration", type=float, default=None, help="clip length in s (default: as sampled)")
    ca = sub.add_parser("capacity", help="--service: real-time WebRTC streams one server keeps up with")
    ca.add_argument("--service", action="store_true", required=True, help="through a local echo-server")
    ca.add_argument("--config", default="demo")
    ca.add_argument("--streams", default="1,2,4,8", help="stream counts to step through, comma-separated")
    ca.add_argument(
        "--seconds", type=float, default=20.0, help="measured seconds per step (after 6 s warm-up)"
    )
    ca.add_argument("--ask-every", type=float, default=4.0, help="seconds between one stream's questions")
    for sp in (ld, sk, fl, fz, fd, vc, acc, lat, fr, ca):
        sp.add_argument("--json", help="write the report here")
        sp.add_argument("--plot", help="write a figure here (load, soak)") if sp in (ld, sk) else None
    args = p.parse_args(argv)
    if args.command == "load":
        from .load import run_load
        from .plots import plot_load

        report = asyncio.run(
            run_load([int(n) for n in args.sessions.split(",")], args.seconds, args.ask_every)
        )
        if args.plot:
            plot_load(report, Path(args.plot))
    elif args.command == "soak":
        from .plots import plot_soak
        from .soak import run_soak

        report = asyncio.run(
            run_soak(args.minutes, args.concurrent, args.session_seconds, cache_budget=args.cache_budget)
        )
        if args.plot:
            plot_soak(report, Path(args.plot))
    elif args.command == "faults":
        from .faults import run_faults

        report = asyncio.run(run_faults(args.only.split(",") if args.only else None))
    elif args.command == "voice":
        from echo_lab.world.questions import FAMILIES

        from .voice import run_voice

        families = tuple(args.families.split(",")) if args.families else FAMILIES
        report = asyncio.run(run_voice(args.clips, config_file(args.config), args.duration, families))
    elif args.command == "live-accuracy":
        from ..live.live_accuracy import run_live_accuracy

        chosen = frozenset(args.families.split(",")) if args.families else None
        config = config_file(args.config)
        report = asyncio.run(run_live_accuracy(config, args.clips, args.concurrency, chosen))
    elif args.command == "speech-latency":
        from .speech_latency import run_speech_latency

        report = asyncio.run(run_speech_latency(config_file(args.config), args.asks))
    elif args.command == "freshness":
        from echo_lab.bench.freshness import DEFAULT_DELAYS

        from .freshness import run_service_freshness

        delays = tuple(float(d) for d in args.delays.split(",")) if args.delays else DEFAULT_DELAYS
        report = asyncio.run(
            run_service_freshness(
                clips=args.clips,
                delays=delays,
                split=args.split,
                duration_s=args.duration,
                config_path=config_file(args.config),
            )
        )
    elif args.command == "capacity":
        from .capacity import run_service_capacity

        report = asyncio.run(
            run_service_capacity(
                streams=tuple(int(n) for n in args.streams.split(",")),
                seconds=args.seconds,
                ask_every_s=args.ask_every,
                config_path=config_file(args.config),
            )
        )
    elif args.command == "flood":
        from .flood import run_flood

        report = asyncio.run(run_flood(Path(args.server_root).resolve(), args.seconds, args.sockets))
    else:
        from ..fuzz.fuzz import fuzz_local_server

        report = asyncio.run(
            fuzz_local_server(config_file(args.config), args.cases, args.seed, args.media_cases)
        )
    write_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
