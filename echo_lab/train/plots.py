"""Training curves from an echo-train log (train_log.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_training_log(log_path: str | Path, png_path: str | Path) -> None:
    """Loss and answer accuracy per logged step, one colour per stage; with stage 2, the audio
    share of the tokens CS2 kept (a flat line at 0 or 1 is a sieve that dropped a modality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    shared = [r for r in rows if "kept_audio_share" in r]
    fig, axes = plt.subplots(1, 3 if shared else 2, figsize=(16 if shared else 11, 4))
    ax_loss, ax_acc = axes[0], axes[1]
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
    if shared:
        ax_share = axes[2]
        ax_share.plot([r["step"] for r in shared], [r["kept_audio_share"] for r in shared], color="C1")
        ax_share.set_ylim(0, 1)
        ax_share.set_xlabel("stage-2 step")
        ax_share.set_ylabel("audio share of the tokens CS2 kept")
        ax_share.grid(alpha=0.3)
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
