"""Regions of interest for radiomics: lesions, peritumoral rings, background liver, whole liver, spleen.

All regions are binary masks (UInt8, 0/1) on the grid of the label map they come from (values per
`study.LABELS`). Names are stable and used in feature column names:

- ``tumour``: all tumour voxels; ``lesion1``, ``lesion2``, …: connected components (face connectivity),
  largest first; ``index``: the largest lesion (same voxels as ``lesion1``).
- ``ring<a>-<b>mm`` (default ``ring0-5mm``, ``ring5-10mm``): voxels whose physical distance to the tumour
  surface lies in (a, b] mm, never tumour, clipped to the liver (tumour + liver labels) or, when the label map
  has no liver, to the body mask given (else the whole image; the region's ``note`` says which).
- ``background_liver``: liver label minus all tumours dilated by ``margin_mm`` (physical distance).
- ``liver`` (whole organ: liver + tumour labels) and ``spleen`` on request.

Distances are physical (mm) with anisotropic spacing: the vector distance map gives, for every voxel centre,
the offset to the nearest tumour voxel centre; a quarter of the voxel extent along that offset is subtracted, which
places the surface between the outermost tumour voxel centres and the first outside ones. Ring volumes then match
analytic spherical shells within a few percent at clinical spacings (tested).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .lesions import label_lesions
from .study import LABELS, check_same_grid

log = logging.getLogger(__name__)

DEFAULT_RINGS_MM = ((0.0, 5.0), (5.0, 10.0))
DEFAULT_MARGIN_MM = 10.0
#: Region groups accepted by `build_regions(names=...)` / the CLI `--regions`.
REGION_GROUPS = ("tumour", "index", "lesions", "rings", "background_liver", "liver", "spleen")
DEFAULT_REGIONS = ("tumour", "index", "lesions", "rings", "background_liver")

#: Minimum region size per feature class: (voxels, dimensions with extent > 1). pyradiomics itself refuses single
#: voxels and regions flat in 2 of 3 axes; texture matrices need a 3x3x3 neighbourhood's worth of voxels to mean
#: anything; kinetics (mean/median) need one voxel.
MIN_SIZE = {
    "kinetics": (1, 0),
    "shape": (2, 2),
    "firstorder": (2, 2),
    "glcm": (27, 2),
    "glrlm": (27, 2),
    "glszm": (27, 2),
    "gldm": (27, 2),
    "ngtdm": (27, 2),
}


@dataclass
class Region:
    name: str
    kind: str  # tumour | index | lesion | ring | background_liver | liver | spleen
    mask: sitk.Image
    note: str = ""
    voxels: int = field(init=False)
    volume_ml: float = field(init=False)
    extent_dims: int = field(init=False)

    def __post_init__(self):
        arr = sitk.GetArrayViewFromImage(self.mask) > 0
        self.voxels = int(arr.sum())
        self.volume_ml = self.voxels * float(np.prod(self.mask.GetSpacing())) / 1000.0
        if self.voxels:
            idx = np.nonzero(arr)
            self.extent_dims = int(sum((i.max() - i.min()) > 0 for i in idx))
        else:
            self.extent_dims = 0

    def too_small_for(self, feature_class: str) -> str | None:
        """Reason why this region is too small for `feature_class`, or None when it is large enough."""
        return size_reason(self.voxels, self.extent_dims, feature_class, self.name)

    def describe(self) -> dict:
        return {"region": self.name, "kind": self.kind, "voxels": self.voxels,
                "volume_ml": round(self.volume_ml, 3), "note": self.note}


def size_reason(voxels: int, extent_dims: int, feature_class: str, name: str = "region") -> str | None:
    need_voxels, need_dims = MIN_SIZE.get(feature_class, MIN_SIZE["glcm"])
    if voxels == 0:
        return f"empty region: '{name}' has no voxels in this series"
    if voxels < need_voxels:
        what = "one-voxel region" if voxels == 1 else f"region of {voxels} voxels"
        return f"{what}: '{name}' is too small for {feature_class} (needs >= {need_voxels} voxels)"
    if extent_dims < need_dims:
        return (f"flat region: '{name}' extends in {extent_dims} axis/axes, {feature_class} needs >= {need_dims} "
                "(more than one voxel along at least two axes)")
    return None


def ring_name(inner_mm: float, outer_mm: float) -> str:
    return f"ring{_num(inner_mm)}-{_num(outer_mm)}mm"


def _num(x: float) -> str:
    return f"{x:g}"


def _binary(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image > 0, sitk.sitkUInt8)


def _from_array(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(like)
    return out


def lesion_map(labels: sitk.Image, tumour_label: int = LABELS["tumour"]) -> sitk.Image:
    """Instance map of the tumour label: 1 = largest lesion, 2 = next, … (`lesions.label_lesions`)."""
    return label_lesions(labels, tumour_label=tumour_label)


def surface_distance(mask: sitk.Image, max_mm: float) -> np.ndarray:
    """Physical distance (mm) of every voxel centre outside `mask` to the mask surface (0 inside).

    Computed on a crop around the mask extended by `max_mm`; voxels farther away get +inf.
    """
    arr = sitk.GetArrayViewFromImage(mask) > 0
    out = np.full(arr.shape, np.inf, dtype=np.float32)
    if not arr.any():
        return out
    spacing = np.array(mask.GetSpacing(), dtype=float)
    pad = np.ceil((max_mm + 2 * spacing.max()) / spacing).astype(int)[::-1]  # z, y, x
    idx = np.nonzero(arr)
    lo = np.maximum([i.min() for i in idx] - pad, 0)
    hi = np.minimum([i.max() + 1 for i in idx] + pad, arr.shape)
    crop = sitk.RegionOfInterest(mask, [int(v) for v in (hi - lo)[::-1]], [int(v) for v in lo[::-1]])
    dist = sitk.DanielssonDistanceMapImageFilter()
    dist.SetUseImageSpacing(True)
    dist.SetInputIsBinary(True)
    dist.Execute(_binary(crop))
    offset = sitk.GetArrayFromImage(dist.GetVectorDistanceMap()).astype(np.float64) * spacing  # (z,y,x,3) mm
    length = np.sqrt((offset ** 2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        # quarter voxel along the offset direction: 0.25 / |u / spacing| with u = offset / length
        voxel_extent = length / np.sqrt(((offset / spacing) ** 2).sum(-1))
    corrected = np.where(length > 0, length - 0.25 * voxel_extent, 0.0)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = corrected
    out[arr] = 0.0
    return out


def build_regions(labels: sitk.Image, names=DEFAULT_REGIONS, rings_mm=DEFAULT_RINGS_MM,
                  margin_mm: float = DEFAULT_MARGIN_MM, clip: str = "liver", body: sitk.Image | None = None,
                  label_values: dict | None = None, lesions: sitk.Image | None = None) -> dict[str, Region]:
    """Regions from a label map (values per `LABELS`, or `label_values` overriding them).

    `lesions`: the lesion instance map on `labels`' grid (default: `lesion_map(labels)`).
    `names` picks groups from REGION_GROUPS; `clip` is "liver" (falls back to `body` when the label map has no
    liver), "body" or "none". Regions that come out empty are kept (with voxels = 0) so callers can report them.
    """
    values = {**LABELS, **(label_values or {})}
    unknown = [n for n in names if n not in REGION_GROUPS]
    if unknown:
        raise InputError(f"Unknown region group(s) {unknown}: choose from {', '.join(REGION_GROUPS)}.")
    if clip not in ("liver", "body", "none"):
        raise InputError(f"Unknown clip '{clip}': use liver, body or none.")
    lab = sitk.GetArrayFromImage(labels)
    tumour = lab == values["tumour"]
    liver = lab == values["liver"]
    regions: dict[str, Region] = {}

    def add(name, kind, array, note=""):
        regions[name] = Region(name, kind, _from_array(array, labels), note)

    if "tumour" in names:
        add("tumour", "tumour", tumour)
    if "index" in names or "lesions" in names:
        if lesions is not None:
            check_same_grid(labels, lesions, "lesion instance map")
        instances = sitk.GetArrayFromImage(lesions if lesions is not None else lesion_map(labels, values["tumour"]))
        if "index" in names:
            add("index", "index", instances == 1, "largest lesion" if tumour.any() else "no tumour")
        if "lesions" in names:
            for k in range(1, int(instances.max()) + 1):
                add(f"lesion{k}", "lesion", instances == k)
    needs_distance = "rings" in names or "background_liver" in names
    if needs_distance:
        reach = max([b for _, b in rings_mm] + [margin_mm]) if rings_mm else margin_mm
        dist = surface_distance(_from_array(tumour, labels), reach)
    if "rings" in names:
        allowed, note = _clip_mask(clip, liver, tumour, body)
        for inner, outer in rings_mm:
            if not 0 <= inner < outer:
                raise InputError(f"Ring ({inner}, {outer}) mm: need 0 <= inner < outer.")
            ring = (dist > inner) & (dist <= outer) & ~tumour & allowed
            add(ring_name(inner, outer), "ring", ring, note)
    if "background_liver" in names:
        add("background_liver", "background_liver", liver & ~(dist <= margin_mm),
            f"liver label minus tumours dilated by {margin_mm:g} mm")
    if "liver" in names:
        add("liver", "liver", liver | tumour, "liver + tumour labels")
    if "spleen" in names:
        add("spleen", "spleen", lab == values["spleen"])
    return regions


def _clip_mask(clip: str, liver: np.ndarray, tumour: np.ndarray, body: sitk.Image | None):
    if clip == "none":
        return np.ones(liver.shape, bool), "not clipped"
    if clip == "liver" and liver.any():
        return liver | tumour, "clipped to the liver"
    if body is not None:
        return sitk.GetArrayFromImage(body) > 0, "clipped to the body mask" + (
            " (no liver label)" if clip == "liver" else "")
    return np.ones(liver.shape, bool), "not clipped (no liver label and no body mask)"


def body_mask(image: sitk.Image, threshold_hu: float = -500.0) -> sitk.Image:
    """Body of a CT image: largest connected component above `threshold_hu`, with its holes filled."""
    inside = sitk.Cast(image > threshold_hu, sitk.sitkUInt8)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(inside), sortByObjectSize=True) == 1
    return sitk.Cast(sitk.BinaryFillhole(largest), sitk.sitkUInt8)
