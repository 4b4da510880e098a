"""How many CPU threads torch may use in a background job (training, batch pre-labeling) on a CPU host.

The server computes an annotator's interactive requests (GeoS, corrections) in its own process while a job
trains or pre-labels in another. torch's default is one thread per core, and its threads meet at the end of
every operation: when one of them shares its core with the server's work, each operation waits for it. On the
2-core development machine, with every core PRNet's training steps halve while one client sends requests back
to back (1.32 → 0.58–0.69 steps/s), and each request takes 1.2–1.5× as long; with one core left to the server
neither side notices the other, and PRNet trains at 0.85 steps/s (``docs/benchmarks.md``, "Interactive requests
while a job trains"). So by default a job on a CPU host leaves one core to the server (``job_threads: auto``).

The setting (configuration key ``job_threads``): ``auto`` = the usable cores − 1 (at least 1); a positive
integer = that many; ``0`` = torch's own default (one per core). On a CUDA device the job's torch threads are
left as they are (the GPU does the work).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from lib.config import ConfigError


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_job_threads(setting: int | str) -> int | str:
    """``setting`` if it is ``auto`` or an integer ≥ 0; else :class:`~lib.config.ConfigError` saying what is allowed."""
    if setting == "auto" or (isinstance(setting, int) and not isinstance(setting, bool) and setting >= 0):
        return setting
    raise ConfigError(f"job_threads must be 'auto', 0 (torch's default: one per core) or a positive number of "
                      f"threads, got {setting!r}")


def job_threads(setting: int | str, device: str) -> int | None:
    """The torch threads of a job on ``device`` (``cpu`` or ``cuda[:i]``) under ``setting`` (see the module's
    docstring); None: leave torch's own default."""
    check_job_threads(setting)
    if str(device).startswith("cuda") or setting == 0:
        return None
    if setting == "auto":
        return max(1, usable_cpus() - 1)
    return int(setting)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: unchanged), then restore the former count
    (a job run in the server's own process must not change the server's)."""
    if threads is None:
        yield
        return
    import torch  # here: lib.geos counts the cores with this module and needs no torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
