"""Evaluation plots, saved as PNG: what people would rather look at than read.

The problem kind draws its own plots (ROC/PR and calibration, a confusion matrix, residuals);
every kind gets the feature importance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ml_assets.train.core import Evaluation, Problem


def evaluation_plots(
    model,
    evaluation: Evaluation,
    problem: Problem,
    folder: Path,
) -> dict[str, Path]:
    """Write the plots of the problem kind into ``folder``; return them by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, fig: Any) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out[name] = path

    problem.kind.plots(evaluation.y, evaluation.scores, evaluation.metrics, problem.classes, save)

    importances = np.asarray(model.get_feature_importance(), dtype=float)
    order = np.argsort(importances)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(order) + 1.2))
    ax.barh([problem.features[i] for i in order], importances[order])
    ax.set(xlabel="importance (CatBoost PredictionValuesChange)", title="Feature importance")
    save("feature_importance", fig)
    return out
