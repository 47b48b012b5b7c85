"""Training the plans' DynUNet: Dice + cross-entropy with deep supervision, nnU-Net-like augmentation,
poly learning rate, per-step seeding (so a resumed run equals an uninterrupted one), safetensors
checkpoints with a JSON state, k-fold splits; CPU or GPU, and several processes under `torchrun` (DDP, see
HCCFusionLib.ddp: the same loss curve as one process).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import ddp
from ..errors import InputError
from ..progress import scaled, silent
from .data import preprocess

log = logging.getLogger(__name__)

FOREGROUND_OVERSAMPLING = 0.33  # nnU-Net: a third of patches are centred on a random foreground class voxel


def kfold_split(case_ids, n_folds: int = 5, fold: int = 0, seed: int = 0):
    """(train_ids, val_ids) of fold `fold` of a seeded k-fold split; fold=None trains on all, validates on none."""
    ids = sorted(case_ids)
    if fold is None:
        return ids, []
    if not 0 <= fold < n_folds or len(ids) < n_folds:
        raise InputError(f"Fold {fold} of {n_folds} needs 0 <= fold < {n_folds} and >= {n_folds} cases "
                         f"(have {len(ids)}).")
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[fold::n_folds])
    return [i for i in ids if i not in val], val


class PatchSampler:
    """Random patches (C, x, y, z) + labels from preprocessed cases, with class-balanced foreground sampling."""

    def __init__(self, arrays, patch_size):
        self.arrays = arrays  # list of (image (C,x,y,z), labels (x,y,z))
        self.patch = np.asarray(patch_size)
        self.fg = [{int(c): np.flatnonzero(lab == c) for c in np.unique(lab) if c} for _, lab in arrays]

    def sample(self, rng: np.random.Generator, foreground: bool, class_weights: dict | None = None):
        """One patch; foreground-centred ones pick a label present in the case (uniformly, or by
        `class_weights` {label index: relative weight}) and centre on a random voxel of it."""
        if foreground and class_weights:
            pick = [c for c, w in class_weights.items() if w > 0]
            weights = np.asarray([class_weights[c] for c in pick], float)
            cls = pick[int(rng.choice(len(pick), p=weights / weights.sum()))]
            having = [k for k, fg in enumerate(self.fg) if cls in fg] or list(range(len(self.arrays)))
            k = having[int(rng.integers(len(having)))]
        else:
            k, cls = int(rng.integers(len(self.arrays))), None
        image, labels = self.arrays[k]
        shape = np.asarray(labels.shape)
        if foreground and self.fg[k]:
            if cls not in self.fg[k]:
                cls = list(self.fg[k])[int(rng.integers(len(self.fg[k])))]
            idx = self.fg[k][cls]
            centre = np.asarray(np.unravel_index(idx[int(rng.integers(idx.size))], labels.shape))
            start = centre - self.patch // 2
        else:
            start = np.array([int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for s, p in zip(shape, self.patch)])
        start = np.clip(start, np.minimum(0, shape - self.patch), np.maximum(0, shape - self.patch))
        lo, hi = np.maximum(start, 0), np.minimum(start + self.patch, shape)
        img = image[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        lab = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        pad = [(int(a), int(b)) for a, b in zip(lo - start, start + self.patch - hi)]
        if any(a or b for a, b in pad):
            img = np.stack([np.pad(ch, pad, mode="constant", constant_values=float(ch.min())) for ch in img])
            lab = np.pad(lab, pad)
        return img, lab[None]


def augmentation(plans: dict, elastic: bool = False):
    """nnU-Net-like MONAI transforms on {"image", "label"} patches (channel-first, x, y, z)."""
    import monai.transforms as T

    spacing = np.asarray(plans["spacing"], float)
    anisotropic = spacing.max() / spacing.min() >= 3
    rot = (0.52, 0.52, 0.52) if not anisotropic else tuple(0.52 if s == spacing.max() else 0.09 for s in spacing)
    keys = ("image", "label")
    steps = [T.RandAffined(keys, prob=0.2, rotate_range=rot, scale_range=(0.15, 0.15, 0.15),
                           mode=("bilinear", "nearest"), padding_mode="border")]
    if elastic:
        steps.append(T.Rand3DElasticd(keys, sigma_range=(9, 13), magnitude_range=(0, 200), prob=0.1,
                                      mode=("bilinear", "nearest"), padding_mode="border"))
    steps += [
        T.RandGaussianNoised("image", prob=0.1, std=0.1),
        T.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
        T.RandScaleIntensityd("image", factors=0.25, prob=0.15),  # brightness (multiplicative)
        T.RandScaleIntensityFixedMeand("image", factors=0.25, prob=0.15),  # contrast
        T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),  # gamma
        T.RandFlipd(keys, prob=0.5, spatial_axis=0),
        T.RandFlipd(keys, prob=0.5, spatial_axis=1),
        T.RandFlipd(keys, prob=0.5, spatial_axis=2),
    ]
    return T.Compose(steps)


@dataclass
class TrainResult:
    network: "object"  # the trained DynUNet for inference (no deep-supervision heads), eval mode
    metrics: dict
    history: list = field(default_factory=list)
    seconds: float = 0.0
    train_ids: list = field(default_factory=list)
    val_ids: list = field(default_factory=list)
    state: dict = field(default_factory=dict)  # the training network's weights (deep-supervision heads too), CPU


def poly_lr(initial: float, step: int, steps: int, exponent: float = 0.9) -> float:
    return initial * (1 - step / steps) ** exponent


def train(cases, plans: dict, *, steps: int = 1000, seed: int = 0, fold: int | None = None, n_folds: int = 5,
          lr: float = 3e-3, optimizer: str = "adamw", elastic: bool = False, device: str | None = None,
          checkpoint_dir: "str | Path | None" = None, checkpoint_every: int = 100, val_cases=None,
          foreground_fraction: float = FOREGROUND_OVERSAMPLING, class_weights: dict | None = None,
          initial: dict | None = None, prox_mu: float | None = None, progress=None) -> TrainResult:
    """Train from scratch (or resume from `checkpoint_dir`) for `steps` steps; validate on the fold's cases.

    `foreground_fraction`: share of each batch centred on a voxel of a foreground class; `class_weights`
    {label index: relative weight} picks that class (default: uniform over the classes a case has, as nnU-Net;
    small tumours learn far sooner on CPU budgets when weighted up). `optimizer`: "adamw" (fast convergence on
    short budgets) or "sgd" (nnU-Net: Nesterov, momentum 0.99). Under `torchrun --nproc_per_node N` the plans'
    batch is split over N processes (gloo on CPU, NCCL with one GPU each); only rank 0 writes checkpoints and
    validates; every rank returns the same network and history. Federated rounds: `initial` (a `state` of an
    earlier result: {name: tensor or array}) is where training starts; `prox_mu` adds FedProx's proximal term
    mu/2 ||w - initial||^2 to the loss (0 computes it and gives FedAvg's update).
    """
    with ddp.session(device) as (ranks, device):
        return _train(cases, plans, steps, seed, fold, n_folds, lr, optimizer, elastic, device, checkpoint_dir,
                      checkpoint_every, val_cases, foreground_fraction, class_weights, progress or silent, ranks,
                      initial, prox_mu)


def _train(cases, plans, steps, seed, fold, n_folds, lr, optimizer, elastic, device, checkpoint_dir,
           checkpoint_every, val_cases, foreground_fraction, class_weights, progress, ranks, initial=None,
           prox_mu=None) -> TrainResult:
    import torch
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    from .network import build_network

    by_id = {c.case_id: c for c in cases}
    if len(by_id) != len(cases):
        raise InputError("Case ids in the training set are not unique: rename the studies.")
    train_ids, val_ids = kfold_split(list(by_id), n_folds, fold, seed)
    val = list(val_cases or []) + [by_id[i] for i in val_ids]
    prep = scaled(progress, 0.0, 0.1)
    arrays = []
    for i, cid in enumerate(train_ids):
        image, labels, _ = preprocess(by_id[cid], plans)
        if labels is None:
            raise InputError(f"Training case '{cid}' has no label map.")
        arrays.append((image, labels))
        prep((i + 1) / len(train_ids), f"preprocessing {i + 1}/{len(train_ids)}")
    sampler = PatchSampler(arrays, plans["patch_size"])
    aug = augmentation(plans, elastic)

    torch.manual_seed(seed)
    net = build_network(plans, deep_supervision=True).to(device)
    if initial is not None:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in initial.items()}, strict=True)
    anchor = None if prox_mu is None else [p.detach().clone() for p in net.parameters()]
    params = net.parameters()
    opt = (torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=lr, weight_decay=3e-5))
    loss_fn = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True, batch=True))
    start, history = 0, []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    resumed, tensors = ddp.read_checkpoint(ckpt) if ckpt else (None, {})
    if resumed:
        ddp.restore(net, opt, resumed, tensors)
        start, history = int(resumed["step"]), list(resumed["history"])
        log.info("Resuming training at step %d from %s", start, ckpt)
    batch = int(plans.get("batch_size", 2))
    mine = ddp.share(ranks, batch)
    model = net if ranks.world == 1 else torch.nn.parallel.DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    t0 = time.time()
    net.train()
    for step in range(start, steps):
        rng = np.random.default_rng([seed, step])
        item_seeds = rng.integers(2 ** 31, size=batch)  # each item's augmentation, whichever process runs it
        items = []
        for b in range(batch):
            img, lab = sampler.sample(rng, b >= round(batch * (1 - foreground_fraction)), class_weights)
            if b in mine:
                aug.set_random_state(seed=int(item_seeds[b]))
                items.append(aug({"image": torch.from_numpy(img), "label": torch.from_numpy(lab)}))
        x = torch.stack([torch.as_tensor(i["image"]) for i in items]).float().to(device)
        y = torch.stack([torch.as_tensor(i["label"]) for i in items]).round().long().to(device)
        for group in opt.param_groups:
            group["lr"] = poly_lr(lr, step, steps)
        out = ddp.gather_batch(ranks, model(x), keep_grad=True)
        loss = loss_fn(list(torch.unbind(out, dim=1)), ddp.gather_batch(ranks, y, keep_grad=False))
        total = loss * ranks.world  # DDP averages the shares' gradients: the whole batch's gradient
        if anchor is not None:  # FedProx: stay near the round's global weights (the same term on every rank)
            total = total + prox_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        history.append(round(float(loss.detach()), 5))
        if ckpt and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            ddp.save_checkpoint(ckpt, ranks, net, opt, {"step": step + 1, "seed": seed, "history": history})
        progress(0.1 + 0.8 * (step + 1) / steps, f"step {step + 1}/{steps} loss {np.mean(history[-10:]):.3f}")
    seconds = time.time() - t0
    net.eval()
    metrics = validate(net, val, plans, device, scaled(progress, 0.9, 1.0)) if val and ranks.main else {}
    metrics["train_steps"] = steps
    progress(1.0, "training done")
    val_ids = [c.case_id for c in val]
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return TrainResult(inference_network(net, plans).cpu(), metrics, history, seconds, train_ids, val_ids, state)


def validate(net, cases, plans, device, progress=None) -> dict:
    """Dice of the liver (liver + tumour, as in LiTS) and tumour on each case's own grid, through the predictor
    (no TTA, with post-processing)."""
    from types import SimpleNamespace

    import SimpleITK as sitk

    from ..study import LABELS
    from .predictor import predict_case

    progress = progress or silent
    model = SimpleNamespace(plans=plans, path="(model in training)")
    organ = (LABELS["liver"], LABELS["tumour"])
    per_case = {}
    for i, case in enumerate(cases):
        seg = predict_case(case, model, net=inference_network(net, plans).to(device), tta=False, device=device)
        pred, truth = sitk.GetArrayViewFromImage(seg.labels), sitk.GetArrayViewFromImage(case.labels)
        per_case[case.case_id] = {"liver": round(dice(np.isin(pred, organ), np.isin(truth, organ)), 4),
                                  "tumour": round(dice(pred == LABELS["tumour"], truth == LABELS["tumour"]), 4)}
        progress((i + 1) / len(cases), f"validating {i + 1}/{len(cases)}")
    return {"dice": {n: round(float(np.mean([d[n] for d in per_case.values()])), 4) for n in ("liver", "tumour")},
            "dice_per_case": per_case, "num_validation": len(cases)}


def inference_network(net, plans: dict):
    """The trained weights in a plain (no deep-supervision heads) DynUNet on the CPU, eval mode."""
    from .network import build_network

    plain = build_network(plans)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("deep_supervision_heads.")
             and ".super_head." not in k}
    plain.load_state_dict(state, strict=True)
    return plain.eval()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
