"""Registration verb: register."""
from __future__ import annotations

from pathlib import Path

from .common import add_phase_override, format_table, phase_overrides, verb
from ..layout import RunFolder


# ---------------------------------------------------------------- registration: register
@verb("register", "register every series to a reference (rigid/affine/deformable), resample, stack -> OUT/registration/")
def cmd_register(args, progress):
    from ..io import load_study
    from ..registration import register_study

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    result = register_study(study, reference=args.reference, mode=args.mode,
                            mask=None if args.mask == "none" else args.mask, engine=args.engine, seed=args.seed,
                            progress=progress)
    out = result.save(RunFolder(args.out).registration)
    rows = [{"series": r["series"], "status": r["status"],
             "metric": f"{r['metric_before']:.3f} -> {r['metric_after']:.3f}",
             "max_disp_mm": f"{r['max_displacement_mm']:.1f}", "min_jacobian": f"{r['min_jacobian']:.2f}",
             "warnings": "; ".join(r["warnings"]) or "-"} for r in result.qc.to_dict("records")]
    print(format_table(rows, title=f"Registered to {result.reference} ({args.mode}) -> {out}"))
    return 0


def _register_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json manifest, NIfTI/NRRD files or DICOM)")
    add_phase_override(p)
    p.add_argument("--reference", default=None,
                   help="reference series or phase (default: PVP, else HBP, else T1, else the first series)")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable",
                   help="rigid (Euler3D), affine (rigid then affine) or deformable (then B-spline; default)")
    p.add_argument("--mask", choices=["liver", "none"], default="none",
                   help="align the reference's liver (its 'liver' mask or 'labels' map, dilated), not the body")
    p.add_argument("--engine", choices=["sitk", "elastix"], default="sitk",
                   help="SimpleITK (default) or itk-elastix with its default parameter maps")
    p.add_argument("--seed", type=int, default=0, help="seed of the metric's random sampling")
    p.add_argument("--out", type=Path, required=True, help="output folder; writes (or replaces, once complete) OUT/registration/")


cmd_register.configure = _register_args
