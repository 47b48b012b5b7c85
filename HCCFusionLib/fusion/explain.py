"""Per-patient contributions, with the measured values and definitions a reader can check.

- Linear models (logistic classifier, Cox): exact. Every block pipeline is "values -> standardised z"
  followed by an affine map (filters, selection, PCA), so the model's log-odds (or Cox risk) is
  baseline + sum_j c_j * z_j; the contribution of measured feature j is c_j * z_j (log-odds units).
- Trees (random forest, gradient boosting): decision-path contributions (Saabas): along each tree's path the
  change of the node value is credited to the split feature; they sum exactly to the prediction minus the
  training mean (probability units for random forests, log-odds for gradient boosting). This is not SHAP
  (shap is not a dependency: it pulls numba/llvmlite); it is exact as a decomposition but, unlike SHAP, ordered
  by the tree's path.
- Decision-level fusion: each block's calibrated log-odds enters the final logistic step linearly for
  'stack' and 'bayes', so block contributions are exact and split further into that block's feature
  contributions when its base model is linear; for 'weighted', 'vote' and 'majority' a block's contribution is
  the change of the log-odds when the block is left out (kind 'leave-one-block-out', not additive).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ModelError
from .blocks import block_of
from .logistic import logit

COLUMNS = ["patient_id", "name", "kind", "block", "value", "z", "contribution", "units"]


def _affine(post, width: int):
    """(A, offset) with post(z) = z @ A + offset for the affine 'post' pipeline of a block."""
    zero = post.transform(np.zeros((1, width)))
    return post.transform(np.eye(width)) - zero, zero[0]


def _measured(X: pd.DataFrame, name: str):
    """Measured value behind an encoded clinical name ('log10_afp' -> afp, 'etiology=HCV' -> etiology)."""
    column = name.split("=", 1)[0]
    column = column[len("log10_"):] if column.startswith("log10_") and column[len("log10_"):] in X.columns else column
    return (column, X[column]) if column in X.columns else (name, pd.Series(np.nan, index=X.index))


def linear_terms(pipeline, X: pd.DataFrame, coef: np.ndarray, intercept: float):
    """(terms, baseline): per-feature terms c_j z_j of a `blocks -> linear model` pipeline, and the constant."""
    transformer = pipeline.named_steps["blocks"]
    rows, baseline, start = [], float(intercept), 0
    for name, block, columns in transformer.transformers_:
        if name == "remainder" or block == "drop":
            continue
        prep, post = block.named_steps["prep"], block.named_steps["post"]
        z = prep.transform(X[columns])
        A, offset = _affine(post, z.shape[1])
        w = coef[start:start + A.shape[1]]
        start += A.shape[1]
        weights = A @ w
        baseline += float(offset @ w)
        names = prep.get_feature_names_out()
        for j, feature in enumerate(names):
            if weights[j] == 0:
                continue
            column, values = _measured(X, str(feature))
            rows.append(pd.DataFrame({"patient_id": X.index, "name": column, "kind": "feature", "block": name,
                                      "value": values.to_numpy(), "z": z[:, j], "contribution": z[:, j] * weights[j]}))
    if start != len(coef):
        raise ModelError("Internal mismatch between the model's coefficients and its preprocessed features.")
    terms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS[:-1])
    return terms, baseline


def contributions(model, X: pd.DataFrame, target=None) -> pd.DataFrame:
    """Long table (COLUMNS) of per-patient contributions for a fitted FeatureFusion/SurvivalFusion/DecisionFusion.

    Rows of kind 'baseline' hold the constant so that baseline + sum(features) reproduces the model output
    (log-odds of `target`, default the positive/last class; Cox risk score for survival).
    """
    from .decision_level import DecisionFusion
    from .survival import SurvivalFusion

    if isinstance(model, DecisionFusion):
        return _decision_contributions(model, X)
    pipeline = model.pipeline_
    final = pipeline.named_steps["model"]
    if isinstance(model, SurvivalFusion):
        coef = np.asarray(final.coef_, dtype=float).reshape(len(final.coef_), -1)[:, -1]
        terms, _ = linear_terms(pipeline, model._checked(X), coef, 0.0)
        # the Cox model centres features internally: its constant is the risk minus the feature terms
        baseline = model.predict(X) - terms.groupby("patient_id", sort=False).contribution.sum().reindex(
            X.index, fill_value=0.0).to_numpy()
        return _with_baseline(terms, X.index, float(np.median(baseline)), "Cox risk score")
    X = model._checked(X)
    if hasattr(final, "thresholds_"):  # ordinal: the latent grade score x.beta (cumulative log-odds scale)
        terms, baseline = linear_terms(pipeline, X, final.coef_, 0.0)
        return _with_baseline(terms, X.index, baseline, "ordinal log-odds")
    if hasattr(final, "coef_"):
        k = _class_index(model, target)
        coef = final.coef_[0] * (1 if k == 1 else -1) if final.coef_.shape[0] == 1 else final.coef_[k]
        intercept = final.intercept_[0] * (1 if k == 1 else -1) if final.coef_.shape[0] == 1 else final.intercept_[k]
        if "cca" in pipeline.named_steps:  # canonical variates are linear in the block features
            coef, intercept = pipeline.named_steps["cca"].pullback(coef, intercept)
        terms, baseline = linear_terms(pipeline, X, coef, intercept)
        return _with_baseline(terms, X.index, baseline, "log-odds")
    if hasattr(final, "estimators_") or hasattr(final, "tree_"):
        return _tree_contributions(model, X, _class_index(model, target))
    raise ModelError(f"Contributions are available for logistic, random-forest and gradient-boosting models, not "
                     f"'{type(final).__name__}': retrain with --classifier logistic for exact explanations.")


def _class_index(model, target) -> int:
    classes = list(model.classes_)
    if target is None:
        return len(classes) - 1
    if target not in classes:
        raise ModelError(f"Class '{target}' is not one of the model's classes {classes}.")
    return classes.index(target)


def _with_baseline(terms: pd.DataFrame, index, baseline: float, units: str) -> pd.DataFrame:
    base = pd.DataFrame({"patient_id": index, "name": "baseline", "kind": "baseline", "block": "",
                         "value": np.nan, "z": np.nan, "contribution": baseline})
    return pd.concat([base, terms], ignore_index=True).assign(units=units)[COLUMNS]


def _tree_contributions(model, X: pd.DataFrame, k: int) -> pd.DataFrame:
    final = model.pipeline_.named_steps["model"]
    Z = model.pipeline_.named_steps["blocks"].transform(X)
    names = model.pipeline_.named_steps["blocks"].get_feature_names_out()
    boosted = hasattr(final, "learning_rate")
    if boosted and len(model.classes_) != 2:
        raise ModelError("Gradient-boosting contributions are available for binary endpoints only.")
    trees = [t[0] for t in final.estimators_] if boosted else list(final.estimators_)
    scale = final.learning_rate if boosted else 1.0 / len(trees)
    contrib = sum(_path_contributions(t.tree_, Z, k) for t in trees) * scale
    output = final.decision_function(Z) if boosted else final.predict_proba(Z)[:, k]
    baseline = output - contrib.sum(axis=1)  # boosting: initial log-odds + root values; forest: mean root value
    rows = []
    for j, name in enumerate(names):
        if not contrib[:, j].any():
            continue
        column, values = _measured(X, str(name))
        rows.append(pd.DataFrame({"patient_id": X.index, "name": column, "kind": "feature",
                                  "block": block_of(str(name)), "value": values.to_numpy(), "z": Z[:, j],
                                  "contribution": contrib[:, j]}))
    terms = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS[:-1])
    out = _with_baseline(terms, X.index, 0.0, "log-odds" if boosted else "probability")
    out.loc[out.kind == "baseline", "contribution"] = baseline
    return out


def _path_contributions(tree, Z, k) -> np.ndarray:
    """Saabas contributions (n, features) of one fitted sklearn `Tree` for class k (or its regression output)."""
    value = tree.value[:, 0, :]
    node_value = value[:, 0] if value.shape[1] == 1 else value[:, k] / value.sum(axis=1)
    paths = tree.decision_path(np.ascontiguousarray(Z, dtype=np.float32))
    out = np.zeros(Z.shape)
    for i in range(len(Z)):
        nodes = paths.indices[paths.indptr[i]:paths.indptr[i + 1]]
        np.add.at(out[i], tree.feature[nodes[:-1]], node_value[nodes[1:]] - node_value[nodes[:-1]])
    return out


def _decision_contributions(model, X: pd.DataFrame) -> pd.DataFrame:
    if len(model.classes_) != 2:
        raise ModelError("Decision-level contributions are available for binary endpoints only.")
    rows = []
    for sel, key, P in model._by_subset(X):
        blocks = key.split("+")
        index = X.index[sel]
        combiner = model.combiners_[key]
        scores = logit(P[:, :, 1])  # (n, blocks) calibrated log-odds of each block
        method = combiner.method
        if method in ("stack", "bayes"):
            if method == "stack":
                weights, base = combiner.coef_[1:], np.full(len(index), combiner.coef_[0])
            else:
                prior = logit(model.prior_[1])
                weights = np.full(len(blocks), combiner.coef_[1])
                base = np.full(len(index), combiner.coef_[0] + combiner.coef_[1] * prior)
                scores = scores - prior
            rows.append(pd.DataFrame({"patient_id": index, "name": "baseline", "kind": "baseline", "block": "",
                                      "value": np.nan, "z": np.nan, "contribution": base}))
            for b, block in enumerate(blocks):
                rows.append(pd.DataFrame({"patient_id": index, "name": block, "kind": "block", "block": block,
                                          "value": logit(P[:, b, 1]), "z": np.nan,
                                          "contribution": weights[b] * scores[:, b]}))
                rows.append(_block_features(model, block, X.loc[index], weights[b]))
        else:
            full = logit(combiner.predict_proba(P)[:, 1])
            for b, block in enumerate(blocks):
                rest = "+".join(k for k in blocks if k != block)
                if rest and rest not in model.combiners_:
                    continue
                without = (logit(model.combiners_[rest].predict_proba(np.delete(P, b, axis=1))[:, 1]) if rest
                           else np.full(len(index), logit(model.prior_[1])))  # no block left: the prior
                rows.append(pd.DataFrame({"patient_id": index, "name": block, "kind": "leave-one-block-out",
                                          "block": block, "value": logit(P[:, b, 1]), "z": np.nan,
                                          "contribution": full - without}))
    return pd.concat(rows, ignore_index=True).assign(units="log-odds")[COLUMNS]


def _block_features(model, block: str, X: pd.DataFrame, weight: float) -> pd.DataFrame:
    """Feature terms of one block inside the fused log-odds: weight x calibration slope x linear base terms."""
    calibrated = model.block_models_[block]
    final = calibrated.estimator_.named_steps["model"]
    if not hasattr(final, "coef_"):
        return pd.DataFrame(columns=COLUMNS[:-1])
    terms, _ = linear_terms(calibrated.estimator_, X, final.coef_[0], final.intercept_[0])
    # base log-odds = baseline + sum(terms); block score = a + slope * base log-odds
    return terms.assign(contribution=terms.contribution * weight * calibrated.calibrator_[1])


def top_contributions(contributions: pd.DataFrame, patient_id, n: int = 15) -> pd.DataFrame:
    """The `n` largest feature contributions (by magnitude, stable order) of one patient of a `contributions`
    table: its name, block, value and contribution columns. Rows of other kinds (blocks) are left out; the
    patient filter applies only when the table holds several patients."""
    frame = contributions
    if "kind" in frame.columns:
        frame = frame[frame["kind"] == "feature"]
    if "patient_id" in frame.columns and frame["patient_id"].nunique() > 1:
        frame = frame[frame["patient_id"].astype(str) == str(patient_id)]
    keep = [c for c in ("name", "block", "value", "contribution") if c in frame.columns]
    order = frame["contribution"].abs().sort_values(ascending=False, kind="stable").index
    return frame.loc[order[:n], keep].reset_index(drop=True)
