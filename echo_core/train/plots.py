"""Training curves from an echo-train log (train_log.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_log(log_path: str | Path, png_path: str | Path) -> None:
    """Loss and answer accuracy per logged step, one colour per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for stage in ("stage1", "stage2"):
        part = [r for r in rows if r["stage"] == stage]
        if not part:
            continue
        steps = [offset + r["step"] for r in part]
        ax_loss.plot(steps, [r["loss"] for r in part], label=stage)
        ax_acc.plot(steps, [r["acc"] for r in part], label=stage)
        offset = steps[-1]
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("answer loss")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("first-token accuracy (training batches)")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
