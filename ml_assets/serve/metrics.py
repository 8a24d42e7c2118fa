"""Prometheus metrics of the service: requests, latency, predicted rows, prediction distribution.

Series (all labelled with ``dataset``):

* ``ml_assets_requests_total{endpoint, protocol, status}``: requests by outcome (HTTP status,
  or the gRPC status name);
* ``ml_assets_request_duration_seconds{endpoint, protocol, status}``: latency histogram;
* ``ml_assets_predicted_rows_total{endpoint, protocol}``: records scored;
* ``ml_assets_prediction_score{model_version}``: distribution of P(positive) (binary) or of the
  predicted value (regression);
* ``ml_assets_predicted_label_total{model_version, label}``: predicted classes.

``prometheus_client`` is imported when :class:`ServingMetrics` is created, not at module import:
BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` in a worker after importing the service module, and
the client picks its (multiprocess) storage at import. BentoML's own ``/metrics`` then serves
these series summed over all workers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ml_assets.contracts.model import ProblemType
from ml_assets.problems import PROBABILITY_BUCKETS, problem_kind

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

_CREATED: dict[str, Any] = {}
_CREATE_LOCK = threading.Lock()


def _metric(kind: str, name: str, doc: str, labels: list[str], **kw: Any) -> Any:
    """One metric per process: a second runtime in the same process reuses it."""
    import prometheus_client

    with _CREATE_LOCK:
        if name not in _CREATED:
            _CREATED[name] = getattr(prometheus_client, kind)(name, doc, labels, **kw)
        return _CREATED[name]


class ServingMetrics:
    """The service's series for one dataset, with label children cached for the hot path."""

    def __init__(self, dataset: str, problem_type: ProblemType) -> None:
        self.dataset = dataset
        self.kind = problem_kind(problem_type)
        # A kind with no single score (multiclass) gets only the label counter; the histogram
        # is registered with the binary buckets so the series exists in every service.
        score_buckets = self.kind.score_buckets or PROBABILITY_BUCKETS
        by_request = ["dataset", "endpoint", "protocol", "status"]
        by_model = ["dataset", "model_version"]
        for attr, kind, name, doc, labels, extra in (
            ("requests", "Counter", "ml_assets_requests",
             "Prediction requests by endpoint, protocol and status.", by_request, {}),
            ("latency", "Histogram", "ml_assets_request_duration_seconds",
             "Time from receiving a prediction request to having its answer.", by_request,
             {"buckets": LATENCY_BUCKETS}),
            ("rows", "Counter", "ml_assets_predicted_rows", "Records scored.",
             ["dataset", "endpoint", "protocol"], {}),
            ("score", "Histogram", "ml_assets_prediction_score",
             "Distribution of the predicted probability of the positive class (binary) or of "
             "the predicted value (regression).", by_model, {"buckets": score_buckets}),
            ("labels", "Counter", "ml_assets_predicted_label", "Predicted classes.",
             [*by_model, "label"], {}),
        ):  # fmt: skip
            setattr(self, attr, _metric(kind, name, doc, labels, **extra))
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(self.dataset, *values)
            self._children[key] = child
        return child

    def observe_request(
        self, endpoint: str, protocol: str, status: str, seconds: float, rows: int = 0
    ) -> None:
        """One finished request (any outcome)."""
        self._child(self.requests, endpoint, protocol, status).inc()
        self._child(self.latency, endpoint, protocol, status).observe(seconds)
        if rows:
            self._child(self.rows, endpoint, protocol).inc(rows)

    def observe_predictions(
        self, model_version: str, scores: np.ndarray, labels: list[Any] | None
    ) -> None:
        """The distribution of one request's predictions."""
        values = self.kind.histogram_values(scores)
        if values is not None:
            _observe_many(self._child(self.score, model_version), values)
        if labels is not None:
            if len(labels) == 1:
                self._child(self.labels, model_version, str(labels[0])).inc()
            else:
                values, counts = np.unique(np.asarray([str(v) for v in labels]), return_counts=True)
                for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                    self._child(self.labels, model_version, v).inc(c)


def _observe_many(child: Any, values: np.ndarray) -> None:
    """Observe a batch into a histogram child with one bucket increment per bucket used.

    prometheus_client has no bulk observe; per value costs ~2 us in multiprocess mode. This uses
    the child's bucket values (stable attributes for years) and falls back to per-value observe.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 1:
        child.observe(float(values[0]))
        return
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for v in values.tolist():
            child.observe(v)
        return
    idx = np.searchsorted(np.asarray(bounds), values, side="left")
    for i, c in zip(*np.unique(idx, return_counts=True), strict=True):
        buckets[int(i)].inc(int(c))
    total.inc(float(values.sum()))
