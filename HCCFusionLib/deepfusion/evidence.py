"""Evidence of a deep fusion prediction: per-phase attention weights and 3D Grad-CAM maps per lesion.

Grad-CAM (Selvaraju et al. 2017) on the encoder's last convolution: the gradient of the predicted logit (binary:
the positive class; multiclass: the predicted class; survival: the risk) averaged over space weights that
layer's channels; their weighted sum, rectified and upsampled to the patch, is the map (scaled so that each
lesion's maximum over its phase maps is 1).
Intermediate and late fusion give one map per phase (absent phases: zeros), early fusion one map for all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def explain(model, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """(attention: one row per lesion, a column per phase (NaN for early fusion), Grad-CAM (n, maps, s, s, s))."""
    import torch
    from torch.nn import functional as F

    from .model import deterministic

    model._checked_fit()
    net = model.net_
    with deterministic(model.threads):
        patches, present, clinical = model._inputs(X)
        logits, weights = net(patches, present, clinical)
        activations = net.encoder.activations
        activations.retain_grad()
        if model.kind == "multiclass":
            target = logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]
        else:
            target = logits[:, 0]
        net.zero_grad()
        target.sum().backward()
        channel_weights = activations.grad.mean(dim=(2, 3, 4), keepdim=True)
        cam = torch.relu((channel_weights * activations).sum(dim=1, keepdim=True)).detach()
        size = patches.shape[-1]
        cam = F.interpolate(cam, size=(size,) * 3, mode="trilinear", align_corners=False)[:, 0]
        net.zero_grad()
    cam = cam.reshape(len(X), -1, size, size, size).numpy()
    if cam.shape[1] == present.shape[1]:
        cam = cam * present.numpy()[:, :, None, None, None]
    peak = cam.max(axis=(1, 2, 3, 4), keepdims=True)  # per lesion: the phases stay comparable
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    attention = (np.full(present.shape, np.nan) if weights is None else weights.detach().numpy())
    return pd.DataFrame(attention, index=X.index, columns=list(model.phases_)), cam.astype(np.float32)


def save_evidence(folder, prediction: pd.DataFrame, attention: pd.DataFrame, gradcam: np.ndarray,
                  phases, patches: np.ndarray | None = None) -> dict:
    """Write prediction.csv, attention.csv and gradcam.npz (array `gradcam` (n, maps, s, s, s), `lesion`
    row labels, `maps` phase names or 'all', and with `patches` the lesion patches (n, phases, s, s, s) under
    the maps; no pickled objects) into `folder`; returns the paths."""
    from ..files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"prediction": folder / "prediction.csv", "attention": folder / "attention.csv",
             "gradcam": folder / "gradcam.npz"}
    with atomic_write(paths["prediction"]) as tmp:
        prediction.to_csv(tmp)
    with atomic_write(paths["attention"]) as tmp:
        attention.to_csv(tmp)
    maps = list(phases) if gradcam.shape[1] == len(phases) else ["all"]
    with atomic_write(paths["gradcam"]) as tmp, open(tmp, "wb") as handle:
        extra = {} if patches is None else {"patch": np.asarray(patches, np.float32)}
        np.savez_compressed(handle, gradcam=gradcam, lesion=np.array([str(i) for i in prediction.index]),
                            maps=np.array(maps), **extra)
    return paths


def gradcam_images(run_folder) -> dict:
    """The Grad-CAM maps of `predict-deep` in a run folder as images in place: {"<lesion>_<map>": sitk.Image} on each
    lesion's patch grid (axis-aligned, `patches.PATCH_SPACING_MM`, centred on the lesion centroid as the patches
    were sampled), so a viewer overlays them on the registered phases. {} without the files."""
    import SimpleITK as sitk

    from ..layout import RunFolder
    from .patches import PATCH_SPACING_MM

    paths = RunFolder(run_folder)
    if not (paths.deep_gradcam.is_file() and paths.deep_prediction_table.is_file()):
        return {}
    centres = pd.read_csv(paths.deep_prediction_table, index_col=0)
    centres.index = centres.index.astype(str)
    with np.load(paths.deep_gradcam, allow_pickle=False) as saved:
        cams, lesions, maps = saved["gradcam"], [str(x) for x in saved["lesion"]], [str(x) for x in saved["maps"]]
    images = {}
    for cam, lesion in zip(cams, lesions):
        centre = centres.loc[lesion, ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float)
        for volume, name in zip(cam, maps):
            image = sitk.GetImageFromArray(np.ascontiguousarray(volume, np.float32))
            image.SetSpacing([PATCH_SPACING_MM] * 3)
            image.SetOrigin([float(c) - (volume.shape[-1] - 1) / 2 * PATCH_SPACING_MM for c in centre])
            images[f"{lesion}_{name}"] = image
    return images
