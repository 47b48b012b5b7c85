"""Pictures of the report: key images per phase with contours and the lesion marked, registration checkerboards and
the contribution plot, written as PNG files (or embedded) by `ImageSink`."""
from __future__ import annotations

import base64
import io as _bytes_io
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .lesions import label_lesions
from .study import CT_WINDOW, LABELS, check_same_grid, ct_window_range
from .views import display_slice, show

CONTOURS = {"liver": "#f2a65a", "tumour": "#ffe600", "spleen": "#b784d9", "portal_vein": "#38b6ff"}


class ImageSink:
    """Saves matplotlib figures as PNG files under a folder, or returns them as data URIs."""

    def __init__(self, folder: Path, embed: bool):
        self.folder, self.embed = folder, embed

    def add(self, figure, name: str) -> str:
        import matplotlib.pyplot as plt

        buffer = _bytes_io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, facecolor=figure.get_facecolor())
        plt.close(figure)
        return self.add_png(buffer.getvalue(), name)

    def add_png(self, png: bytes, name: str) -> str:
        if self.embed:
            return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{name}.png").write_bytes(png)
        return f"{self.folder.name}/{name}.png"


def key_images(data, sink: ImageSink, point, lesion: int) -> list[dict]:
    """One axial picture per phase (radiological convention, via views.display_slice) through `point`, then the MR
    subtraction images (post minus pre: lirads_mri.subtraction_images) of a dynamic MR study."""
    from .lirads_mri import subtraction_images

    if not data.images:
        return []
    reference = data.labels if data.labels is not None else next(iter(data.images.values()))
    for phase, image in data.images.items():
        check_same_grid(reference, image, f"{phase} image of the report (give registered phases)")
    labels = display_slice(data.labels, "axial", point, nearest=True).array if data.labels is not None else None
    out = []
    for phase, image in {**data.images, **subtraction_images(data.images)}.items():
        picture = display_slice(image, "axial", point)
        figure, axes = show(picture, *window(picture.array, data.modality))
        for name, colour in CONTOURS.items() if labels is not None else ():
            mask = labels == LABELS[name]
            if mask.any():
                axes.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=0.8,
                             extent=picture.extent, origin="upper")
        if lesion:
            axes.annotate(f"{lesion}", xy=picture.to_display(point), xytext=(18, 18), textcoords="offset points",
                          color="#00ff6a", fontsize=10, arrowprops={"arrowstyle": "->", "color": "#00ff6a", "lw": 1.5})
        caption = f"{phase} · axial slice {picture.index + 1}/{picture.count}" + (
            f" · observation {lesion}" if lesion else "")
        out.append({"src": sink.add(figure, f"key_{phase}"), "caption": caption})
    return out


def registration_images(data, sink: ImageSink, point) -> list[dict]:
    """Axial checkerboard (reference / registered series) per moving series, through the key images' point."""
    out = []
    for name, image in data.registration_images.items():
        picture = display_slice(image, "axial", point)
        figure, _axes = show(picture, 0.0, 1.0)
        out.append({"src": sink.add(figure, f"checkerboard_{name}"),
                    "caption": f"{name} / reference checkerboard · axial slice {picture.index + 1}/{picture.count}"})
    return out


def window(array: np.ndarray, modality: str) -> tuple[float, float]:
    if modality == "CT":
        return ct_window_range(CT_WINDOW)
    low, high = np.percentile(array, [1, 99])
    return float(low), float(high)


def lesion_instances(data) -> sitk.Image | None:
    if data.lesions is not None:
        reference = data.labels if data.labels is not None else next(iter(data.images.values()), None)
        if reference is not None:
            check_same_grid(reference, data.lesions, "lesion instance map of the report")
        return data.lesions
    if data.labels is None:
        return None
    return label_lesions(data.labels)


