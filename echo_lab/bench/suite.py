"""The GPU run (`scripts/gpu_bench.sh`): efficiency and capacity at Qwen2.5-Omni 3B and 7B dimensions.

One random-weight thinker per preset (bf16, 448² frames at 2 fps + audio) is built once and
measured by `echo-bench efficiency` (60-s and 600-s windows, keep 0.1; full, full_kv, sieved,
sieved_kv) and `echo-bench capacity` (real-time streams per device). Each preset's reports go
to `<out>/efficiency-<preset>.json` and `<out>/capacity-<preset>.json`, and one short markdown
table to `<out>/summary.md`. The dry run does the same with the tiny preset, small frames and
a few seconds, on the CPU, so that CI keeps the script working.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .capacity import run_capacity
from .efficiency import random_model, run_efficiency, summary

log = logging.getLogger(__name__)

FULL = {
    "presets": ("qwen2.5-omni-3b", "qwen2.5-omni-7b"),
    "device": "cuda",
    "dtype": "bfloat16",
    "image": 448,
    "windows": (60.0, 600.0),
    "keeps": (0.1,),
    "full_max_window_s": 60.0,
    "ingest_seconds": 10.0,
    "repeats": 5,
    "streams": (1, 16, 32, 64, 128),
    "capacity_seconds": 12.0,
    "ask_every_s": 5.0,
}
DRY = {
    "presets": ("tiny",),
    "device": "cpu",
    "dtype": "float32",
    "image": 56,
    "windows": (4.0, 8.0),
    "keeps": (0.1,),
    "full_max_window_s": 4.0,
    "ingest_seconds": 2.0,
    "repeats": 1,
    "streams": (1, 2),
    "capacity_seconds": 2.0,
    "ask_every_s": 0.5,
}


def markdown(device: str, reports: dict[str, tuple[dict[str, object], dict[str, object]]]) -> str:
    """One table of efficiency rows and one line of capacity per preset."""
    lines = [
        f"# GPU bench on {device}",
        "",
        "| preset | window s | mode | keep | TTFT ms | floor ms | TTFT/floor | cache MB | streams/GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, (eff, _) in reports.items():
        for r in eff["rows"]:  # type: ignore[attr-defined]
            lines.append(
                f"| {preset} | {r['window_s']:g} | {r['mode']} | {r['keep']:g} | {r['ttft_ms']:.1f} "
                f"| {r['floor_ms']:.2f} | {r['ttft_over_floor']:.2f} | {r['cache_bytes'] / 1e6:.1f} "
                f"| {r['streams_per_gb']:.2f} |"
            )
    lines += [
        "",
        "| preset | streams kept up | first behind | lag p95 s (1 stream) | profile there |",
        "|---|---|---|---|---|",
    ]
    for preset, (_, cap) in reports.items():
        shares = cap["profile"].items()  # type: ignore[attr-defined]
        profile = ", ".join(f"{k} {v:.0%}" for k, v in shares if v >= 0.01)
        lag = cap["baseline_lag_p95_s"]
        lines.append(f"| {preset} | {cap['max_streams']} | {cap['first_behind']} | {lag} | {profile} |")
    return "\n".join(lines) + "\n"


def run_suite(out: Path, *, dry_run: bool = False) -> dict[str, object]:
    """Run every preset of the plan; write the JSON reports and summary.md under `out`."""
    plan = DRY if dry_run else FULL
    if plan["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: CUDA is not available (a CUDA build of torch and a GPU are needed)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reports: dict[str, tuple[dict[str, object], dict[str, object]]] = {}
    for preset in plan["presets"]:  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        model = random_model(preset, device=plan["device"], dtype=plan["dtype"], image=plan["image"])  # type: ignore[arg-type]
        log.info("%s built in %.1f s", preset, time.perf_counter() - t0)
        eff = run_efficiency(
            preset,
            device=str(plan["device"]),
            dtype=str(plan["dtype"]),
            image=int(plan["image"]),  # type: ignore[call-overload]
            windows=plan["windows"],  # type: ignore[arg-type]
            keeps=plan["keeps"],  # type: ignore[arg-type]
            full_max_window_s=float(plan["full_max_window_s"]),  # type: ignore[arg-type]
            ingest_seconds=float(plan["ingest_seconds"]),  # type: ignore[arg-type]
            repeats=int(plan["repeats"]),  # type: ignore[call-overload]
            progress=False,
            model=model,
        )
        eff["ratios"] = summary(eff)
        (out / f"efficiency-{preset}.json").write_text(json.dumps(eff, indent=2) + "\n")
        cap = run_capacity(
            model,
            preset=preset,
            streams=plan["streams"],  # type: ignore[arg-type]
            seconds=float(plan["capacity_seconds"]),  # type: ignore[arg-type]
            image=int(plan["image"]),  # type: ignore[call-overload]
            ask_every_s=float(plan["ask_every_s"]),  # type: ignore[arg-type]
        )
        (out / f"capacity-{preset}.json").write_text(json.dumps(cap, indent=2) + "\n")
        reports[preset] = (eff, cap)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.info("%s done at %.1f s", preset, time.perf_counter() - started)
    device = str(next(iter(reports.values()))[0]["device"])
    (out / "summary.md").write_text(markdown(device, reports))
    return {"device": device, "seconds": round(time.perf_counter() - started, 1), "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_bench", description=__doc__)
    p.add_argument("out", help="folder for the JSON reports and summary.md")
    p.add_argument("--dry-run", action="store_true", help="tiny preset on the CPU, a few seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_suite(Path(args.out), dry_run=args.dry_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
