"""Every picture of a volume is radiological whatever the direction cosines (views.display_slice and its users).

One physical scene (LPS mm: +x patient left, +y posterior, +z superior) is sampled on grids stored as LPS,
RAS, a permuted axis order, and oblique (20° about z, from LPS and from RAS): a bright blob at patient
right-anterior (RA), a dim one at left-posterior (LP), a mid-grey one superior to RA (S). The tests find the
blobs in the display arrays and in the PNGs the report and the registration QC write, read back from disk.
"""
from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import report, views
from HCCFusionLib.errors import InputError
from HCCFusionLib.registration import quality
from HCCFusionLib.registration.study_registration import RegistrationResult
from HCCFusionLib.study import LABELS, Series, Study

EXTENT = np.array([80.0, 70.0, 60.0])  # physical size along LPS x, y, z (mm)
SPACING = np.array([1.0, 1.25, 2.5])  # anisotropic, per LPS axis
RA, LP, S = np.array([-25.0, -20.0, 0.0]), np.array([25.0, 20.0, 0.0]), np.array([-25.0, -20.0, 22.0])
BLOBS = ((RA, 11.0, 1000.0), (LP, 10.0, 120.0), (S, 6.0, 500.0))  # centre, radius (mm), value
#: index axis a -> (LPS axis, sign) for each storage; oblique ones are then rotated about z.
STORAGES = {"LPS": ((0, 1, 2), (1, 1, 1)), "RAS": ((0, 1, 2), (-1, -1, 1)), "permuted": ((2, 0, 1), (-1, 1, -1)),
            "oblique": ((0, 1, 2), (1, 1, 1)), "oblique_RAS": ((0, 1, 2), (-1, -1, 1))}
ALIGNED = ("LPS", "RAS", "permuted")
CT_GREY = {value: float(np.clip((value + 160) / 400, 0, 1)) for _c, _r, value in BLOBS}  # report CT window


def scene(storage: str) -> tuple[sitk.Image, sitk.Image]:
    """The phantom (float HU) and its labels (liver body, tumour = RA blob) on a grid stored as `storage`."""
    axes, signs = STORAGES[storage]
    direction = np.zeros((3, 3))
    for a, (axis, sign) in enumerate(zip(axes, signs)):
        direction[axis, a] = sign
    if storage.startswith("oblique"):
        angle = np.deg2rad(20.0)
        rotation = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        direction = np.array(rotation) @ direction
    spacing = SPACING[list(axes)]
    size = np.round(EXTENT[list(axes)] / spacing).astype(int)
    origin = -direction @ (spacing * (size - 1) / 2)
    index = np.indices(size[::-1])[::-1].reshape(3, -1)  # (i, j, k) of every voxel, numpy (k, j, i) order
    points = origin[:, None] + direction @ (spacing[:, None] * index)
    values = np.zeros(points.shape[1], np.float32)
    for centre, radius, value in BLOBS:
        values[np.linalg.norm(points - centre[:, None], axis=0) <= radius] = value
    body = (((points / (EXTENT[:, None] / 2 - 4)) ** 2).sum(axis=0) <= 1)
    labels = np.where(body, LABELS["liver"], 0).astype(np.uint8)
    labels[np.linalg.norm(points - RA[:, None], axis=0) <= BLOBS[0][1]] = LABELS["tumour"]
    images = []
    for array in (values, labels):
        image = sitk.GetImageFromArray(array.reshape(size[::-1]))
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(direction.ravel().tolist())
        images.append(image)
    return images[0], images[1]


def blob_centre(mask: np.ndarray) -> np.ndarray:
    """(row, column) of a blob as fractions of the picture's height and width (median of its pixels)."""
    found = np.argwhere(mask)
    assert len(found) >= 4, "marker not found in the picture"
    return np.median(found, axis=0) / np.array(mask.shape)


def near(array: np.ndarray, value: float, tol: float) -> np.ndarray:
    return np.abs(array - value) <= tol