def key_point(labels: sitk.Image | None, lesions: sitk.Image | None) -> tuple[tuple | None, int]:
    """Physical point (LPS mm) of the key slice and the observation it shows (0: none): the largest
    observation's centroid, else the middle of the liver's largest axial cross-section, else None (centre)."""
    if lesions is not None:
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(sitk.Cast(lesions, sitk.sitkUInt32))
        if stats.GetLabels():
            lesion = max(sorted(stats.GetLabels()), key=stats.GetNumberOfPixels)
            return stats.GetCentroid(lesion), int(lesion)
    if labels is not None:
        liver = sitk.DICOMOrient(labels == LABELS["liver"], "LPS")
        areas = sitk.GetArrayViewFromImage(liver).sum(axis=(1, 2))
        if areas.any():
            size = liver.GetSize()
            return liver.TransformContinuousIndexToPhysicalPoint(
                [(size[0] - 1) / 2, (size[1] - 1) / 2, float(np.argmax(areas))]), 0
    return None, 0


def contribution_plot(top, sink: ImageSink) -> str | None:
    """Bar plot of the largest contributions (a feature/contribution frame), or None without one."""
    if top is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = top.iloc[::-1]
    figure, axes = plt.subplots(figsize=(6, 0.35 * len(top) + 1))
    colours = ["#c0392b" if v > 0 else "#2471a3" for v in top["contribution"]]
    axes.barh([str(n) for n in top["feature"]], top["contribution"], color=colours)
    axes.axvline(0, color="black", lw=0.8)
    axes.set_xlabel("contribution to the prediction (red: towards, blue: against)")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return sink.add(figure, "contributions")


def gradcam_plot(path, sink: ImageSink, lesions: int = 3) -> str | None:
    """Central axial slices of the deep fusion Grad-CAM maps (OUT/prediction/deep/gradcam.npz), over the lesion
    patch when saved: a row per lesion (the first `lesions`), a column per phase map; None without the file."""
    if path is None or not Path(path).is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(path, allow_pickle=False) as saved:
        cams, names, maps = saved["gradcam"][:lesions], list(saved["lesion"]), list(saved["maps"])
        patches = saved["patch"][:lesions] if "patch" in saved.files and len(maps) > 1 else None
    figure, axes = plt.subplots(len(cams), len(maps), figsize=(1.8 * len(maps), 1.8 * len(cams)), squeeze=False)
    middle = cams.shape[2] // 2
    for row, cam in enumerate(cams):
        for col, name in enumerate(maps):
            if patches is not None:  # the lesion patch (CT window) under a translucent map
                axes[row, col].imshow(patches[row, col, middle], cmap="gray", vmin=-100, vmax=250)
            axes[row, col].imshow(cam[col, middle], cmap="inferno", vmin=0, vmax=1,
                                  alpha=None if patches is None else 0.5)
            axes[row, col].set_title(f"lesion {names[row]} {name}", fontsize=7)
            axes[row, col].axis("off")
    figure.tight_layout()
    return sink.add(figure, "gradcam")


def risk_curve_plot(risk, sink: ImageSink) -> str | None:
    """Step plot of a patient's cumulative risk after the landmark ((curve, inputs) of followup_risk.patient_risk)."""
    if risk is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, inputs = risk
    sample = inputs.set_index("input")["value"].get("sample", "no")
    figure, axes = plt.subplots(figsize=(6, 3.2))
    axes.step(curve["months_since_baseline"], curve["risk"], where="post", color="#c0392b")
    axes.axvline(curve["months_since_baseline"].iloc[0], color="grey", ls="--", lw=0.8, label="landmark (follow-up)")
    axes.set_ylim(0, 1)
    axes.set_xlabel("months since the baseline study")
    axes.set_ylabel("cumulative risk of the event")
    axes.set_title("Dynamic risk (landmark Cox on delta features)" + ("  [SAMPLE model]" if str(sample) != "no" else ""),
                   fontsize=9)
    axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return sink.add(figure, "risk_curve")
