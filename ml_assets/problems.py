"""Problem kinds: everything that differs between binary, multiclass and regression, in one place.

A contract's ``problem_type`` names a :class:`ProblemKind`; every stage asks it instead of
branching on the type: the contract (what a target must look like), training (the estimator and
its loss, label encoding, the target checks, scores and labels from a model, metrics, the primary
metric and its direction, the naive baseline, plots), batch scoring and the prediction log (the
output columns and their dtypes), serving (the JSON and OpenAPI shape of a prediction, the
Prometheus histogram buckets) and monitoring (which NannyML estimator and metrics apply).

Adding a kind (ranking, quantile regression) is one new subclass registered in :data:`KINDS`
(and its value in :class:`~ml_assets.contracts.model.ProblemType`).

Heavy libraries (CatBoost, scikit-learn, matplotlib) are imported inside the methods that use
them; the serving path uses only numpy here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import polars as pl

from ml_assets.contracts.model import Column, ColumnType, ProblemType

Save = Callable[[str, Any], None]
"""``save(name, figure)``: how a kind hands its plots back (see ``train.plots``)."""


def label_dtype(classes: Sequence[Any]) -> pl.DataType:
    """The polars type of a predicted label: that of the classes (bool, int, else text)."""
    if classes and all(isinstance(c, bool) for c in classes):
        return pl.Boolean()
    if classes and all(isinstance(c, int) for c in classes):
        return pl.Int64()
    return pl.String()


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - predicted probability| over equal-width bins, weighted by size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            err += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(err)


def _num(v: object) -> float:
    f = float(v) if isinstance(v, int | float) else float("nan")
    return round(f, 6) if math.isfinite(f) else float("nan")


class ProblemKind:
    """What one kind of learning problem means for every stage. Subclasses fill it in."""

    type: ClassVar[ProblemType]
    primary_metric: ClassVar[str]
    """The metric the promotion gate decides on."""
    higher_is_better: ClassVar[bool]
    loss_function: ClassVar[str]
    """CatBoost's loss (and eval metric for early stopping)."""
    is_classifier: ClassVar[bool]
    score_buckets: ClassVar[tuple[float, ...] | None]
    """Prometheus buckets of the score histogram; None: no single score to histogram."""
    nannyml_problem_type: ClassVar[str]
    nannyml_estimator: ClassVar[str]
    """Performance estimation without labels: ``CBPE`` (classification) or ``DLE``."""
    nannyml_metrics: ClassVar[tuple[str, ...]]
    """NannyML's names of the metrics monitored (the primary metric first)."""

    # --- the contract -------------------------------------------------------------------------

    def target_problem(self, column: Column) -> tuple[str, str] | None:
        """(field, why) when a label column cannot be this kind's target, else None."""
        raise NotImplementedError

    # --- training data ------------------------------------------------------------------------

    def classes(self, y: pl.Series) -> list[Any]:
        """The classes to learn, sorted (none for regression)."""
        return sorted(y.drop_nulls().unique().to_list())

    def target_data_problem(self, y: pl.Series, target: str) -> str | None:
        """Why these target values cannot train a model (None when they can)."""
        n_classes = y.n_unique()
        if n_classes < 2:
            return (
                f"target {target!r} has a single class {y.unique().to_list()}: "
                "a classifier needs two or more"
            )
        return None

    def encode(self, y: pl.Series, classes: Sequence[Any]) -> np.ndarray:
        """Targets as the estimator learns them: class indices in sorted class order (stable
        across runs and across train/test), or floats."""
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in y.to_list()], dtype=np.int64)

    # --- the model ----------------------------------------------------------------------------

    def estimator(self, **params: Any) -> Any:
        """An unfitted CatBoost estimator of this kind with its loss."""
        from catboost import CatBoostClassifier, CatBoostRegressor

        cls = CatBoostClassifier if self.is_classifier else CatBoostRegressor
        return cls(loss_function=self.loss_function, **params)

    def load_model(self, path: str) -> Any:
        """A CatBoost model saved in its native format."""
        from catboost import CatBoostClassifier, CatBoostRegressor

        model = CatBoostClassifier() if self.is_classifier else CatBoostRegressor()
        model.load_model(path)
        return model

    def scores(self, model: Any, x: Any, thread_count: int = -1) -> np.ndarray:
        """What the model says about each row (see :meth:`labels` for the decision)."""
        raise NotImplementedError

    def empty_scores(self, classes: Sequence[Any]) -> np.ndarray:
        """The scores of no rows, shaped like real ones."""
        return np.empty(0)

    def labels(self, scores: np.ndarray, classes: Sequence[Any]) -> list[Any] | None:
        """Predicted classes from scores (None for regression)."""
        return None

    # --- evaluation ---------------------------------------------------------------------------

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, classes: Sequence[Any]
    ) -> dict[str, float]:
        """The standard metrics (NaN where a metric is undefined on the rows)."""
        raise NotImplementedError

    def baseline(self, y_train: np.ndarray, rows: int, classes: Sequence[Any]) -> np.ndarray:
        """The naive model's scores for ``rows`` rows: training class rates (or the mean)."""
        raise NotImplementedError

    def plots(self, y: np.ndarray, scores: np.ndarray, metrics: dict[str, float],
              classes: Sequence[Any], save: Save) -> None:  # fmt: skip
        """The kind's evaluation plots (matplotlib figures handed to ``save``)."""
        raise NotImplementedError

    def target_stats(self, y: pl.Series) -> dict[str, Any]:
        """Label rates (share of each class) or target statistics (regression)."""
        counts = y.value_counts(sort=True)
        total = max(y.len(), 1)
        return {
            str(v): round(n / total, 6)
            for v, n in zip(counts.get_column(y.name), counts.get_column("count"), strict=True)
        }

    # --- outputs: batch scoring, the prediction log, serving ----------------------------------

    def output_schema(self, classes: Sequence[Any]) -> dict[str, pl.DataType]:
        """The prediction columns of scored rows and their types."""
        raise NotImplementedError

    def output_columns(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> dict[str, pl.Series]:
        """The prediction columns of scored rows (as :meth:`output_schema` declares them)."""
        raise NotImplementedError

    def prediction_json(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """One JSON object per row, as the HTTP and gRPC APIs answer."""
        raise NotImplementedError

    def prediction_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        """OpenAPI properties of one prediction object (besides ``key``)."""
        raise NotImplementedError

    # --- monitoring: how NannyML is fed -------------------------------------------------------

    def nannyml_proba(self, classes: Sequence[Any]) -> str | dict[str, str] | None:
        """NannyML's ``y_pred_proba``: the probability column, class -> column, or none."""
        return None

    def nannyml_label(self, column: pl.Expr, classes: Sequence[Any]) -> pl.Expr:
        """A label or predicted-label column as NannyML reads it for this kind."""
        return column.cast(pl.Float64)

    def histogram_values(self, scores: np.ndarray) -> np.ndarray | None:
        """What goes into the score histogram (None: nothing)."""
        return scores if self.score_buckets is not None else None


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
VALUE_BUCKETS = tuple(m * 10.0**e for e in range(-2, 8) for m in (1.0, 2.5, 5.0))  # log-spaced


class Classifier(ProblemKind):
    """What binary and multiclass share: classes, class rates, a label column and field."""

    is_classifier = True
    higher_is_better = True
    nannyml_estimator = "CBPE"

    def baseline(self, y_train: np.ndarray, rows: int, classes: Sequence[Any]) -> np.ndarray:
        return self.from_rates(np.bincount(y_train, minlength=len(classes)) / len(y_train), rows)

    def from_rates(self, rates: np.ndarray, rows: int) -> np.ndarray:
        """The naive scores of ``rows`` rows from the training class rates."""
        raise NotImplementedError

    def label_column(self, labels: list[Any] | None, classes: Sequence[Any]) -> pl.Series:
        return pl.Series(labels or [], dtype=label_dtype(classes), strict=False)

    def probability_json(self, scores: Any, classes: Sequence[Any]) -> dict[str, Any]:
        """The probability part of one row's prediction object."""
        raise NotImplementedError

    def probability_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def prediction_json(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> list[dict[str, Any]]:
        return [
            {"label": lab, **self.probability_json(row, classes)}
            for lab, row in zip(labels or [], scores.tolist(), strict=True)
        ]

    def prediction_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        label = {"description": "Predicted class.", "enum": list(classes)}
        return {"label": label, **self.probability_openapi(classes)}


class Binary(Classifier):
    """Two classes; the score is P(second class in sorted order), decided at 0.5."""

    type = ProblemType.BINARY
    primary_metric = "roc_auc"
    loss_function = "Logloss"
    score_buckets = PROBABILITY_BUCKETS
    nannyml_problem_type = "classification_binary"
    nannyml_metrics = ("roc_auc", "f1")

    def target_problem(self, column: Column) -> tuple[str, str] | None:
        if column.type is not ColumnType.BOOL and len(column.allowed or []) != 2:
            return "allowed", "a binary target must be bool or list exactly two allowed values"
        return None

    def scores(self, model: Any, x: Any, thread_count: int = -1) -> np.ndarray:
        proba = np.asarray(model.predict_proba(x, thread_count=thread_count), dtype=np.float64)
        return proba[:, 1]

    def labels(self, scores: np.ndarray, classes: Sequence[Any]) -> list[Any]:
        neg, pos = classes[0], classes[1]
        return [pos if p >= 0.5 else neg for p in scores.tolist()]

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, classes: Sequence[Any]
    ) -> dict[str, float]:
        from sklearn import metrics as skm

        p = np.clip(scores, 1e-15, 1 - 1e-15)
        both = len(np.unique(y)) == 2
        return {
            "rows": float(len(y)),
            "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
            "pr_auc": float(skm.average_precision_score(y, p)) if both else float("nan"),
            "log_loss": float(skm.log_loss(y, p, labels=[0, 1])),
            "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
            "accuracy": float(skm.accuracy_score(y, (p >= 0.5).astype(int))),
            "calibration_error": expected_calibration_error(y, p),
        }

    def from_rates(self, rates: np.ndarray, rows: int) -> np.ndarray:
        return np.full(rows, rates[1])

    def nannyml_proba(self, classes: Sequence[Any]) -> str | dict[str, str] | None:
        return "probability"

    def nannyml_label(self, column: pl.Expr, classes: Sequence[Any]) -> pl.Expr:
        # NannyML's binary metrics want 0/1: 1 for the positive (second) class.
        return (column.cast(pl.String) == str(classes[1])).cast(pl.Float64)

    def plots(self, y: np.ndarray, scores: np.ndarray, metrics: dict[str, float],
              classes: Sequence[Any], save: Save) -> None:  # fmt: skip
        if len(np.unique(y)) != 2:
            return
        from sklearn import metrics as skm

        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        fpr, tpr, _ = skm.roc_curve(y, scores)
        axes[0].plot(fpr, tpr, label=f"model AUC {metrics['roc_auc']:.3f}")
        axes[0].plot([0, 1], [0, 1], "--", color="grey", label="chance")
        axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        axes[0].legend(loc="lower right")
        prec, rec, _ = skm.precision_recall_curve(y, scores)
        axes[1].plot(rec, prec, label=f"model AP {metrics['pr_auc']:.3f}")
        axes[1].axhline(y.mean(), ls="--", color="grey", label="base rate")
        axes[1].set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
        axes[1].legend(loc="lower left")
        save("roc_pr", fig)

        fig, ax = plt.subplots(figsize=(5, 4.2))
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(scores, edges[1:-1]), 0, 9)
        pred = [scores[idx == b].mean() for b in range(10) if (idx == b).any()]
        obs = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
        ax.plot(pred, obs, "o-", label=f"model (ECE {metrics['calibration_error']:.3f})")
        ax.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration (test)")
        ax.legend(loc="upper left")
        save("calibration", fig)

    def output_schema(self, classes: Sequence[Any]) -> dict[str, pl.DataType]:
        return {"probability": pl.Float64(), "prediction": label_dtype(classes)}

    def output_columns(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> dict[str, pl.Series]:
        return {
            "probability": pl.Series(scores, dtype=pl.Float64),
            "prediction": self.label_column(labels, classes),
        }

    def probability_json(self, scores: Any, classes: Sequence[Any]) -> dict[str, Any]:
        return {"probability": scores}

    def probability_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        return {
            "probability": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": f"Probability of class {classes[1]!r}.",
            },
        }


class Multiclass(Classifier):
    """Three or more classes; scores are class probabilities, decided by argmax."""

    type = ProblemType.MULTICLASS
    primary_metric = "macro_f1"
    loss_function = "MultiClass"
    score_buckets = None
    nannyml_problem_type = "classification_multiclass"
    nannyml_metrics = ("f1", "roc_auc")

    def target_problem(self, column: Column) -> tuple[str, str] | None:
        if len(column.allowed or []) < 3:
            return "allowed", "a multiclass target must list at least three allowed values"
        return None

    def scores(self, model: Any, x: Any, thread_count: int = -1) -> np.ndarray:
        return np.asarray(model.predict_proba(x, thread_count=thread_count), dtype=np.float64)

    def empty_scores(self, classes: Sequence[Any]) -> np.ndarray:
        return np.empty((0, len(classes)))

    def labels(self, scores: np.ndarray, classes: Sequence[Any]) -> list[Any]:
        return [classes[k] for k in np.argmax(scores, axis=1).tolist()] if len(scores) else []

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, classes: Sequence[Any]
    ) -> dict[str, float]:
        from sklearn import metrics as skm

        labels = list(range(len(classes)))
        p = np.clip(scores, 1e-15, 1)
        return {
            "rows": float(len(y)),
            "macro_f1": float(skm.f1_score(y, p.argmax(axis=1), average="macro", labels=labels)),
            "log_loss": float(skm.log_loss(y, p, labels=labels)),
            "accuracy": float(skm.accuracy_score(y, p.argmax(axis=1))),
        }

    def from_rates(self, rates: np.ndarray, rows: int) -> np.ndarray:
        return np.tile(rates, (rows, 1))

    def nannyml_proba(self, classes: Sequence[Any]) -> str | dict[str, str] | None:
        return {str(c): f"probability_{c}" for c in classes}

    def nannyml_label(self, column: pl.Expr, classes: Sequence[Any]) -> pl.Expr:
        return column.cast(pl.String)  # the class names, matching the proba dict's keys

    def plots(self, y: np.ndarray, scores: np.ndarray, metrics: dict[str, float],
              classes: Sequence[Any], save: Save) -> None:  # fmt: skip
        from sklearn import metrics as skm

        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        ticks = range(len(classes))
        cm = skm.confusion_matrix(y, scores.argmax(axis=1), labels=list(ticks))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(ticks, [str(c) for c in classes], rotation=30, ha="right")
        ax.set_yticks(ticks, [str(c) for c in classes])
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
        save("confusion", fig)

    def output_schema(self, classes: Sequence[Any]) -> dict[str, pl.DataType]:
        return {
            **{f"probability_{c}": pl.Float64() for c in classes},
            "prediction": label_dtype(classes),
        }

    def output_columns(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> dict[str, pl.Series]:
        out = {
            f"probability_{c}": pl.Series(scores[:, i], dtype=pl.Float64)
            for i, c in enumerate(classes)
        }
        out["prediction"] = self.label_column(labels, classes)
        return out

    def probability_json(self, scores: Any, classes: Sequence[Any]) -> dict[str, Any]:
        return {"probabilities": dict(zip(map(str, classes), scores, strict=True))}

    def probability_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        return {
            "probabilities": {
                "type": "object",
                "properties": {str(c): {"type": "number"} for c in classes},
                "description": "Probability of every class.",
            },
        }


class Regression(ProblemKind):
    """A number; the score is the predicted value."""

    type = ProblemType.REGRESSION
    primary_metric = "rmse"
    higher_is_better = False
    loss_function = "RMSE"
    is_classifier = False
    score_buckets = VALUE_BUCKETS
    nannyml_problem_type = "regression"
    nannyml_estimator = "DLE"
    nannyml_metrics = ("rmse", "mae")

    def target_problem(self, column: Column) -> tuple[str, str] | None:
        if column.type not in (ColumnType.INT, ColumnType.FLOAT):
            return "type", "a regression target must be int or float"
        return None

    def classes(self, y: pl.Series) -> list[Any]:
        return []

    def target_data_problem(self, y: pl.Series, target: str) -> str | None:
        if y.cast(pl.Float64).std() in (0.0, None):
            return f"target {target!r} is constant: nothing to learn"
        return None

    def encode(self, y: pl.Series, classes: Sequence[Any]) -> np.ndarray:
        return y.cast(pl.Float64).to_numpy()

    def scores(self, model: Any, x: Any, thread_count: int = -1) -> np.ndarray:
        return np.asarray(model.predict(x, thread_count=thread_count), dtype=np.float64)

    def metrics(
        self, y: np.ndarray, scores: np.ndarray, classes: Sequence[Any]
    ) -> dict[str, float]:
        from sklearn import metrics as skm

        return {
            "rows": float(len(y)),
            "rmse": float(math.sqrt(skm.mean_squared_error(y, scores))),
            "mae": float(skm.mean_absolute_error(y, scores)),
            "r2": float(skm.r2_score(y, scores)) if len(y) > 1 else float("nan"),
        }

    def baseline(self, y_train: np.ndarray, rows: int, classes: Sequence[Any]) -> np.ndarray:
        return np.full(rows, float(y_train.mean()))

    def plots(self, y: np.ndarray, scores: np.ndarray, metrics: dict[str, float],
              classes: Sequence[Any], save: Save) -> None:  # fmt: skip
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        axes[0].scatter(y, scores, s=3, alpha=0.3)
        lo, hi = float(min(y.min(), scores.min())), float(max(y.max(), scores.max()))
        axes[0].plot([lo, hi], [lo, hi], "--", color="grey")
        axes[0].set(
            xlabel="actual",
            ylabel="predicted",
            title=f"Predicted vs actual (RMSE {metrics['rmse']:.1f})",
        )
        axes[1].hist(scores - y, bins=50)
        axes[1].set(xlabel="residual (predicted - actual)", ylabel="rows", title="Residuals (test)")
        save("residuals", fig)

    def target_stats(self, y: pl.Series) -> dict[str, Any]:
        if y.len() == 0:
            return {}
        return {
            "mean": _num(y.mean()),
            "std": _num(y.std()),
            "min": _num(y.min()),
            "max": _num(y.max()),
        }

    def output_schema(self, classes: Sequence[Any]) -> dict[str, pl.DataType]:
        return {"prediction": pl.Float64()}

    def output_columns(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> dict[str, pl.Series]:
        return {"prediction": pl.Series(scores, dtype=pl.Float64)}

    def prediction_json(
        self, scores: np.ndarray, labels: list[Any] | None, classes: Sequence[Any]
    ) -> list[dict[str, Any]]:
        return [{"value": v} for v in scores.tolist()]

    def prediction_openapi(self, classes: Sequence[Any]) -> dict[str, Any]:
        return {"value": {"type": "number", "description": "Predicted value."}}


KINDS: dict[ProblemType, ProblemKind] = {k.type: k for k in (Binary(), Multiclass(), Regression())}


def problem_kind(problem_type: ProblemType | str) -> ProblemKind:
    """The kind of a contract's ``problem_type``."""
    return KINDS[ProblemType(problem_type)]
