"""Data-parallel training under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on GPU), shared by the
segmentation trainer and the deep fusion estimator.

The global batch is drawn the same way on every process (one seeded stream) and each process runs its own
contiguous share (`share`). The loss is computed on the whole batch's outputs (the other processes' shares
gathered without gradient, `gather_batch`), so batch-wide losses (Dice, Cox) are the single-process loss; each
process back-propagates through its share only, scaled by the world size, and DDP's gradient average (or
`average_gradients`) then equals the single-process gradient. Batch normalisation uses the whole batch's
statistics (`sync_batch_norm`, on CPU too). Hence the same seed and global batch give the same loss curve on 1
or N processes (within float tolerance). Checkpoints (`save_checkpoint`, `read_checkpoint`, `restore`): one
safetensors file of tensors and a JSON state that names it, written by rank 0 only, so a crash at any moment
leaves the previous checkpoint whole.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .files import atomic_write

__all__ = ["Ranks", "start", "stop", "session", "barrier", "share", "split", "gather_batch", "average_gradients",
           "sync_batch_norm", "save_checkpoint", "read_checkpoint", "restore"]

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


@contextlib.contextmanager
def session(device: "str | None"):
    """`start` for the block, yielding (Ranks, torch.device), then `stop` (waiting for the others only when the
    block succeeded)."""
    ranks, used = start(device)
    try:
        yield ranks, used
    except BaseException:
        stop(ranks, wait=False)
        raise
    stop(ranks)


def barrier(ranks: Ranks) -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint)."""
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def split(batch: int, world: int) -> list:
    """Items per process of a global batch: contiguous, as even as possible (the first ones take the rest)."""
    return [batch // world + (r < batch % world) for r in range(world)]


def share(ranks: Ranks, batch: int, even: bool = True) -> range:
    """The batch items this process augments and runs: a contiguous 1/world of the global batch (`even`: the
    batch must split exactly; otherwise the `split` sizes, possibly none)."""
    if even and batch % ranks.world:
        raise InputError(f"The global batch of {batch} patches does not split over {ranks.world} processes: set the "
                         "plans' batch_size to a multiple of --nproc_per_node.")
    sizes = split(batch, ranks.world)
    first = sum(sizes[:ranks.rank])
    return range(first, first + sizes[ranks.rank])


def gather_batch(ranks: Ranks, local, keep_grad: bool, sizes: "list | None" = None):
    """The whole batch from every process's share (dim 0, rank order; `sizes`: each process's item count when
    they differ); this process's share keeps its autograd graph when `keep_grad`, the others' are plain values."""
    if ranks.world == 1:
        return local
    import torch
    import torch.distributed as dist

    sizes = sizes or [len(local)] * ranks.world
    padded = local.detach().contiguous()
    if len(padded) < max(sizes):
        padded = torch.cat([padded, padded.new_zeros((max(sizes) - len(padded), *padded.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.all_gather(parts, padded)
    parts = [part[:n] for part, n in zip(parts, sizes)]
    if keep_grad:
        parts[ranks.rank] = local
    return torch.cat(parts)


def average_gradients(net, ranks: Ranks) -> None:
    """Average the parameters' gradients over the processes (one all-reduce of them all, after backward; a
    parameter without a gradient counts as zero): DDP's reduction, for networks whose backward runs collectives
    of its own (`sync_batch_norm`), which DDP's asynchronous bucket reductions could interleave differently on
    different processes."""
    if ranks.world == 1:
        return
    import torch
    import torch.distributed as dist

    params = [p for p in net.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ranks.world
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


# ------------------------------------------------------------------ batch normalisation over the global batch
@functools.lru_cache(maxsize=None)
def _all_reduce_function():
    import torch
    import torch.distributed as dist

    class AllReduce(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x = x.clone()
            dist.all_reduce(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clone()
            dist.all_reduce(grad)
            return grad

    return AllReduce


def _all_reduce(tensor):
    """Sum over the processes, differentiable (the gradient of a sum is summed back over the processes)."""
    return _all_reduce_function().apply(tensor)


def _global_batch_norm(module, x):
    """Training-mode batch norm of `x` with the mean and variance of the whole global batch (every process's
    share; two all-reduces, mean first, so the variance is as accurate as one process's); running stats as torch."""
    import torch

    dims = [0, *range(2, x.dim())]
    local = torch.cat([x.sum(dim=dims), x.new_tensor([x.numel() / max(x.shape[1], 1)])])
    total = _all_reduce(local)
    count = float(total[-1].detach())
    shape = [1, -1] + [1] * (x.dim() - 2)
    centred = x - (total[:-1] / count).view(shape)
    var = _all_reduce((centred * centred).sum(dim=dims)) / count
    y = centred * torch.rsqrt(var + module.eps).view(shape)
    if module.affine:
        y = y * module.weight.view(shape) + module.bias.view(shape)
    if module.track_running_stats:
        with torch.no_grad():
            module.num_batches_tracked.add_(1)
            m = module.momentum if module.momentum is not None else 1.0 / float(module.num_batches_tracked)
            module.running_mean.mul_(1 - m).add_(total[:-1].detach() / count, alpha=m)
            module.running_var.mul_(1 - m).add_(var.detach() * count / max(count - 1, 1), alpha=m)
    return y


def sync_batch_norm(net, ranks: Ranks):
    """`net` with every BatchNorm layer normalising training batches by the whole global batch's statistics
    (torch's SyncBatchNorm needs a GPU; this works with gloo on CPU and NCCL alike). The layers keep their class,
    parameters and state-dict keys; one process (or eval mode) is plain batch norm."""
    if ranks.world == 1:
        return net
    from torch import nn

    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            plain = module.forward

            def forward(x, module=module, plain=plain):
                return _global_batch_norm(module, x) if module.training else plain(x)

            module.forward = forward
    return net


# ------------------------------------------------------------------ checkpoints (safetensors + JSON)
STATE_FILE = "checkpoint.json"


def save_checkpoint(folder: "str | Path", ranks: Ranks, net, opt, state: dict, tensors: "dict | None" = None) -> None:
    """Write the network, the optimiser, extra `tensors` {name: tensor} and the JSON `state` to `folder`: the
    tensors to a new safetensors file first, then checkpoint.json naming it (atomically), then older files are
    removed. Called by every process: rank 0 writes, and none goes on (or stops) before it has written."""
    if ranks.main:
        _write_checkpoint(Path(folder), net, opt, state, tensors or {})
    barrier(ranks)


def _write_checkpoint(folder: Path, net, opt, state: dict, tensors: dict) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    previous = json.loads((folder / STATE_FILE).read_text()).get("serial", 0) if (folder / STATE_FILE).is_file() else 0
    name = f"checkpoint-{previous + 1:06d}.safetensors"
    opt_state = opt.state_dict()
    out = {f"model.{k}": v.detach().cpu().clone() for k, v in net.state_dict().items()}  # no shared storage
    out.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()})
    scalars = {}
    for idx, values in opt_state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                out[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    with atomic_write(folder / name) as tmp:
        save_file(out, str(tmp))
    meta = {**state, "serial": previous + 1, "tensors": name, "param_groups": opt_state["param_groups"],
            "optim_scalars": scalars}
    with atomic_write(folder / STATE_FILE) as tmp:
        Path(tmp).write_text(json.dumps(meta))
    for old in folder.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_checkpoint(folder: "str | Path"):
    """(JSON state, tensors {name: tensor}) of the checkpoint in `folder`; (None, {}) when it holds none."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        return None, {}
    meta = json.loads((folder / STATE_FILE).read_text())
    return meta, load_file(str(folder / meta["tensors"]))


def restore(net, opt, meta: dict, tensors: dict) -> dict:
    """Load a read checkpoint's network and optimiser states into `net` and `opt`; its extra tensors."""
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optim_scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
