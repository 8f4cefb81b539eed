"""Two stage-1 runs of one config, the shipped one and one on an AVX2 machine: where they part.

Run from the repository root: python benchmarks/results/experiments/stage2_second_thinker/compare_stage1.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
SHIPPED = Path("echo_core/models/echo-tiny/train_log.jsonl")


def stage1_rows(path: Path) -> list[dict[str, float]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["stage"] == "stage1"]


def window_mean(rows: list[dict[str, float]], key: str, start: int, width: int) -> float:
    part = rows[start : start + width]
    return sum(r[key] for r in part) / len(part)


def main() -> None:
    shipped, second = stage1_rows(SHIPPED), stage1_rows(HERE / "stage1_log.jsonl")
    first = next(a["step"] for a, b in zip(shipped, second, strict=True) if a["loss"] != b["loss"])
    print(f"logged steps: {len(shipped)}; first logged step whose loss differs: {first}")
    print("steps        loss shipped / second   accuracy shipped / second")
    for start in range(0, len(shipped), 20):
        steps = f"{shipped[start]['step']}-{shipped[min(start + 19, len(shipped) - 1)]['step']}"
        loss = [window_mean(rows, "loss", start, 20) for rows in (shipped, second)]
        acc = [window_mean(rows, "acc", start, 20) for rows in (shipped, second)]
        print(f"{steps:>10}   {loss[0]:.3f} / {loss[1]:.3f}          {acc[0]:.3f} / {acc[1]:.3f}")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for rows, label in ((shipped, "shipped run"), (second, "rerun on an AVX2 machine")):
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], label=label)
        ax_acc.plot(steps, [r["acc"] for r in rows], label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("answer loss")
    ax_acc.set_ylabel("first-token accuracy (training batches)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("stage-1 step")
        ax.axvline(first, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("echo-tiny stage 1, one config, two machines")
    fig.tight_layout()
    fig.savefig(HERE / "stage1_two_machines.png", dpi=100)


if __name__ == "__main__":
    main()