def grey(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey level of a PNG read back (RGB mean) and where it is grey (not a coloured overlay)."""
    rgb = png[..., :3]
    return rgb.mean(axis=-1), np.ptp(rgb, axis=-1) < 0.02


# ---------------------------------------------------------------- the function
@pytest.mark.parametrize("storage", list(STORAGES))
def test_markers_land_on_radiological_sides(storage):
    image, _ = scene(storage)
    assert (storage not in ALIGNED) == views.display_slice(image).resampled
    axial = views.display_slice(image, "axial", RA).array
    ra, lp = blob_centre(axial > 900), blob_centre(near(axial, 120, 15))
    assert ra[0] < 0.5 and ra[1] < 0.5, f"RA blob should be top-left (anterior up, patient right left), at {ra}"
    assert lp[0] > 0.5 and lp[1] > 0.5, f"LP blob should be bottom-right, at {lp}"
    assert not near(axial, 500, 60).sum() > 10, "the superior blob is not on the axial slice through RA"
    coronal = views.display_slice(image, "coronal", RA).array
    ra, s = blob_centre(coronal > 900), blob_centre(near(coronal, 500, 60))
    assert ra[1] < 0.5 and s[1] < 0.5, f"patient right is on the coronal picture's left: RA {ra}, S {s}"
    assert s[0] < ra[0] - 0.2, f"superior is up on the coronal picture: RA {ra}, S {s}"
    sagittal = views.display_slice(image, "sagittal", RA).array
    ra, s = blob_centre(sagittal > 900), blob_centre(near(sagittal, 500, 60))
    assert ra[1] < 0.5 and s[1] < 0.5, f"anterior is on the sagittal picture's left: RA {ra}, S {s}"
    assert s[0] < ra[0] - 0.2, f"superior is up on the sagittal picture: RA {ra}, S {s}"


@pytest.mark.parametrize("view, size", [("axial", (80, 70)), ("coronal", (80, 60)), ("sagittal", (70, 60))])
def test_same_picture_and_physical_aspect_whatever_the_storage(view, size):
    pictures = [views.display_slice(scene(storage)[0], view, RA) for storage in ALIGNED]
    for picture in pictures[1:]:
        np.testing.assert_array_equal(picture.array, pictures[0].array)
        assert picture.extent == pytest.approx(pictures[0].extent) and picture.index == pictures[0].index
    assert pictures[0].size_mm == pytest.approx(size)
    rows, columns = pictures[0].array.shape  # anisotropic voxels: pixel counts differ from the mm ratio
    assert rows / columns != pytest.approx(size[1] / size[0], rel=0.05)
    oblique = views.display_slice(scene("oblique")[0], view, RA)
    assert oblique.size_mm[0] >= size[0] - 1e-6 and oblique.size_mm[1] >= size[1] - 1e-6  # bounding box


def test_labels_through_the_same_function_stay_aligned():
    for storage in STORAGES:
        image, labels = scene(storage)
        picture = views.display_slice(image, "axial", RA).array
        tumour = views.display_slice(labels, "axial", RA, nearest=True).array == LABELS["tumour"]
        bright = picture > 900
        assert (tumour & bright).sum() >= 0.9 * min(tumour.sum(), bright.sum()), storage


def test_centroid_and_errors():
    _, labels = scene("permuted")
    assert views.centroid(labels == LABELS["tumour"]) == pytest.approx(RA, abs=0.3)
    assert views.centroid(labels == 99) is None
    with pytest.raises(InputError, match="Unknown view"):
        views.display_slice(labels, "oblique")
    with pytest.raises(InputError, match="3D scalar volume"):
        views.display_slice(sitk.Image(4, 4, sitk.sitkUInt8))


# ---------------------------------------------------------------- the drawing paths, PNGs read back
def key_image(storage: str, folder, with_tumour: bool = True) -> np.ndarray:
    image, labels = scene(storage)
    if not with_tumour:
        labels = sitk.ChangeLabel(labels, {LABELS["tumour"]: LABELS["liver"]})
    html = report.write_report(report.ReportData("S-1", images={"PVP": image}, labels=labels), folder)
    return matplotlib.image.imread(html.parent / "images" / "key_PVP.png")


@pytest.mark.parametrize("storage", list(STORAGES))
def test_report_key_image_is_radiological(storage, tmp_path):
    png = key_image(storage, tmp_path / "report")
    level, plain = grey(png)
    ra, lp = blob_centre(plain & (level > 0.97)), blob_centre(plain & near(level, CT_GREY[120.0], 0.03))
    assert ra[0] < 0.5 and ra[1] < 0.5, f"RA blob should be top-left of the key image, at {ra}"
    assert lp[0] > 0.5 and lp[1] > 0.5, f"LP blob should be bottom-right of the key image, at {lp}"
    rgb = png[..., :3]
    yellow = (rgb[..., 0] > 0.8) & (rgb[..., 1] > 0.75) & (rgb[..., 2] < 0.3)  # tumour contour (#ffe600)
    ring, blob = np.argwhere(yellow), np.argwhere(plain & (level > 0.97))
    assert len(ring) > 20, "no tumour contour drawn"
    centre = lambda found: (found.min(axis=0) + found.max(axis=0)) / 2 / np.array(level.shape)  # noqa: E731
    assert np.abs(centre(ring) - centre(blob)).max() < 0.03, "the tumour contour surrounds the RA blob"
    height, width = png.shape[:2]
    expected = 70 / 80 if storage in ALIGNED else None
    if expected:
        assert height / width == pytest.approx(expected, rel=0.02)  # physical aspect, not voxel counts


@pytest.mark.parametrize("with_tumour", [True, False])
def test_report_same_picture_for_lps_ras_and_permuted(with_tumour, tmp_path):
    """The slice is chosen in physical space (lesion centroid, else the liver's largest cross-section)."""
    pngs = [key_image(storage, tmp_path / storage, with_tumour) for storage in ALIGNED]
    for png in pngs[1:]:
        np.testing.assert_array_equal(png, pngs[0])


@pytest.mark.parametrize("storage", list(STORAGES))
def test_registration_qc_pngs_are_radiological(storage, tmp_path):
    """The checkerboard PNG of the registration folder and the report's Registration section."""
    image, labels = scene(storage)
    study = Study("S-1")
    study.add(Series("PVP", "PVP", image, masks={"labels": labels}))
    study.add(Series("AP", "AP", image))
    result = RegistrationResult(
        "PVP", {name: sitk.Transform(3, sitk.sitkIdentity) for name in ("PVP", "AP")}, study,
        pd.DataFrame({"series": ["AP"], "warnings": [[]]}),
        {"AP": quality.checkerboard(image, image)}, {"AP": quality.difference(image, image)})
    folder = result.save(tmp_path / "registration")
    html = report.write_report(report.ReportData("S-1", labels=labels, registration_qc=result.qc,
                                                 registration_images=result.checkerboards), tmp_path / "report")
    for png in (folder / "qc" / "AP_checkerboard.png", html.parent / "images" / "checkerboard_AP.png"):
        level, _ = grey(matplotlib.image.imread(png))
        ra, lp = blob_centre(level > 0.97), blob_centre(near(level, 0.12, 0.03))  # scaled by the 1-99th percentiles
        assert ra[0] < 0.5 and ra[1] < 0.5, f"RA blob should be top-left of {png.name}, at {ra}"
        assert lp[0] > 0.5 and lp[1] > 0.5, f"LP blob should be bottom-right of {png.name}, at {lp}"
    difference = matplotlib.image.imread(folder / "qc" / "AP_difference.png")
    assert difference.shape == matplotlib.image.imread(folder / "qc" / "AP_checkerboard.png").shape


def test_real_ct_key_image_whatever_the_storage(shared_data, tmp_path):
    """A real CT slab (DICOM, LPS) with TotalSegmentator labels stored y-flipped, and both as RAS: one picture,
    liver on its left, spleen on its right, bone and table at the bottom (the reported bug showed RAS rotated 180°)."""
    from HCCFusionLib.io import load_study

    ct = next(iter(load_study(shared_data / "real" / "ct_dicom_slab"))).image
    total = sitk.ReadImage(str(shared_data / "real" / "ct_dicom_slab_labels.nii.gz"))
    assert np.reshape(total.GetDirection(), (3, 3))[1, 1] == -1  # the labels' NIfTI stores y flipped
    classes = sitk.GetArrayFromImage(total)
    ours = np.where(classes == 5, LABELS["liver"], np.where(classes == 1, LABELS["spleen"], 0)).astype(np.uint8)
    labels = sitk.GetImageFromArray(ours)
    labels.CopyInformation(total)
    on = lambda image, grid: sitk.Resample(image, grid, sitk.Transform(), sitk.sitkNearestNeighbor)  # noqa: E731
    storages = {"LPS": (ct, on(labels, ct)), "y_flipped": (on(ct, labels), labels),
                "RAS": (sitk.DICOMOrient(ct, "RAS"), sitk.DICOMOrient(labels, "RAS"))}
    pngs = []
    for name, (image, label_map) in storages.items():
        html = report.write_report(report.ReportData("real", images={"PVP": image}, labels=label_map), tmp_path / name)
        pngs.append(matplotlib.image.imread(html.parent / "images" / "key_PVP.png"))
    for png in pngs[1:]:
        np.testing.assert_array_equal(png, pngs[0])
    rgb = pngs[0][..., :3]
    liver = np.abs(rgb - [0xf2 / 255, 0xa6 / 255, 0x5a / 255]).max(axis=-1) < 0.1
    spleen = np.abs(rgb - [0xb7 / 255, 0x84 / 255, 0xd9 / 255]).max(axis=-1) < 0.1
    level, plain = grey(pngs[0])
    assert blob_centre(liver)[1] < 0.45, "the liver (patient right) is on the picture's left"
    assert blob_centre(spleen)[1] > 0.55, "the spleen (patient left) is on the picture's right"
    assert blob_centre(plain & (level > 0.97))[0] > 0.5, "bone and table (posterior) are in the lower half"
