"""Deep multi-phase fusion: a shared 3D CNN per phase, fused early, intermediate (phase tokens + attention) or
late, with clinical FiLM, modality dropout and binary / multiclass / Cox heads.

    from HCCFusionLib.deepfusion import DeepFusion
    model = DeepFusion(fusion="intermediate", kind="binary").fit(table, y)   # table: `patches` + clinical

Modules: `network` (torch modules), `losses` (BCE, CE, Cox partial likelihood with Breslow ties), `model` (the
estimator `fusion.evaluation.nested_cv` evaluates), `patches` (lesion patches from images or a run folder, and
their radiomics baseline), `evidence` (per-phase attention and Grad-CAM), `bundle` (safetensors + SHA-256).
"""
import importlib

_EXPORTS = {"DeepFusion": "model", "DeepFusionNet": "network", "cox_partial_likelihood": "losses",
            "save_deep_bundle": "bundle", "load_deep_bundle": "bundle", "explain": "evidence",
            "lesion_patches": "patches", "patches_from_run": "patches", "patch_radiomics": "patches"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
