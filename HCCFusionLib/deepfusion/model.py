"""`DeepFusion`: a scikit-learn style estimator around `network.DeepFusionNet`, so that `fusion.evaluation.nested_cv`
clones and evaluates it exactly like the radiomics models.

X is a DataFrame with a `patches` column (one float array (phases, 2, s, s, s) per lesion, an absent phase all
NaN; see `patches`) and numeric clinical columns (all other columns but `not_predictor` ones, or `clinical`).
y: binary/multiclass labels, or a structured (event, time) array for kind='survival' (as `SurvivalFusion`).
Training is seeded and deterministic (torch deterministic algorithms, `threads` torch threads while fitting).
Under `torchrun --nproc_per_node N` a fit is data-parallel (`HCCFusionLib.ddp`: each global batch split over the
processes, gloo on CPU, NCCL with device='cuda') and gives one process's loss curve; `fit(checkpoint_dir=...)`
checkpoints each epoch and resumes to the same weights as an uninterrupted fit.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from .. import ddp
from ..errors import InputError, ModelError
from ..fusion.blocks import not_predictor
from ..progress import silent

log = logging.getLogger(__name__)

PATCHES = "patches"
KINDS = ("binary", "multiclass", "survival")
LEARNT_RATIO = 0.85  # a fit whose training loss stays above this share of a constant prediction's did not learn
RESTART_SEED_STEP = 1000  # restart k trains with seed + k * RESTART_SEED_STEP


@contextlib.contextmanager
def deterministic(threads: int, warn_only: bool = False):
    """Torch deterministic algorithms and `threads` intra-op threads (0: unchanged) inside the block; `warn_only`
    (GPU training: some CUDA kernels have no deterministic version) warns instead of failing."""
    import torch

    before, before_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(before_threads)


def stack_patches(X: pd.DataFrame) -> np.ndarray:
    """(n, phases, 2, s, s, s) float32 from the `patches` column; a clear error when it is missing or ragged."""
    if PATCHES not in X.columns:
        raise InputError(f"The deep fusion table has no '{PATCHES}' column: build it with "
                         "deepfusion.patches.patch_table (or patches_from_run).")
    shapes = {np.shape(p) for p in X[PATCHES]}
    if len(shapes) != 1 or len(next(iter(shapes))) != 5:
        raise InputError(f"Deep fusion patches must all have one shape (phases, 2, s, s, s); found {sorted(shapes)}.")
    return np.stack(list(X[PATCHES])).astype(np.float32)


class DeepFusion(BaseEstimator):
    """Deep multi-phase fusion (early / intermediate / late), trained with modality dropout.

    phases: names of the phase axis (for the evidence tables). modality_dropout: probability of masking each
    present phase of a training sample (at least one phase stays), so any subset of phases predicts.
    restarts (binary/multiclass): a fit whose training loss stays near that of a constant prediction (1 of 24
    measured 60-lesion fits got stuck so, held-out AUC 0.64) is retrained from a new seeded initialisation, up
    to `restarts` times; the best is kept, a warning is logged, and `attempts_` / `training_loss_ratio_` record it.
    `loss_curve_`: the kept attempt's training loss per (global) batch. device: 'cpu' or 'cuda' for training
    (the fitted network predicts on the CPU).
    """

    def __init__(self, fusion="intermediate", kind="binary", phases=("AP", "PVP", "DP"), clinical=None, width=8,
                 dim=32, epochs=30, batch_size=8, lr=3e-3, weight_decay=1e-4, modality_dropout=0.25,
                 augment=True, seed=0, threads=1, restarts=2, device="cpu"):
        self.fusion = fusion
        self.kind = kind
        self.phases = phases
        self.clinical = clinical
        self.width = width
        self.dim = dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.modality_dropout = modality_dropout
        self.augment = augment
        self.seed = seed
        self.threads = threads
        self.restarts = restarts
        self.device = device

    # ------------------------------------------------------------ inputs
    def _clinical_columns(self, X):
        if self.clinical is not None:
            missing = [c for c in self.clinical if c not in X.columns]
            if missing:
                raise InputError(f"Clinical column(s) {missing} are not in the table; columns: {list(X.columns)}.")
            return list(self.clinical)
        return [c for c in X.columns if c != PATCHES and not not_predictor(c)
                and pd.api.types.is_numeric_dtype(X[c])]

    def _inputs(self, X):
        import torch

        patches = stack_patches(X)
        if patches.shape[1] != len(self.phases_):
            raise ModelError(f"This model takes {len(self.phases_)} phases ({', '.join(self.phases_)}); the patches "
                             f"have {patches.shape[1]}.")
        present = ~np.isnan(patches).all(axis=(2, 3, 4, 5))
        if not present.any(axis=1).all():
            raise InputError("Every lesion needs at least one acquired phase; some rows have none.")
        patches = np.nan_to_num((patches - self.mean_[None, None, :, None, None, None])
                                / self.std_[None, None, :, None, None, None])
        clinical = X[self.clinical_].to_numpy(float) if self.clinical_ else np.zeros((len(X), 0))
        clinical = np.nan_to_num((clinical - self.clinical_mean_) / self.clinical_std_)
        return (torch.from_numpy(patches), torch.from_numpy(present),
                torch.from_numpy(clinical.astype(np.float32)))

    def _target(self, y):
        import torch

        if self.kind == "survival":
            event_name, time_name = y.dtype.names
            return torch.tensor(np.column_stack([y[time_name], y[event_name]]).astype(np.float32))
        return torch.tensor(np.searchsorted(self.classes_, np.asarray(y)))

    # ------------------------------------------------------------ training
    def _network(self):
        from .network import DeepFusionNet

        return DeepFusionNet(len(self.phases_), self._outputs(), self.fusion, len(self.clinical_), self.width, self.dim)

    def fit(self, X, y, checkpoint_dir=None, progress=None):
        """Train on X, y. Under torchrun every process calls fit on the same data (see the module docstring).
        `checkpoint_dir`: checkpoint each epoch there (rank 0 writes) and resume from one found there (it must be
        of this data and these parameters). progress(fraction, message) after each epoch."""
        if self.kind not in KINDS:
            raise InputError(f"Unknown deep fusion kind '{self.kind}': use one of {', '.join(KINDS)}.")
        with ddp.session(self.device) as (ranks, device):
            self._fit(X, y, ranks, device, checkpoint_dir, progress or silent)
        return self

    def _fit(self, X, y, ranks, device, checkpoint_dir, progress):
        import torch

        from .losses import loss

        start = time.perf_counter()
        self.phases_ = tuple(self.phases)
        self.clinical_ = self._clinical_columns(X)
        patches = stack_patches(X)
        self.mean_ = np.nanmean(patches, axis=(0, 1, 3, 4, 5)).astype(np.float32)
        self.std_ = (np.nanstd(patches, axis=(0, 1, 3, 4, 5)) + 1e-6).astype(np.float32)
        clinical = X[self.clinical_].to_numpy(float) if self.clinical_ else np.zeros((len(X), 0))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: mean 0, SD 1
            self.clinical_mean_ = np.nan_to_num(np.nanmean(clinical, axis=0))
            self.clinical_std_ = np.nan_to_num(np.nanstd(clinical, axis=0), nan=1.0) + 1e-6
        if self.kind == "survival":
            self.classes_ = None
        else:
            self.classes_ = np.unique(np.asarray(y))
            if len(self.classes_) < 2 or (self.kind == "binary" and len(self.classes_) != 2):
                raise InputError(f"A {self.kind} deep fusion model needs {'2' if self.kind == 'binary' else '2+'} "
                                 f"classes in training; found {list(self.classes_)}.")
        with deterministic(self.threads, warn_only=device.type != "cpu"):
            data = self._inputs(X)
            target = self._target(y)
            chance = float(loss(self.kind, torch.zeros(len(X), self._outputs()), target))
            saved = _Checkpoint(checkpoint_dir, ranks, self._fingerprint(data, target)) if checkpoint_dir else None
            best = saved.best(self._network) if saved else None
            for attempt in range(saved.attempt if saved else 0, 1 + (self.restarts if self.kind != "survival" else 0)):
                seed = self.seed + RESTART_SEED_STEP * attempt
                net, curve = self._train(data, target, seed, ranks, device, saved, attempt, best, progress)
                with torch.no_grad():
                    logits = net(*(t.to(device) for t in data))[0].cpu()
                    ratio = float(loss(self.kind, logits, target)) / max(chance, 1e-12)
                if best is None or ratio < best[1]:
                    best = (net, ratio, curve)
                if ratio < LEARNT_RATIO or self.kind == "survival":
                    break
                log.warning("deep fusion (%s) attempt %d did not learn (training loss %.2f x that of a constant "
                            "prediction)%s", self.fusion, attempt + 1, ratio,
                            "; restarting from a new initialisation" if attempt < self.restarts else "")
            self.net_ = self._network()  # a plain CPU network (no process group, no device) with the weights
            self.net_.load_state_dict({k: v.cpu() for k, v in best[0].state_dict().items()}, strict=True)
            self.net_.eval()
            self.training_loss_ratio_, self.loss_curve_, self.attempts_ = best[1], best[2], attempt + 1
            if self.kind != "survival" and self.training_loss_ratio_ >= LEARNT_RATIO:
                log.warning("deep fusion (%s) stayed near chance on its training data after %d attempts: its "
                            "predictions are not informative (too few lesions or no image signal?)",
                            self.fusion, self.attempts_)
            if self.kind == "survival":
                risk = self._forward(*data)[0][:, 0].numpy()
                self.cutoffs_ = np.quantile(risk, [0.5])
        self.fit_seconds_ = time.perf_counter() - start
        log.info("deep fusion (%s, %s) trained on %d lesions in %.1f s", self.fusion, self.kind, len(X),
                 self.fit_seconds_)

    def _fingerprint(self, data, target) -> dict:
        """What a checkpoint must match: the training parameters and a digest of the inputs."""
        digest = hashlib.sha256()
        for tensor in (*data, target):
            digest.update(tensor.numpy().tobytes())
        params = {k: v for k, v in self.get_params().items() if k not in ("threads", "device")}
        return json.loads(json.dumps({**params, "data": digest.hexdigest()[:16]}, default=list))

    def _outputs(self):
        return len(self.classes_) if self.kind == "multiclass" else 1

    def _train(self, data, target, seed, ranks, device, saved, attempt, best, progress):
        """One seeded training run (AdamW, mini-batches, modality dropout + flips; each global batch drawn and
        augmented alike on every process, which runs its `ddp.share`); (network in eval mode, loss per batch)."""
        import torch

        from .losses import loss

        patches, present, clinical = data
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net = ddp.sync_batch_norm(self._network().to(device), ranks)
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        first, curve = saved.restore(attempt, net, optimiser, generator) if saved else (0, [])
        n = len(target)
        net.train()
        for epoch in range(first, self.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                if self.kind == "survival" and len(idx) < 2:
                    continue
                batch, keep = self._augment(patches[idx], present[idx], generator)
                mine = ddp.share(ranks, len(idx), even=False)
                part = slice(mine.start, mine.stop)
                logits, _ = net(batch[part].to(device), keep[part].to(device), clinical[idx][part].to(device))
                logits = ddp.gather_batch(ranks, logits, keep_grad=True, sizes=ddp.split(len(idx), ranks.world))
                value = loss(self.kind, logits, target[idx].to(device))
                optimiser.zero_grad()
                (value * ranks.world if ranks.world > 1 else value).backward()
                ddp.average_gradients(net, ranks)  # the sum of the shares' gradients: the whole batch's
                optimiser.step()
                curve.append(float(value.detach()))
            if saved:
                saved.save(attempt, epoch + 1, net, optimiser, generator, curve, best)
            progress((epoch + 1) / self.epochs, f"attempt {attempt + 1} epoch {epoch + 1}/{self.epochs} "
                                                f"loss {np.mean(curve[-max(1, -(-n // self.batch_size)):]):.3f}")
        return net.eval(), curve

    def _augment(self, batch, present, generator):
        """Modality dropout (each present phase masked with `modality_dropout`, one always kept) and random flips
        along each axis (flips keep every orientation: no rotations)."""
        import torch

        keep = present.clone()
        if self.modality_dropout:
            drop = torch.rand(present.shape, generator=generator) < self.modality_dropout
            keep &= ~drop
            none = ~keep.any(dim=1)
            if none.any():  # keep one random present phase of the rows that lost all
                scores = torch.rand(present.shape, generator=generator) * present
                keep[none, scores[none].argmax(dim=1)] = True
        if self.augment:
            for axis in (3, 4, 5):
                if torch.rand(1, generator=generator).item() < 0.5:
                    batch = batch.flip(axis)
        return batch, keep

    # ------------------------------------------------------------ prediction
    def _forward(self, patches, present, clinical):
        import torch

        with torch.no_grad():
            return self.net_(patches, present, clinical)

    def _checked_fit(self):
        if not hasattr(self, "net_"):
            raise ModelError("This deep fusion model is not trained: call fit first or load a bundle.")

    def decision_function(self, X):
        """Logits: binary (n,), multiclass (n, classes), survival: the risk score (n,)."""
        self._checked_fit()
        with deterministic(self.threads):
            logits = self._forward(*self._inputs(X))[0].numpy()
        return logits if self.kind == "multiclass" else logits[:, 0]

    def predict_proba(self, X):
        if self.kind == "survival":
            raise ModelError("A survival deep fusion model predicts a risk (predict), not class probabilities.")
        z = self.decision_function(X)
        if self.kind == "binary":
            p = 1 / (1 + np.exp(-z))
            return np.column_stack([1 - p, p])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        if self.kind == "survival":
            return self.decision_function(X)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def risk_group(self, X=None, risk=None):
        """'low'/'high' by the training median risk (survival)."""
        risk = self.predict(X) if risk is None else np.asarray(risk)
        return np.array(["low", "high"])[np.searchsorted(self.cutoffs_, risk, side="right")]

    def score(self, X, y):
        """ROC AUC (binary), macro one-vs-rest AUC (multiclass) or Harrell's C (survival)."""
        from sklearn.metrics import roc_auc_score

        if self.kind == "survival":
            from sksurv.metrics import concordance_index_censored

            event_name, time_name = y.dtype.names
            return concordance_index_censored(y[event_name].astype(bool), y[time_name], self.predict(X))[0]
        if self.kind == "binary":
            return roc_auc_score(np.asarray(y) == self.classes_[1], self.predict_proba(X)[:, 1])
        return roc_auc_score(np.asarray(y), self.predict_proba(X), multi_class="ovr", labels=self.classes_)


