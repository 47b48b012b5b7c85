"""Synthetic data verbs: phantom, phantom-cohort (through `demo`, the only library user of `phantom`)."""
from __future__ import annotations

import logging
from pathlib import Path

from .common import format_table, verb

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- phantoms: phantom, phantom-cohort
@verb("phantom", "write a synthetic patient (study folder + truth/: labels, lesions, landmarks, transforms)")
def cmd_phantom(args, progress):
    from ..demo import write_phantom

    patient = write_phantom(args.out, args.seed, args.size, mri=args.mri, n_tumours=args.tumours,
                            misalignment=args.misalignment, mr_agent=args.mr_agent, progress=progress)
    print(format_table(patient.study.summary(), title=f"Phantom {patient.study.study_id} -> {args.out}"))
    return 0


def _phantom_args(p):
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=["small", "medium", "full"], default="small")
    p.add_argument("--mri", action="store_true", help="add T1, T2, ADC and HBP series")
    p.add_argument("--mr-agent", choices=["extracellular", "gadoxetate"],
                   help="an MRI study instead of CT: T1 dynamic (MR_PRE, MR_AP, MR_PVP, TP, + HBP with gadoxetate), T2, "
                        "DWI b50/400/800 and ADC")
    p.add_argument("--tumours", type=int, default=None, help="number of tumours (default: 0-3 at random)")
    p.add_argument("--misalignment", choices=["deformable", "rigid", "none"], default="deformable")


cmd_phantom.configure = _phantom_args


@verb("phantom-cohort", "write a simulated cohort: clinical.csv (with endpoints), features.csv, latent.csv")
def cmd_phantom_cohort(args, progress):
    from ..demo import write_phantom_cohort

    write_phantom_cohort(args.out, args.n, args.seed, centers=args.centers)
    progress(1.0, "done")
    log.info("cohort of %d patients written to %s", args.n, args.out)
    return 0


def _phantom_cohort_args(p):
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--centers", type=int, default=3)


cmd_phantom_cohort.configure = _phantom_cohort_args
