"""Deep multi-phase fusion networks (torch): a shared 3D CNN encoder per phase, fused early, intermediate or late.

Input: patches (batch, phases, 2, s, s, s), channel 0 the lesion patch and channel 1 its liver context (a patch
twice as wide, averaged down to the same size); `present` (batch, phases) says which phases were acquired (or
were kept by modality dropout). Clinical covariates (batch, k) modulate the phase tokens by FiLM.

- early: the present phases stacked as channels (absent ones zero) into one encoder.
- intermediate: one encoder with shared weights per phase + a learned phase embedding -> phase tokens; the tokens
  attend to each other (self-attention = cross-attention between phases), then a learned query pools them
  (its weights per phase are the attention evidence); absent phases are masked out of both attentions.
- late: the shared encoder per phase, one head per phase, logits averaged over the present phases.
"""
from __future__ import annotations

import torch
from torch import nn

FUSIONS = ("early", "intermediate", "late")


class Encoder(nn.Module):
    """conv-pool-conv-conv on an s^3 patch (s divisible by 2); `last` is the Grad-CAM layer (s/2 grid)."""

    def __init__(self, in_channels: int, width: int, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.BatchNorm3d(2 * width), nn.ReLU())
        self.last = nn.Conv3d(2 * width, 2 * width, 3, padding=1)
        self.out = nn.Sequential(nn.Linear(4 * width, dim), nn.ReLU())
        self.activations = None  # the last conv's output of the latest forward pass (for Grad-CAM)

    def forward(self, x):
        a = torch.relu(self.last(self.body(x)))
        self.activations = a
        pooled = torch.cat([a.mean(dim=(2, 3, 4)), a.amax(dim=(2, 3, 4))], dim=1)
        return self.out(pooled)


class FiLM(nn.Module):
    """Feature-wise linear modulation of tokens by clinical covariates: token * (1 + gamma) + beta."""

    def __init__(self, covariates: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(covariates, dim), nn.ReLU(), nn.Linear(dim, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)  # starts as the identity

    def forward(self, tokens, clinical):
        gamma, beta = self.net(clinical).chunk(2, dim=-1)
        if tokens.dim() == 3:
            gamma, beta = gamma[:, None], beta[:, None]
        return tokens * (1 + gamma) + beta


class DeepFusionNet(nn.Module):
    """The three fusion points behind one forward(patches, present, clinical) -> (logits (b, outputs), weights).

    weights: (b, phases) per-phase attention of the pooling query (intermediate), the phases' share of the
    averaged logits (late), or None (early).
    """

    def __init__(self, phases: int, outputs: int, fusion: str = "intermediate", covariates: int = 0,
                 width: int = 8, dim: int = 32, heads: int = 2):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        self.fusion, self.phases = fusion, phases
        self.encoder = Encoder(2 * phases if fusion == "early" else 2, width, dim)
        self.film = FiLM(covariates, dim) if covariates else None
        if fusion != "early":
            self.phase_embedding = nn.Embedding(phases, dim)
        if fusion == "intermediate":
            self.mix = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.norm = nn.LayerNorm(dim)
            self.query = nn.Parameter(torch.zeros(1, 1, dim))
            self.pool = nn.MultiheadAttention(dim, heads, batch_first=True)
        if fusion == "late":
            self.heads = nn.ModuleList(nn.Linear(dim, outputs) for _ in range(phases))
        else:
            self.head = nn.Linear(dim, outputs)

    def forward(self, patches, present, clinical=None):
        b, p = patches.shape[:2]
        patches = patches * present[:, :, None, None, None, None].to(patches.dtype)
        if self.fusion == "early":
            z = self.encoder(patches.flatten(1, 2))
            if self.film is not None:
                z = self.film(z, clinical)
            return self.head(z), None
        tokens = self.encoder(patches.flatten(0, 1)).unflatten(0, (b, p))
        tokens = tokens + self.phase_embedding.weight[None]
        if self.film is not None:
            tokens = self.film(tokens, clinical)
        if self.fusion == "late":
            logits = torch.stack([head(tokens[:, i]) for i, head in enumerate(self.heads)], dim=1)
            share = present.to(logits.dtype) / present.sum(dim=1, keepdim=True).clamp(min=1)
            return (logits * share[:, :, None]).sum(dim=1), share
        if b == 0:  # a process's empty share of a data-parallel batch: attention needs rows; the graph reaches
            return self.head(tokens.sum(dim=1)), tokens.new_zeros(0, p)  # the encoder (its batch norm) all the same
        absent = ~present.bool()
        mixed, _ = self.mix(tokens, tokens, tokens, key_padding_mask=absent, need_weights=False)
        tokens = self.norm(tokens + mixed)
        pooled, weights = self.pool(self.query.expand(b, -1, -1), tokens, tokens, key_padding_mask=absent)
        return self.head(pooled[:, 0]), weights[:, 0]
