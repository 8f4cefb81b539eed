"""Which machine trained a checkpoint: what decides whether a rerun can match it to the bit.

Training is bit-reproducible only on the same kernels: PyTorch picks its CPU kernels by the
instruction set it finds (AVX-512 or AVX2, say), their rounding differs in the last bits, and
over thousands of steps such differences grow into a different model (docs/experiments.md).
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import transformers


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_record() -> dict[str, object]:
    """Torch and transformers versions, the CPU kernels' instruction set, CPU, threads, Python."""
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
