"""Foundation verbs: info, protocol-qc, models, demo."""
from __future__ import annotations

import logging
from pathlib import Path

from .common import add_phase_override, format_table, phase_overrides, verb

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- foundation: info, demo
@verb("info", "what a study folder (manifest, NIfTI/NRRD or DICOM) contains, with detected phases")
def cmd_info(args, progress):
    from ..io import load_study

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    print(format_table(study.summary(), title=f"Study {study.study_id}"))
    return 0



def _info_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json/yaml manifest) or DICOM folder")
    add_phase_override(p)


cmd_info.configure = _info_args


# A verb of its own, not part of cohort-extract: it reads DICOM headers only (seconds for a whole cohort, no pixels,
# no segmentation), it is run before extraction to decide on exclusion or harmonisation, and cohort-extract also
# takes NIfTI studies, which carry no acquisition headers.
@verb("protocol-qc", "acquisition protocol per DICOM series (kVp, slice, kernel, contrast timing, scanner) with "
      "outliers flagged per site -> OUT/protocol_qc/protocol.csv")
def cmd_protocol_qc(args, progress):
    from ..dicom.protocol import protocol_qc

    table = protocol_qc(args.cohort, args.out, z_limit=args.z_limit, rare_fraction=args.rare_fraction)
    flagged = table[table.outlier]
    print(format_table(flagged[["site", "modality", "description", "flags"]].to_dict("records") or
                       [{"result": f"no outlier among {len(table)} series"}],
                       title=f"Protocol QC: {len(flagged)} of {len(table)} series flagged"))
    return 0


def _protocol_qc_args(p):
    p.add_argument("cohort", type=Path, help="CSV with path (DICOM folder or file; relative to the CSV) and site "
                   "(or center) columns")
    p.add_argument("--z-limit", type=float, default=3.5, help="robust z (median/MAD) above which a value is flagged")
    p.add_argument("--rare-fraction", type=float, default=0.2,
                   help="a scanner/model/kernel used by fewer than this fraction of a site's series is flagged")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/protocol_qc/protocol.csv)")


cmd_protocol_qc.configure = _protocol_qc_args


@verb("models", "the shipped segmentation models (engine, modality, phases, labels, time, licence, SHA-256 check)")
def cmd_models(args, progress):
    from ..segmentation import catalog

    rows = catalog.rows()
    print(format_table(rows, title=f"Segmentation models ({catalog.CATALOG})"))
    return 0 if all(r["status"] in ("ok",) or r["status"].startswith("not installed") for r in rows) else 1


cmd_models.configure = lambda p: None


@verb("demo", "generate a phantom study, load it, summarise it and write a Slicer scene (.mrb)")
def cmd_demo(args, progress):
    from ..demo import run_demo

    result = run_demo(args.out, seed=args.seed, size=args.size, progress=progress, mode=args.mode,
                      registration_spacing_mm=args.registration_spacing, preset=args.preset,
                      truth_segmentation=args.segmentation == "truth")
    print(format_table(result.summary, title=f"Study {result.study_id}"))
    print(format_table(result.lesions, title="Ground-truth lesions") if result.lesions else "No lesions.")
    print(result.describe())
    print(f"HTML report: {result.written['report']}")
    return 0


def _demo_args(p):
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", choices=["small", "full"], default="full")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable",
                   help="registration mode (default deformable)")
    p.add_argument("--registration-spacing", type=float, default=4.0,
                   help="registration working resolution in mm (default 4)")
    p.add_argument("--preset", default=None, help="radiomics preset name or YAML file (default: by modality)")
    p.add_argument("--segmentation", choices=["model", "truth"], default="model",
                   help="segment with a model (default; its Dice against the truth is printed beside the TRE) or "
                        "enter the phantom's ground truth as your own segmentation")


cmd_demo.configure = _demo_args
