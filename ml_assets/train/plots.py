"""Evaluation plots, saved as PNG: what people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml_assets.contracts.model import ProblemType
from ml_assets.train.core import Evaluation, Problem


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def evaluation_plots(
    model,
    evaluation: Evaluation,
    problem: Problem,
    folder: Path,
) -> dict[str, Path]:
    """Write the plots of the problem type into ``folder``; return them by name."""
    from sklearn import metrics as skm

    plt = _figure()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    y, s = evaluation.y, evaluation.scores

    def save(name: str, fig) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out[name] = path

    if problem.problem_type is ProblemType.BINARY and len(np.unique(y)) == 2:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        fpr, tpr, _ = skm.roc_curve(y, s)
        axes[0].plot(fpr, tpr, label=f"model AUC {evaluation.metrics['roc_auc']:.3f}")
        axes[0].plot([0, 1], [0, 1], "--", color="grey", label="chance")
        axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        axes[0].legend(loc="lower right")
        prec, rec, _ = skm.precision_recall_curve(y, s)
        axes[1].plot(rec, prec, label=f"model AP {evaluation.metrics['pr_auc']:.3f}")
        axes[1].axhline(y.mean(), ls="--", color="grey", label="base rate")
        axes[1].set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
        axes[1].legend(loc="lower left")
        save("roc_pr", fig)

        fig, ax = plt.subplots(figsize=(5, 4.2))
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(s, edges[1:-1]), 0, 9)
        pred = [s[idx == b].mean() for b in range(10) if (idx == b).any()]
        obs = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
        ax.plot(pred, obs, "o-", label=f"model (ECE {evaluation.metrics['calibration_error']:.3f})")
        ax.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration (test)")
        ax.legend(loc="upper left")
        save("calibration", fig)
    elif problem.problem_type is ProblemType.MULTICLASS:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        cm = skm.confusion_matrix(y, s.argmax(axis=1), labels=list(range(len(problem.classes))))
        ax.imshow(cm, cmap="Blues")
        ticks = range(len(problem.classes))
        ax.set_xticks(ticks, [str(c) for c in problem.classes], rotation=30, ha="right")
        ax.set_yticks(ticks, [str(c) for c in problem.classes])
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
        save("confusion", fig)
    elif problem.problem_type is ProblemType.REGRESSION:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        axes[0].scatter(y, s, s=3, alpha=0.3)
        lo, hi = float(min(y.min(), s.min())), float(max(y.max(), s.max()))
        axes[0].plot([lo, hi], [lo, hi], "--", color="grey")
        axes[0].set(
            xlabel="actual",
            ylabel="predicted",
            title=f"Predicted vs actual (RMSE {evaluation.metrics['rmse']:.1f})",
        )
        axes[1].hist(s - y, bins=50)
        axes[1].set(xlabel="residual (predicted - actual)", ylabel="rows", title="Residuals (test)")
        save("residuals", fig)

    importances = np.asarray(model.get_feature_importance(), dtype=float)
    order = np.argsort(importances)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    ax.barh([problem.features[i] for i in order], importances[order])
    ax.set(xlabel="importance (CatBoost PredictionValuesChange)", title="Feature importance")
    save("feature_importance", fig)
    return out
