"""What every benchmark prints: Markdown tables and one line describing the machine it ran on."""

from __future__ import annotations

import os
import platform
from typing import Any, Sequence


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` decimals, anything else as text."""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A Markdown table (floats with ``digits`` decimals)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v, digits) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    """``x86_64, 2 cores, 2 torch threads, no GPU, torch 2.14.1``: the line above a benchmark's tables."""
    import torch

    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"{gpu}, torch {torch.__version__}")
