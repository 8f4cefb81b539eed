"""`echo-train [--config NAME|FILE] [--out DIR] [key=value ...]` (default: the packaged echo_tiny_train)."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from echo_core.errors import EchoError
from server.resources import config_file

from .config import load_train_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="echo-train", description="Train echo-tiny on the synthetic world.")
    p.add_argument(
        "--config", default="echo_tiny_train", help="training config: a YAML file or a packaged config's name"
    )
    p.add_argument("--out", help="output directory (default: the config's out_dir)")
    p.add_argument(
        "--stage1-dir",
        help="keep the stage-1 thinker here; if the directory already holds one, stage 1 is skipped",
    )
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. stage1.steps=2")
    args = p.parse_intermixed_args(argv)  # overrides may come before or after --out
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_train_config(config_file(args.config), args.overrides)
        from dataclasses import asdict

        from .trainer import Trainer

        out = Path(args.out or config.out_dir)
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as work:
            stage1_dir = Path(args.stage1_dir) if args.stage1_dir else None
            trainer = Trainer(config, Path(work), stage1_dir)
            trainer.stage1()
            cs2 = trainer.stage2() if config.stage2.steps > 0 else None
            trainer.save(cs2, out, yaml.safe_dump(asdict(config), sort_keys=False))
        print(f"echo-train: wrote {out} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 0
    except EchoError as exc:
        print(f"echo-train: {exc.code}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
