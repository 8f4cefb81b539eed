"""`echo-bench`: Echo's benchmarks, each writing a JSON report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from echo_core.config import KV_DTYPES, StreamConfig
from echo_core.errors import EchoError

from ..world.spec import SPLITS

TOLERANCE = 1e-5


def write_report(report: dict[str, object], path: str | None) -> None:
    """Print a JSON report and write it to `path` (parents created) when given."""
    text = json.dumps(report, indent=2)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
    print(text)


def cmd_equivalence(args: argparse.Namespace) -> int:
    from .equivalence import run_equivalence

    report = run_equivalence(args.preset, args.seed)
    write_report(report, args.json)
    worst = max(float(str(report["max_abs_logit_diff"])), float(str(report["max_abs_logit_diff_sync_zero"])))
    if worst > TOLERANCE:
        print(f"FAIL: max |Δlogit| {worst:.3g} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    print(f"OK: max |Δlogit| {worst:.3g} ≤ {TOLERANCE:g}", file=sys.stderr)
    return 0


def _csv(text: str | None, kind: type = str) -> list | None:  # type: ignore[type-arg]
    return None if text is None else [kind(x) for x in text.split(",") if x]


def _seconds_or_off(text: str) -> float | None:
    """A `--tail-warm` value: seconds > 0, or "off" (None)."""
    if text == "off":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0 or off, got {text!r}")
    return seconds


def cmd_fidelity(args: argparse.Namespace) -> int:
    from echo_core.model.backend import OmniBackend
    from echo_core.models import default_model_dir
    from echo_core.sieve import CS2

    from .fidelity import markdown_table, plot_fidelity, run_fidelity

    directory = default_model_dir(args.model)
    backend = OmniBackend.load(directory, device=args.device, dtype=args.dtype)
    cs2 = CS2.load_or_init(backend.lm, directory, n_layers=args.refiner_layers)
    if args.prior_weight is not None or args.prior_novelty is not None:
        if not cs2.trained:
            print("echo-bench: --prior-weight and --prior-novelty need a trained CS2 head", file=sys.stderr)
            return 2
        cs2.set_prior(args.prior_weight, args.prior_novelty)
    options = dict(
        split=args.split,
        limit=args.limit,
        methods=_csv(args.methods),
        keeps=_csv(args.keep, float),
        ropes=_csv(args.rope),
        model_name="echo-tiny" if args.model is None else str(args.model),
    )
    if args.streaming and args.questions != "typed":
        print("echo-bench: --streaming asks typed questions only", file=sys.stderr)
        return 2
    if args.kv_dtype is not None and not args.streaming:
        print("echo-bench: --kv-dtype needs --streaming (offline answers keep no KV store)", file=sys.stderr)
        return 2
    if args.streaming:
        from echo_core.config import SieveConfig
        from echo_core.stream.runtime import StreamModel

        from .fidelity_stream import run_streaming_fidelity

        model = StreamModel(backend, cs2, SieveConfig(refiner_layers=args.refiner_layers))
        report = run_streaming_fidelity(
            model,
            cache_seconds=args.cache_seconds,
            ingest_factor=args.ingest_factor,
            kv_dtype=args.kv_dtype,
            **options,
        )  # type: ignore[arg-type]
    else:
        report = run_fidelity(backend, cs2, questions=args.questions, **options)  # type: ignore[arg-type]
    report["cs2_scoring"] = "head" if cs2.trained else "attention"
    report["cs2_prior_weight"] = cs2.prior_weight
    report["cs2_prior_novelty"] = cs2.prior_novelty
    write_report(report, args.json)
    if args.plot:
        plot_fidelity(report, args.plot)
    print(markdown_table(report), file=sys.stderr)
    return 0


def cmd_efficiency(args: argparse.Namespace) -> int:
    from .efficiency import DEFAULT_KEEPS, DEFAULT_WINDOWS, run_efficiency, summary

    report = run_efficiency(
        args.preset,
        device=args.device,
        dtype=args.dtype,
        kv_dtype=args.kv_dtype,
        image=args.image,
        windows=tuple(_csv(args.windows, float) or DEFAULT_WINDOWS),
        keeps=tuple(_csv(args.keep, float) or DEFAULT_KEEPS),
        full_max_window_s=args.full_max_window,
        ingest_seconds=args.ingest_seconds,
        repeats=args.repeats,
    )
    report["ratios"] = summary(report)
    write_report(report, args.json)
    return 0


def cmd_freshness(args: argparse.Namespace) -> int:
    from echo_core.config import EchoConfig
    from echo_core.stream.runtime import StreamModel

    from .freshness import DEFAULT_DELAYS, run_freshness

    config = EchoConfig()
    model_config = config.model if args.model is None else replace(config.model, directory=args.model)
    model = StreamModel.load(model_config, config.sieve)
    report = run_freshness(
        model,
        split=args.split,
        limit=args.limit,
        delays=tuple(_csv(args.delays, float) or DEFAULT_DELAYS),
        config=replace(config.stream, tail_keep=args.tail_keep),
        model_name=args.model or "echo-tiny",
    )
    write_report(report, args.json)
    return 0


def cmd_capacity(args: argparse.Namespace) -> int:
    from .capacity import run_capacity
    from .efficiency import random_model

    if args.preset == "echo-tiny":
        from echo_core.config import EchoConfig
        from echo_core.stream.runtime import StreamModel

        config = EchoConfig()
        model = StreamModel.load(replace(config.model, device=args.device, dtype=args.dtype), config.sieve)
    else:
        model = random_model(args.preset, device=args.device, dtype=args.dtype, image=args.image)
    report = run_capacity(
        model,
        preset=args.preset,
        streams=tuple(_csv(args.streams, int) or (1, 2, 4, 8, 16, 32)),
        seconds=args.seconds,
        image=args.image,
        keep=args.keep,
        ask_every_s=args.ask_every,
        max_batch=args.max_batch,
        tail_warm_s=args.tail_warm,
    )
    write_report(report, args.json)
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

    fi = sub.add_parser("fidelity", help="accuracy vs kept tokens for every sieve on the synthetic world")
    fi.add_argument("--split", default="test", choices=list(SPLITS))
    fi.add_argument("--limit", type=int, default=100, help="number of clips (default 100)")
    fi.add_argument("--methods", help="comma-separated sieve methods (default: all)")
    fi.add_argument("--keep", help="comma-separated keep ratios (default 1.0,0.5,0.2,0.1,0.05)")
    fi.add_argument("--rope", help="comma-separated rope modes (default: all that apply)")
    fi.add_argument("--model", help="thinker checkpoint directory (default: bundled echo-tiny)")
    fi.add_argument("--device", default="cpu")
    fi.add_argument("--dtype", default="float32")
    fi.add_argument("--refiner-layers", type=int, default=4, help="refiner depth when CS2 is not trained")
    fi.add_argument(
        "--prior-weight",
        type=float,
        default=None,
        help="weight of the encoder-salience prior added to a trained CS2 head (default: cs2.json's)",
    )
    fi.add_argument(
        "--prior-novelty",
        default=None,
        help="that prior's novelty cue, context or previous (default: cs2.json's)",
    )
    fi.add_argument("--streaming", action="store_true", help="answer through the live engine, chunk by chunk")
    fi.add_argument(
        "--cache-seconds", type=float, default=16.0, help="streaming: cache budget in seconds of kept tokens"
    )
    fi.add_argument(
        "--ingest-factor",
        type=float,
        default=1.0,
        help="streaming: ingest keeps F × keep, the question re-sieves to keep (default 1: no re-sieve)",
    )
    fi.add_argument(
        "--kv-dtype",
        choices=KV_DTYPES,
        help="streaming: element type of the sessions' cached keys/values (default: the model's)",
    )
    fi.add_argument(
        "--questions",
        default="typed",
        choices=["typed", "spoken", "both"],
        help="ask typed, spoken (held-out voices outside train) or both on the same clips (default typed)",
    )
    fi.add_argument("--plot", help="write the accuracy-vs-keep plot (PNG) here")
    fi.add_argument("--json", help="write the report here")
    fi.set_defaults(func=cmd_fidelity)

    ef = sub.add_parser(
        "efficiency", help="ask latency vs the memory floor, cache size: full, full_kv, sieved, sieved_kv"
    )
    ef.add_argument(
        "--preset", default="cpu-small", help="model dimensions (random weights; default cpu-small)"
    )
    ef.add_argument("--device", default="cpu")
    ef.add_argument("--dtype", default="float32")
    ef.add_argument(
        "--kv-dtype",
        choices=KV_DTYPES,
        help="element type of the cached keys/values (default: --dtype; stream.kv_dtype)",
    )
    ef.add_argument("--image", type=int, default=224, help="video frame side in pixels (default 224)")
    ef.add_argument("--windows", help="comma-separated windows in seconds (default 30,60,120,600)")
    ef.add_argument("--keep", help="comma-separated keep ratios (default 0.2,0.1,0.05)")
    ef.add_argument(
        "--full-max-window", type=float, default=120.0, help="longest window for full/sieved prefill"
    )
    ef.add_argument(
        "--ingest-seconds", type=float, default=20.0, help="stream seconds of real ingest to time"
    )
    ef.add_argument("--repeats", type=int, default=3, help="asks per row (median TTFT)")
    ef.add_argument("--json", help="write the report here")
    ef.set_defaults(func=cmd_efficiency)

    ca = sub.add_parser(
        "capacity",
        help="real-time streams one engine keeps up with (ingest lag, TTFT; --service: over WebRTC)",
    )
    ca.add_argument("--preset", default="echo-tiny", help="echo-tiny (bundled) or a random-weight preset")
    ca.add_argument("--device", default="cpu")
    ca.add_argument("--dtype", default="float32")
    ca.add_argument("--image", type=int, default=224, help="frame side in pixels (default 224)")
    ca.add_argument("--streams", help="stream counts to step through (default 1,2,4,8,16,32)")
    ca.add_argument("--seconds", type=float, default=20.0, help="real-time seconds per step (default 20)")
    ca.add_argument("--keep", type=float, default=0.1, help="ingest keep (default 0.1)")
    ca.add_argument("--ask-every", type=float, default=5.0, help="seconds between one stream's questions")
    ca.add_argument("--max-batch", type=int, default=16, help="chunks per batched ingest step")
    ca.add_argument(
        "--tail-warm",
        type=_seconds_or_off,
        default=StreamConfig.tail_warm_s,
        help="stream.tail_warm_s: seconds, or off (tails only encoded at ask time)",
    )
    ca.add_argument("--json", help="write the report here")
    ca.set_defaults(func=cmd_capacity)

    fr = sub.add_parser(
        "freshness",
        help="accuracy and TTFT δ seconds after an event appears, live path (--service: over WebRTC)",
    )
    fr.add_argument("--split", default="test", choices=list(SPLITS))
    fr.add_argument("--limit", type=int, default=20, help="number of clips (default 20)")
    fr.add_argument("--delays", help="comma-separated δ in seconds (default 0.25,0.5,1,2,3)")
    fr.add_argument("--model", help="thinker checkpoint directory (default: bundled echo-tiny)")
    fr.add_argument("--tail-keep", type=float, help="share of the tail's tokens kept (default: ingest keep)")
    fr.add_argument("--json", help="write the report here")
    fr.set_defaults(func=cmd_freshness)
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