class _Checkpoint:
    """A deep fusion fit's checkpoint folder (`ddp.save_checkpoint`): the running attempt's network, optimiser
    and random generator after each epoch, and the best finished attempt's weights."""

    def __init__(self, folder, ranks, fingerprint: dict):
        self.folder, self.ranks, self.fingerprint = folder, ranks, fingerprint
        self.meta, self.tensors = ddp.read_checkpoint(folder)
        if self.meta and self.meta.get("fingerprint") != fingerprint:
            raise InputError(f"The checkpoint in '{folder}' is of another deep fusion fit (other data or "
                             "parameters): give an empty checkpoint folder, or remove this one to start over.")
        if self.meta:
            log.info("deep fusion: resuming attempt %d at epoch %d from %s", self.meta["attempt"] + 1,
                     self.meta["epoch"], folder)
        self.attempt = self.meta["attempt"] if self.meta else 0

    def best(self, network):
        """(network, loss ratio, curve) of the best finished attempt, or None."""
        kept = self.meta and self.meta["best"]
        if not kept:
            return None
        net = network()
        net.load_state_dict({k[11:]: v for k, v in self.tensors.items() if k.startswith("extra.best.")}, strict=True)
        return net.eval(), kept["ratio"], kept["curve"]

    def restore(self, attempt, net, optimiser, generator):
        """(first epoch, loss curve so far) of `attempt`, its states loaded when the checkpoint holds it."""
        if not self.meta or self.meta["attempt"] != attempt:
            return 0, []
        extra = ddp.restore(net, optimiser, self.meta, self.tensors)
        generator.set_state(extra["generator"])
        return int(self.meta["epoch"]), list(self.meta["curve"])

    def save(self, attempt, epoch, net, optimiser, generator, curve, best) -> None:
        tensors = {"generator": generator.get_state()}
        if best is not None:
            tensors.update({f"best.{k}": v for k, v in best[0].state_dict().items()})
        state = {"fingerprint": self.fingerprint, "attempt": attempt, "epoch": epoch, "curve": curve,
                 "best": None if best is None else {"ratio": best[1], "curve": best[2]}}
        ddp.save_checkpoint(self.folder, self.ranks, net, optimiser, state, tensors)
