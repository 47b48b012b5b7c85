"""nnU-Net-style segmentation of liver and tumour on multi-phase (fused) input.

planner (fingerprint -> plans), network (DynUNet from plans), data (cases from studies/folders),
trainer (Dice+CE, augmentation, poly LR, checkpoints, k-fold), predictor (sliding window, TTA, resampling,
post-processing, lesion table), bundle (model folder with SHA-256 sums), nnunet (nnU-Net v2 interop).
Heavy dependencies (torch, monai) are imported inside functions.
"""
from .bundle import Bundle, default_bundle_path, load_bundle, save_bundle  # noqa: F401
from .data import Case, case_from_study, cases_from_folder  # noqa: F401
from .planner import fingerprint, load_plans, make_plans, save_plans  # noqa: F401
from .predictor import Segmentation, predict_case, segment_study  # noqa: F401
