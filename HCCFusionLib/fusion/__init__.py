"""Fusion of imaging blocks (one per phase/sequence) and clinical data into predictions.

    from HCCFusionLib.fusion import FeatureFusion, DecisionFusion, SurvivalFusion
    model = FeatureFusion(classifier="logistic", selection="lasso", harmonize=True).fit(X, y)

Modules: `blocks` (block split and per-block preprocessing: ComBat, filters, LASSO/mRMR/univariate selection,
PCA), `feature_level`, `decision_level`, `cca` (CCA / sparse CCA of two views), `ordinal` (cumulative-logit
grade model), `survival`, `nomogram`, `evaluation` (nested CV, AUC with CI,
DeLong, calibration, decision curves, C-index, time-dependent AUC, Kaplan-Meier), `explain` (per-patient
contributions), `bundle` (skops model bundles with model card and SHA-256 sums), `data` (tables in),
`workflow` (what the `train`/`evaluate`/`predict` verbs do). Attributes load lazily (scikit-learn is heavy).
"""
import importlib

_EXPORTS = {
    "FeatureFusion": "feature_level", "DecisionFusion": "decision_level", "SurvivalFusion": "survival",
    "Nomogram": "nomogram", "nested_cv": "evaluation", "contributions": "explain", "save_bundle": "bundle",
    "load_bundle": "bundle", "split_blocks": "blocks", "ComBat": "blocks", "read_table": "data", "assemble": "data",
    "CCAFusion": "cca", "sparse_cca": "cca", "OrdinalLogistic": "ordinal",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
