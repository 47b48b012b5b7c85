"""Training losses of the deep fusion heads: binary cross-entropy, cross-entropy, Cox partial likelihood."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def cox_partial_likelihood(risk, time, event):
    """Negative Cox log partial likelihood per event, Breslow's ties: every event's risk set is {j: t_j >= t_i}.

    risk (n,) log-hazard ratios; time (n,); event (n,) 0/1. A batch without events gives 0 (no information).
    """
    event = event.to(risk.dtype)
    at_risk = time[None, :] >= time[:, None]  # row i: who is still at risk at t_i (tied events included)
    log_sum = torch.logsumexp(risk[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
    events = event.sum()
    if events == 0:
        return risk.sum() * 0.0
    return -((risk - log_sum) * event).sum() / events


def loss(kind: str, logits, target):
    """Loss of one batch: 'binary' target (n,) 0/1, 'multiclass' (n,) class index, 'survival' (n, 2) time, event."""
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))
    if kind == "multiclass":
        return F.cross_entropy(logits, target.long())
    return cox_partial_likelihood(logits[:, 0], target[:, 0], target[:, 1])
