"""PET and CEUS verbs: pet-suv (SUVbw/SUL images, per-lesion SUV table), ceus (perfusion fit, CEUS LI-RADS)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from .common import format_table, verb
from .report import run_folder_arg

log = logging.getLogger(__name__)


@verb("pet-suv", "PET DICOM -> SUVbw and SUL images (OUT/pet/suv.nii.gz, sul.nii.gz) and, with a segmentation, "
                 "per-lesion SUVmax/SUVpeak/SUVmean/MTV/TLG/TLR (OUT/pet/lesions.csv)")
def cmd_pet_suv(args, progress):
    import SimpleITK as sitk

    from ..dicom.read import scan_dicom
    from ..files import atomic_folder
    from ..io import load_study, read_image, save_image
    from ..layout import RunFolder
    from ..lesions import label_lesions
    from ..pet import PET_COLUMNS, lesion_suv_table, require_sul, scale, suv_factors
    from ..study import LABELS, Phase

    paths = RunFolder(args.out)
    series = load_study(args.pet).get(Phase.PET)  # a DICOM PET series is loaded as SUVbw (pet.suv_factors)
    if series is None or "suv_factor" not in series.meta:
        raise InputError(f"'{args.pet}' holds no DICOM PET series (Modality PT): give the PET DICOM folder.")
    headers, _ = scan_dicom([Path(f) for f in series.meta["files"]])
    factors = suv_factors([ds for _, ds in headers])
    progress(0.4, "SUV computed")
    labels_file = args.labels or paths.labels
    table = None
    if args.labels is not None or labels_file.is_file():
        labels = read_image(labels_file)
        if labels.GetSize() != series.image.GetSize() or labels.GetSpacing() != series.image.GetSpacing() \
                or labels.GetOrigin() != series.image.GetOrigin():
            log.info("labels resampled (nearest neighbour) onto the PET grid: they must be registered to the PET")
            labels = sitk.Resample(labels, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        lbm = None if factors.lbm is None else factors.lbm / factors.bw
        table = lesion_suv_table(series.image, label_lesions(labels),
                                 sitk.Cast(labels == LABELS["liver"], sitk.sitkUInt8), lbm)
    with atomic_folder(paths.pet, replace=True) as folder:
        save_image(series.image, folder / paths.pet_suv.name)
        if factors.lbm is not None:
            save_image(scale(series.image, factors.lbm / factors.bw), folder / paths.pet_sul.name)
        else:
            log.warning("no SUL: %s", _why(require_sul, factors))
        if table is not None:
            table.to_csv(folder / paths.pet_lesions.name, index=False)
    progress(1.0, "PET SUV written")
    print(f"SUVbw factor {factors.bw:.6g} g/mL per Bq/mL ({factors.how}) -> {paths.pet_suv}")
    if table is not None:
        units = ", ".join(f"{k}: {v}" for k, v in PET_COLUMNS.items() if k != "lesion")
        print(format_table(table.round(3).to_dict("records"), title=f"PET lesions ({units}) -> {paths.pet_lesions}"))
    return 0


def _why(check, factors) -> str:
    try:
        check(factors)
    except InputError as exc:
        return str(exc)
    return ""


def _pet_args(p):
    run_folder_arg(p)
    p.add_argument("--pet", type=Path, required=True, help="folder of the PET DICOM series")
    p.add_argument("--labels", type=Path, help="label map (study.LABELS; default OUT/segmentation/segmentation.nii.gz "
                                               "when present), registered to the PET")


cmd_pet_suv.configure = _pet_args


@verb("ceus", "CEUS cine (multi-frame US DICOM) + lesion and liver ROIs -> perfusion parameters "
              "(OUT/ceus/perfusion.csv) and CEUS LI-RADS v2017 (OUT/ceus/lirads.csv)")
def cmd_ceus(args, progress):
    import numpy as np
    import pandas as pd

    from ..ceus import (PARAMETERS, ceus_category, ceus_features, circle_roi, fit_perfusion, read_cine,
                        time_intensity_curve)
    from ..files import atomic_folder
    from ..layout import RunFolder

    paths = RunFolder(args.out)
    cine = read_cine(args.cine, injection_s=args.injection_s)
    curves, rows = {}, []
    for name, (x, y, r) in (("lesion", args.lesion), ("liver", args.liver)):
        curves[name] = time_intensity_curve(cine, circle_roi(cine, (x, y), r), args.dynamic_range_db)
        fit = fit_perfusion(cine.times_s, curves[name])
        rows += [{"roi": name, "parameter": k, "value": v, "unit": PARAMETERS[k]} for k, v in fit.items()]
        progress(0.3 if name == "lesion" else 0.6, f"{name} curve fitted")
    noise = float(np.median([r["value"] for r in rows if r["parameter"] == "fit_rmse"])
                  / max(float(np.max(curves["liver"]) - np.min(curves["liver"])), 1e-9))
    feats = ceus_features(cine.times_s, curves["lesion"], curves["liver"], noise=noise)
    category = ceus_category(feats, args.diameter_mm)
    evidence = pd.DataFrame([{"feature": f.name, "present": f.present, "value": f.value, "threshold": f.threshold,
                              "unit": f.unit, "confidence": f.confidence, "phase": f.phase, "evidence": f.evidence}
                             for f in feats.values()] +
                            [{"feature": "category", "present": None, "value": category, "threshold": None,
                              "unit": "CEUS LI-RADS v2017", "confidence": None, "phase": "",
                              "evidence": f"diameter {args.diameter_mm:g} mm"}])
    with atomic_folder(paths.ceus, replace=True) as folder:
        pd.DataFrame(rows).to_csv(folder / paths.ceus_perfusion.name, index=False)
        evidence.to_csv(folder / paths.ceus_lirads.name, index=False)
    progress(1.0, category)
    print(format_table([{**r, "value": round(r["value"], 4)} for r in rows], title=f"CEUS perfusion -> "
                       f"{paths.ceus_perfusion}"))
    print(f"CEUS LI-RADS v2017: {category} -> {paths.ceus_lirads}")
    return 0


def _ceus_args(p):
    run_folder_arg(p)
    p.add_argument("--cine", type=Path, required=True, help="multi-frame ultrasound DICOM of the contrast cine")
    for name in ("lesion", "liver"):
        p.add_argument(f"--{name}", type=float, nargs=3, required=True, metavar=("X_MM", "Y_MM", "R_MM"),
                       help=f"{name} ROI: circle centre (mm from the top-left pixel) and radius (mm)")
    p.add_argument("--dynamic-range-db", type=float, default=60.0,
                   help="log-compression dynamic range of the cine in dB (scanner setting; default 60)")
    p.add_argument("--diameter-mm", type=float, required=True, help="lesion diameter in mm (LI-RADS size)")
    p.add_argument("--injection-s", type=float, default=0.0, help="time of injection after the first frame (s)")


cmd_ceus.configure = _ceus_args
