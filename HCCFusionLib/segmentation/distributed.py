"""Data-parallel training under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on GPU).

The global batch is drawn the same way on every process (one seeded stream per step) and each process augments
and runs its own contiguous share. The loss is computed on the whole batch's outputs (the other processes'
shares gathered, without gradient), so with Dice's batch-wide statistics it is the single-process loss; each
process back-propagates through its share only, scaled by the world size, and DDP's gradient average then
equals the single-process gradient. Hence the same seed and global batch give the same loss curve on 1 or N
processes (within float tolerance).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["Ranks", "start", "stop", "share", "gather_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # this module started the process group (and stops it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def start(device: "str | None"):
    """(Ranks, torch.device): under torchrun (WORLD_SIZE > 1) join the process group, gloo on CPU or NCCL with
    one GPU per local rank; otherwise one process on `device` (default cuda when available)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if world <= 1:
        return Ranks(), torch.device(device or ("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"torchrun started {world} processes but this node has {torch.cuda.device_count()} "
                             "GPUs: give --nproc_per_node at most the GPU count, or train on the CPU (--device cpu).")
        torch.cuda.set_device(local_rank)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if cuda else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), local_rank, owned)
    log.info("DDP training: rank %d of %d (%s)", ranks.rank, ranks.world, dist.get_backend())
    return ranks, torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def stop(ranks: Ranks, wait: bool = True) -> None:
    """Leave the process group started by `start`; `wait`: first wait for every process (not after an error,
    when the others may never arrive: torchrun then stops them)."""
    if ranks.owned:
        import torch.distributed as dist

        if wait:
            dist.barrier()
        dist.destroy_process_group()


def share(ranks: Ranks, batch: int) -> range:
    """The batch items this process augments and runs: a contiguous 1/world of the global batch."""
    if batch % ranks.world:
        raise InputError(f"The global batch of {batch} patches does not split over {ranks.world} processes: set the "
                         "plans' batch_size to a multiple of --nproc_per_node.")
    n = batch // ranks.world
    return range(ranks.rank * n, (ranks.rank + 1) * n)


def gather_batch(ranks: Ranks, local, keep_grad: bool):
    """The whole batch from every process's share (dim 0, rank order); this process's share keeps its autograd
    graph when `keep_grad`, the others' are plain values."""
    if ranks.world == 1:
        return local
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(local) for _ in range(ranks.world)]
    dist.all_gather(parts, local.detach().contiguous())
    if keep_grad:
        parts[ranks.rank] = local
    return torch.cat(parts)
