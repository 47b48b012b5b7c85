"""Radiological display slices of a volume, whatever its direction cosines.

Every picture HCCFusion draws of a volume (report key images, registration QC) takes its pixels from
`display_slice`, and so do the label maps drawn over it, so both stay aligned:

- axial: patient right on the picture's left, anterior up;
- coronal: patient right on the left, superior up;
- sagittal: anterior on the left, superior up.

The volume is first reoriented to LPS with `sitk.DICOMOrient` (an exact permutation / flip of the voxels).
If its direction is then still oblique (more than `OBLIQUE_TOLERANCE` from the identity), the requested
slice is resampled (linear, or nearest neighbour for labels) onto an axis-aligned LPS grid with the same
spacing that covers the volume's physical bounding box; outside the volume the picture shows the volume's
minimum. The slice is chosen by a physical point (LPS mm), so the same point gives the same anatomical
slice for any storage order. `DisplaySlice.extent` is in mm, so `imshow(..., extent=extent)` keeps the
physical aspect ratio of anisotropic voxels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputError

VIEWS = ("axial", "coronal", "sagittal")
OBLIQUE_TOLERANCE = 1e-4
#: LPS axis normal to each view, and the LPS axes shown horizontally and vertically.
_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}
_IN_PLANE = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}


@dataclass(frozen=True)
class DisplaySlice:
    """A 2D picture of one slice: `array` row 0 is the top; `extent` (left, right, bottom, top) in LPS mm
    is what `imshow(array, extent=extent, origin="upper")` and `contour(..., origin="upper")` take."""

    array: np.ndarray
    extent: tuple[float, float, float, float]
    view: str
    index: int  # slice number (0-based) on the LPS grid, counted from right, anterior or inferior
    count: int  # slices on that grid along the view's normal
    resampled: bool  # True when the volume was oblique and the slice was resampled

    def to_display(self, point) -> tuple[float, float]:
        """Where the physical point (LPS mm) lies in the `extent` coordinates of this picture."""
        horizontal, vertical = _IN_PLANE[self.view]
        return float(point[horizontal]), float(point[vertical])

    @property
    def size_mm(self) -> tuple[float, float]:
        """Physical width and height of the picture (mm)."""
        left, right, bottom, top = self.extent
        return abs(right - left), abs(top - bottom)


def display_slice(image: sitk.Image, view: str = "axial", point=None, *, nearest: bool = False) -> DisplaySlice:
    """The `view` slice of a 3D `image` through the physical `point` (LPS mm; default: the volume's centre),
    in radiological convention. Use `nearest=True` for label maps (only matters for oblique volumes)."""
    if view not in VIEWS:
        raise InputError(f"Unknown view '{view}': use one of {', '.join(VIEWS)}.")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("Only a 3D scalar volume can be shown as a slice: give one series or label map.")
    if point is None:
        point = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    grid = sitk.DICOMOrient(image, "LPS")
    oblique = not np.allclose(np.reshape(grid.GetDirection(), (3, 3)), np.eye(3), atol=OBLIQUE_TOLERANCE)
    normal = _NORMAL[view]
    if oblique:
        plane, origin, spacing, index, count = _resampled_plane(grid, normal, point, nearest)
    else:
        origin, spacing, count = np.array(grid.GetOrigin()), np.array(grid.GetSpacing()), grid.GetSize()[normal]
        index = _nearest_index(point[normal], origin[normal], spacing[normal], count)
        plane = np.take(sitk.GetArrayViewFromImage(grid), index, axis=2 - normal)
    plane = np.array(plane if view == "axial" else plane[::-1])  # superior up for coronal / sagittal
    horizontal, vertical = _IN_PLANE[view]
    left, low = origin[horizontal] - spacing[horizontal] / 2, origin[vertical] - spacing[vertical] / 2
    right, high = left + plane.shape[1] * spacing[horizontal], low + plane.shape[0] * spacing[vertical]
    # axial: anterior (small y) at the top; coronal / sagittal: superior (large z) at the top
    extent = (left, right, high, low) if view == "axial" else (left, right, low, high)
    return DisplaySlice(plane, tuple(float(e) for e in extent), view, index, count, oblique)


def _nearest_index(coordinate: float, origin: float, spacing: float, count: int) -> int:
    return int(np.clip(round((coordinate - origin) / spacing), 0, count - 1))


def _resampled_plane(grid: sitk.Image, normal: int, point, nearest: bool):
    """One slice of an oblique (already nearly LPS) volume, resampled onto an axis-aligned LPS grid."""
    size, spacing = np.array(grid.GetSize()), np.array(grid.GetSpacing())
    corners = np.array([grid.TransformContinuousIndexToPhysicalPoint(
        [(-0.5 if bit == 0 else n - 0.5) for bit, n in zip(bits, size)]) for bits in np.ndindex(2, 2, 2)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    shape = np.maximum(np.ceil((high - low) / spacing - 1e-6).astype(int), 1)
    origin = low + spacing / 2
    count = int(shape[normal])
    index = _nearest_index(point[normal], origin[normal], spacing[normal], count)
    plane_origin, plane_shape = origin.copy(), shape.copy()
    plane_origin[normal] += index * spacing[normal]
    plane_shape[normal] = 1
    reference = sitk.Image([int(n) for n in plane_shape], grid.GetPixelID())
    reference.SetOrigin(plane_origin.tolist())
    reference.SetSpacing(spacing.tolist())
    background = float(np.min(sitk.GetArrayViewFromImage(grid)))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    resampled = sitk.Resample(grid, reference, sitk.Transform(), interpolator, background)
    plane = np.take(sitk.GetArrayViewFromImage(resampled), 0, axis=2 - normal)
    return plane, origin, spacing, index, count


def show(picture: DisplaySlice, vmin: float, vmax: float, *, cmap: str = "gray", width_in: float = 3.2):
    """A matplotlib (Agg) figure with `picture` filling it at its physical aspect ratio, on black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width_mm, height_mm = picture.size_mm
    figure, axes = plt.subplots(figsize=(width_in, width_in * height_mm / width_mm))
    figure.patch.set_facecolor("black")
    axes.imshow(picture.array, cmap=cmap, vmin=vmin, vmax=vmax, extent=picture.extent, origin="upper",
                interpolation="nearest")
    axes.set_axis_off()
    figure.subplots_adjust(0, 0, 1, 1)
    return figure, axes


def centroid(mask: sitk.Image, label: int = 1):
    """Physical centroid (LPS mm) of `label` in an integer label image, or None where it is absent."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask, sitk.sitkUInt32))
    return stats.GetCentroid(label) if stats.HasLabel(label) else None


def write_png(image: sitk.Image, path, vmin: float, vmax: float, *, view: str = "axial", point=None,
              cmap: str = "gray"):
    """Write the `view` slice of `image` through `point` as a PNG (atomically); returns the path."""
    import matplotlib.pyplot as plt

    from .files import atomic_write

    figure, _axes = show(display_slice(image, view, point), vmin, vmax, cmap=cmap)
    try:
        with atomic_write(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100, facecolor=figure.get_facecolor())
    finally:
        plt.close(figure)
    return path
