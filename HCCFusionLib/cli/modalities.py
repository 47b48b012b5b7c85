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

    from ..files import atomic_folder
    from ..io import load_study, read_image, save_image
    from ..layout import RunFolder
    from ..lesions import label_lesions
    from ..pet import PET_COLUMNS, PetTagError, SuvFactors, lesion_suv_table, require_sul, scale
    from ..study import LABELS, Phase, same_grid

    paths = RunFolder(args.out)
    series = load_study(args.pet).get(Phase.PET)  # a DICOM PET series is loaded as SUVbw (pet.suv_factors)
    if series is None or "suv" not in series.meta:
        raise InputError(f"'{args.pet}' holds no DICOM PET series (Modality PT): give the PET DICOM folder.")
    factors = SuvFactors(**series.meta["suv"])
    try:
        sul = require_sul(factors, series.name) / factors.bw  # SUL per SUVbw
    except PetTagError as exc:
        sul = None
        log.warning("no SUL: %s", exc)
    progress(0.4, "SUV computed")
    labels_file = args.labels or paths.labels
    table = None
    if args.labels is not None or labels_file.is_file():
        labels = read_image(labels_file)
        if not same_grid(labels, series.image):
            log.info("labels resampled (nearest neighbour) onto the PET grid: they must be registered to the PET")
            labels = sitk.Resample(labels, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        table = lesion_suv_table(series.image, label_lesions(labels),
                                 sitk.Cast(labels == LABELS["liver"], sitk.sitkUInt8), sul)
    with atomic_folder(paths.pet, replace=True) as folder:
        save_image(series.image, folder / paths.pet_suv.name)
        if sul is not None:
            save_image(scale(series.image, sul), folder / paths.pet_sul.name)
        if table is not None:
            table.to_csv(folder / paths.pet_lesions.name, index=False)
    progress(1.0, "PET SUV written")
    print(f"SUVbw factor {factors.bw:.6g} g/mL per Bq/mL ({factors.how}) -> {paths.pet_suv}")
    if table is not None:
        units = ", ".join(f"{k}: {v}" for k, v in PET_COLUMNS.items() if k != "lesion")
        print(format_table(table.round(3).to_dict("records"), title=f"PET lesions ({units}) -> {paths.pet_lesions}"))
    return 0


def _pet_args(p):
    run_folder_arg(p)
    p.add_argument("--pet", type=Path, required=True, help="folder of the PET DICOM series")
    p.add_argument("--labels", type=Path, help="label map (study.LABELS; default OUT/segmentation/segmentation.nii.gz "
                                               "when present), registered to the PET")


cmd_pet_suv.configure = _pet_args


@verb("ceus", "CEUS cine (multi-frame US DICOM) + lesion and liver ROIs -> perfusion parameters "
              "(OUT/ceus/perfusion.csv) and CEUS LI-RADS v2017 (OUT/ceus/lirads.csv)")
def cmd_ceus(args, progress):
    from ..ceus import assess, circle_roi, read_cine
    from ..files import atomic_folder
    from ..layout import RunFolder

    paths = RunFolder(args.out)
    cine = read_cine(args.cine, injection_s=args.injection_s)
    perfusion, evidence, category = assess(cine, circle_roi(cine, args.lesion[:2], args.lesion[2]),
                                           circle_roi(cine, args.liver[:2], args.liver[2]),
                                           args.dynamic_range_db, args.diameter_mm)
    with atomic_folder(paths.ceus, replace=True) as folder:
        perfusion.to_csv(folder / paths.ceus_perfusion.name, index=False)
        evidence.to_csv(folder / paths.ceus_lirads.name, index=False)
    progress(1.0, category)
    print(format_table(perfusion.round({"value": 4}).to_dict("records"),
                       title=f"CEUS perfusion -> {paths.ceus_perfusion}"))
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
