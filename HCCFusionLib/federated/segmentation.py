"""Federated fine-tuning of the segmentation network: FedAvg and FedProx (McMahan et al. 2017; Li et al. 2020).

Each round the server sends the global weights ({name: array}) to every site; the site trains them on its own
cases for a few steps with `segmentation.trainer.train` (FedProx: plus the proximal term mu/2 ||w - global||^2)
and answers with its new weights and its number of training cases; the server averages the weights, weighted by
cases. Only weight arrays leave a site, never images or labels. `federated_training` runs the rounds in this
process (sites as callables); `flower` runs the same rounds as Flower processes.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError, ModelError

log = logging.getLogger(__name__)

Weights = dict  # {state-dict name: float32 array}


def initial_weights(plans: dict, seed: int = 0) -> Weights:
    """The training network's (deep-supervision) weights as the trainer initialises them for `seed`."""
    import torch

    from ..segmentation.network import build_network

    torch.manual_seed(seed)
    return to_arrays(build_network(plans, deep_supervision=True).state_dict())


def to_arrays(state) -> Weights:
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}


def local_update(cases, plans: dict, weights: Weights, *, steps: int, seed: int, lr: float = 3e-3,
                 prox_mu: float | None = None) -> tuple[Weights, int]:
    """One site's round: `steps` training steps from `weights` on its own `cases` (all of them; no validation).

    Returns (new weights, number of training cases). `prox_mu` None: FedAvg; a number: FedProx with that mu.
    """
    from ..segmentation.trainer import train

    if prox_mu is not None and not prox_mu >= 0:
        raise InputError(f"FedProx mu must be >= 0 (got {prox_mu}).")
    result = train(cases, plans, steps=steps, seed=seed, fold=None, lr=lr, device="cpu", initial=weights,
                   prox_mu=prox_mu)
    return to_arrays(result.state), len(cases)


def fedavg(updates: Sequence[tuple[Mapping[str, np.ndarray], float]]) -> Weights:
    """Average of the sites' weights, each weighted by its number of training cases."""
    if not updates:
        raise InputError("FedAvg needs weights from at least one site.")
    names = set(updates[0][0])
    if any(set(w) != names for w, _ in updates):
        raise ModelError("Sites sent weights of different networks: every site must train the same plans.")
    total = float(sum(n for _, n in updates))
    return {k: (sum(np.asarray(w[k], dtype=np.float64) * n for w, n in updates) / total).astype(np.float32)
            for k in updates[0][0]}


def federated_training(sites: Mapping[str, Callable[[Weights, int], tuple[Weights, int]]], plans: dict, *,
                       rounds: int, seed: int = 0) -> Weights:
    """FedAvg/FedProx rounds in this process: `site(weights, round)` -> (its new weights, its cases)."""
    weights = initial_weights(plans, seed)
    for round_ in range(rounds):
        weights = fedavg([site(weights, round_) for site in sites.values()])
        log.info("federated segmentation round %d/%d done", round_ + 1, rounds)
    return weights


def network(weights: Weights, plans: dict):
    """The inference network (no deep-supervision heads, eval mode) with federated `weights`."""
    import torch

    from ..segmentation.network import build_network
    from ..segmentation.trainer import inference_network

    net = build_network(plans, deep_supervision=True)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=True)
    return inference_network(net, plans)


def save_weights(weights: Weights, path) -> None:
    """The global weights as safetensors (atomic)."""
    from pathlib import Path

    from safetensors.numpy import save_file

    from ..files import atomic_write

    with atomic_write(Path(path)) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp))
