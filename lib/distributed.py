"""Data parallelism with ``torch.distributed``: which process this is, and how work is split.

Two ways a group of processes comes to exist, one code path after that:

- ``torchrun`` (``python -m torch.distributed.run``, one host or several with ``--nnodes`` /
  ``--rdzv-endpoint``; what Slurm and Kubernetes operators start) sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT`` in each process: :func:`from_env` joins the group;
- :func:`spawn` starts ``n`` processes on this host (a MONAI Label train request with ``multi_gpu``),
  on a free loopback port, and each joins the group the same way.

Backend NCCL when the processes have CUDA, gloo otherwise. Process ``r`` of ``n`` uses ``cuda:LOCAL_RANK``
(or the ``r``-th of the GPUs asked for) and its own CPU threads.

How work is split (:class:`Ranks`):

- training (:meth:`Ranks.split_batch`), as the top-level setting ``train_batch`` says:

  - ``per_process`` (the default; DDP's and MONAI Label's convention): every rank draws its own batch of
    the configured size from its own random stream, so a step of ``n`` processes trains on ``n`` batches
    (``n`` times the patches per second at the same seconds per step). The learning rate is not scaled;
  - ``global``: every rank draws the same batch from the same seed and computes the slice
    ``[rank::world_size]`` of it; DDP averages the gradients, so a step of ``n`` processes is the step of
    one process on the whole batch (up to the order of float sums): to reproduce a one-process run;

- pre-labeling: rank 0 lists the studies still to do and every rank takes ``[rank::world_size]`` of
  that list (:meth:`Ranks.shard`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lib.threads import usable_cpus
from lib.workflow.server import free_port

logger = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_MODES = ("per_process", "global")


@dataclass(frozen=True)
class BatchSplit:
    """How one process takes part in a training step on batches of the configured size: it draws a batch from a
    random stream seeded with :meth:`seed`, computes ``batch[part]``, and the step trains on ``per_step`` items
    over all processes."""

    part: slice
    per_step: int
    rank: int | None = None  # None: every process draws from the same stream (mode ``global``)

    def seed(self, seed: int) -> int:
        """The seed of this process's random stream for a base ``seed`` (the same on every rank in mode
        ``global``; one independent stream per rank in mode ``per_process``)."""
        if self.rank is None:
            return int(seed)
        return int(np.random.SeedSequence([int(seed), self.rank]).generate_state(1)[0])


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: ``rank`` of ``world_size``; ``device`` the one it computes on."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, publishes models and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def split_batch(self, batch: int, mode: str = "per_process") -> BatchSplit:
        """This rank's share of a training step on batches of ``batch`` items (``mode``: the module's
        docstring). One process: the whole batch, whatever the mode.

        Raises:
            ValueError: for an unknown mode, or in mode ``global`` when ``batch`` is smaller than the world
                size (a rank would have nothing to do).
        """
        if mode not in BATCH_MODES:
            raise ValueError(f"unknown train_batch '{mode}'; valid: {', '.join(BATCH_MODES)}")
        if not self.distributed:
            return BatchSplit(slice(None), batch)
        if mode == "per_process":
            return BatchSplit(slice(None), batch * self.world_size, rank=self.rank)
        if batch < self.world_size:
            raise ValueError(f"train_batch 'global': a batch of {batch} cannot be split over {self.world_size} "
                             f"processes; set the batch size to at least {self.world_size}")
        return BatchSplit(slice(self.rank, None, self.world_size), batch)

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items of ``items`` (which must be the same list, in the same order, on every rank)."""
        return list(items[self.rank :: self.world_size])

    def wrap(self, module: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed (its
        construction broadcasts rank 0's weights), else itself."""
        if not self.distributed:
            return module
        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, **kwargs)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over the ranks of each value (every rank gets it)."""
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (every rank gets the list)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def backend(cuda: bool) -> str:
    return "nccl" if cuda and dist.is_nccl_available() else "gloo"


def from_env(want_cuda: bool = True) -> Ranks:
    """The group the environment describes (``torchrun``'s variables), joined; one process without them.

    ``want_cuda`` False: compute on the CPU even where CUDA is present.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = want_cuda and torch.cuda.is_available()
    if cuda:
        gpus = [int(g) for g in os.environ.get("ONESHOT_GPUS", "").split(",") if g.strip()]
        index = gpus[local] if gpus else local % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    else:
        device = "cpu"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend(cuda), rank=rank, world_size=world)
        logger.info(f"rank {rank}/{world} joined the group ({dist.get_backend()}, {device})")
    return Ranks(rank, world, device)


def leave() -> None:
    """Leave the process group (at the end of a distributed run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _worker(local_rank: int, world_size: int, port: int, gpus: Sequence[int], threads: int,
            fn: Callable[..., Any], args: tuple) -> None:
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][rank {local_rank}][%(levelname)s](%(name)s) %(message)s",
                        force=True)
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ONESHOT_GPUS=",".join(map(str, gpus)))
    if threads:
        torch.set_num_threads(threads)
    ranks = from_env(want_cuda=bool(gpus))
    try:
        fn(ranks, *args)
    finally:
        leave()


def spawn(fn: Callable[..., Any], nprocs: int, args: tuple = (), gpus: Sequence[int] = (),
          cpu_threads: int | None = None) -> None:
    """Run ``fn(ranks, *args)`` in ``nprocs`` new processes on this host, one group on a free loopback port.

    ``gpus``: the CUDA devices, one per process (``nprocs`` of them), NCCL; empty: CPU processes, gloo, which
    share ``cpu_threads`` torch threads (None: every core), each ``cpu_threads // nprocs`` of them (at least one).
    ``fn`` and ``args`` must pickle (the processes are spawned, not forked). Raises when a process fails
    (:func:`torch.multiprocessing.spawn`).
    """
    if gpus and len(gpus) != nprocs:
        raise ValueError(f"{nprocs} processes need {nprocs} GPUs, got {list(gpus)}")
    if not gpus and os.path.isdir("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one host: gloo talks over loopback only
    threads = 0 if gpus else max(1, (cpu_threads or usable_cpus()) // nprocs)
    mp.spawn(_worker, args=(nprocs, free_port(), list(gpus), threads, fn, args), nprocs=nprocs, join=True)
