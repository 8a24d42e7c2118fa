"""The serving core, shared by HTTP and gRPC: validated records in, predictions out, logged.

:class:`ServingRuntime` owns the model, the two record schemas generated from the contract, the
online-store client, the prediction log and the metrics. Transports decode their wire format to
plain Python records and call :meth:`ServingRuntime.predict` (feature rows) or
:meth:`ServingRuntime.predict_by_keys` (entity records; features computed by the feature code),
then encode the :class:`Outcome`. A feature record may also carry the entity key and event
time (:func:`~ml_assets.serve.validation.id_schema`): never model inputs, they go to the
prediction log's key and event-time columns and the key is echoed, as predict by keys does.

The feature-row path does no pandas and no polars: records -> value rows (validation) -> a
numpy object matrix in the model's column order -> CatBoost. The result is the same as batch
scoring (:func:`ml_assets.train.assets.score_frame`): categoricals as text with ``__missing__``
for null, numbers as floats with NaN for null. No MLflow here: the model comes from the BentoML
model directory (``model.cbm`` + ``problem.json``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ml_assets.contracts.model import ProblemType
from ml_assets.features.spec import COLUMN_DTYPES, FeatureSpec
from ml_assets.problems import ProblemKind, problem_kind
from ml_assets.serve.carried import features_fingerprint
from ml_assets.serve.decoding import ErrorCode, RequestError, check_count
from ml_assets.serve.prediction_log import LogEntry
from ml_assets.serve.validation import (
    RecordSchema,
    entity_schema,
    feature_schema,
    id_schema,
    learned_by_column,
    validate_feature_records,
    validate_records,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.cbm"
PROBLEM_FILE = "problem.json"
MISSING = "__missing__"  # what training fills a null categorical with (train.core.to_pool_frame)

PREDICT = "predict"
PREDICT_BY_KEYS = "predict_by_keys"


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model and what is needed to feed it: feature order, categoricals, classes."""

    model: Any
    problem_type: ProblemType
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    classes: tuple[Any, ...]
    version: str
    """Registered model version (MLflow)."""
    tag: str = ""
    """BentoML model tag."""
    labels: dict[str, str] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per feature, the values of a ``categories: learned`` column the model was trained on."""

    @property
    def kind(self) -> ProblemKind:
        return problem_kind(self.problem_type)


def load_bundle(
    path: str | Path, *, tag: str = "", labels: dict[str, str] | None = None
) -> ModelBundle:
    """Load ``model.cbm`` and ``problem.json`` from a BentoML model directory."""
    path = Path(path)
    problem = json.loads((path / PROBLEM_FILE).read_text(encoding="utf-8"))
    problem_type = ProblemType(problem["problem_type"])
    model = problem_kind(problem_type).load_model(str(path / MODEL_FILE))
    labels = dict(labels or {})
    return ModelBundle(
        model=model,
        problem_type=problem_type,
        features=tuple(problem["features"]),
        categorical=tuple(problem["categorical"]),
        classes=tuple(problem.get("classes") or ()),
        version=str(labels.get("model_version", problem.get("model_version", "unknown"))),
        tag=tag,
        labels=labels,
        categories={k: tuple(v) for k, v in (problem.get("categories") or {}).items()},
    )


def _cat_text(v: Any) -> str:
    if v is None:
        return MISSING
    if v is True:
        return "true"
    if v is False:
        return "false"
    return v if type(v) is str else str(v)


class InputLayout:
    """Turns value rows (model feature order) into the matrix CatBoost scores.

    Only the columns that need it are touched: categoricals become text, nullable numbers get
    NaN for null; everything else goes into the object matrix as validated.
    """

    def __init__(
        self, bundle: ModelBundle, schema: RecordSchema, *, all_numbers_nullable: bool = False
    ) -> None:
        cats = set(bundle.categorical)
        self.cat_idx = [j for j, f in enumerate(bundle.features) if f in cats]
        self.nullable_num_idx = [
            j
            for j, f in enumerate(bundle.features)
            if f not in cats and (all_numbers_nullable or schema.field(f).nullable)
        ]

    def matrix(self, rows: Sequence[Sequence[Any]]) -> np.ndarray:
        x = np.array(rows, dtype=object)
        if x.ndim != 2:  # pragma: no cover - validation makes every row the same length
            raise ValueError("rows of different lengths")
        for j in self.cat_idx:
            x[:, j] = [_cat_text(v) for v in x[:, j]]
        nan = float("nan")
        for j in self.nullable_num_idx:
            col = x[:, j]
            if None in col.tolist():
                x[:, j] = [nan if v is None else v for v in col]
        return x


def score(bundle: ModelBundle, x: Any) -> np.ndarray:
    """The kind's scores of a request, on one thread (requests run side by side)."""
    return bundle.kind.scores(bundle.model, x, thread_count=1)


def labels_of(bundle: ModelBundle, scores: np.ndarray) -> list[Any] | None:
    """Predicted classes, decided as batch scoring decides them (the kind's rule)."""
    return bundle.kind.labels(scores, bundle.classes)


@dataclass
class Outcome:
    """The result of one request: what both transports send back."""

    request_id: str
    model_version: str
    problem_type: ProblemType
    scores: np.ndarray
    labels: list[Any] | None
    classes: tuple[Any, ...]
    keys: list[dict[str, Any]] | None = None
    client_request_id: str | None = None
    """The client's X-Request-Id, echoed when it sent one."""

    def predictions(self) -> list[dict[str, Any]]:
        """One object per record, shaped by the problem kind (label and probability, label and
        probabilities, or value); with the record's key when it was given."""
        kind = problem_kind(self.problem_type)
        out = kind.prediction_json(self.scores, self.labels, self.classes)
        if self.keys is not None:
            for item, key in zip(out, self.keys, strict=True):
                if key:
                    item["key"] = key
        return out

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"request_id": self.request_id}
        if self.client_request_id is not None:
            body["client_request_id"] = self.client_request_id
        body["model_version"] = self.model_version
        body["predictions"] = self.predictions()
        return orjson.dumps(body)


def store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of an unreachable or broken online store (SQLAlchemy, and the DBAPI errors of
    SQLite and psycopg, which the client's raw connection raises as they are)."""
    import sqlite3

    import sqlalchemy as sa

    errors: list[type[BaseException]] = [sa.exc.SQLAlchemyError, sqlite3.Error, OSError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return tuple(errors)


def new_request_id() -> str:
    """A fresh random id for one request: unique, so the log's (request_id, row) is a key."""
    return uuid.uuid4().hex


MAX_CLIENT_REQUEST_ID = 128


def client_request_id(given: str | None) -> str | None:
    """The client's ``X-Request-Id`` as kept (its own log column, echoed back), None when not
    sent; one longer than 128 characters or with control characters is a 400, never replaced."""
    if given is None or given == "":
        return None
    if len(given) > MAX_CLIENT_REQUEST_ID:
        raise RequestError(
            ErrorCode.BAD_HEADER,
            [("x-request-id", f"{len(given)} characters is more than the limit of 128")],
        )
    if not given.isprintable() or not given.isascii():
        raise RequestError(
            ErrorCode.BAD_HEADER, [("x-request-id", "only printable ASCII characters")]
        )
    return given


class ServingRuntime:
    """Validation, features, scoring, logging and metrics for one dataset's model."""

    def __init__(
        self,
        spec: FeatureSpec,
        bundle: ModelBundle,
        *,
        prediction_log: Any | None = None,
        metrics: Any | None = None,
        store_factory: Callable[[], Any] | None = None,
        max_records: int = 10_000,
    ) -> None:
        if spec.contract.problem_type is not bundle.problem_type:
            raise ValueError(
                f"{spec.dataset}: the model is {bundle.problem_type.value}, the contract says "
                f"{spec.contract.problem_type.value}"
            )
        self.spec = spec
        self.bundle = bundle
        learned = learned_by_column(spec, bundle.categories)
        self.features = feature_schema(spec, bundle.features, learned)
        self.entities = entity_schema(spec, learned)
        self.layout = InputLayout(bundle, self.features)
        self.log = prediction_log
        self.metrics = metrics
        self.max_records = max_records
        self._store_factory = store_factory
        self._store: Any = None
        self._store_lock = threading.Lock()
        # Features computed online may be null wherever a number is (a ratio over zero, ...).
        self.computed_layout = InputLayout(bundle, self.features, all_numbers_nullable=True)
        ent = spec.contract.entity
        self._entity_dtypes = {n: COLUMN_DTYPES[ent.columns[n].type] for n in self.entities.names}
        self._key_idx = [self.entities.names.index(k) for k in spec.key]
        self._time_idx = self.entities.names.index(spec.event_time)
        # The optional id fields of feature records; a key part that is also a feature is read
        # from the feature row (the feature meaning wins, see id_schema).
        self.ids = id_schema(spec, bundle.features)
        feature_pos = {f: j for j, f in enumerate(bundle.features)}
        self._id_key_src = [
            (True, feature_pos[k]) if k in feature_pos else (False, self.ids.names.index(k))
            for k in spec.key
        ]
        self._id_time_idx = (
            self.ids.names.index(spec.event_time) if spec.event_time in self.ids.names else None
        )
        self._fingerprints = {
            "contract_fingerprint": spec.contract.fingerprint(),
            "features_fingerprint": features_fingerprint(spec.file),
        }

    @property
    def dataset(self) -> str:
        return self.spec.dataset

    @property
    def model_version(self) -> str:
        return self.bundle.version

    def admit(self) -> None:
        """Refuse a new prediction (503 / UNAVAILABLE, before any scoring) while the prediction
        log cannot take it: its queue is at the bound or writing fails (a full disk). Nothing
        is answered that cannot be logged."""
        if self.log is not None:
            refusal = self.log.refusal()
            if refusal is not None:
                raise RequestError(ErrorCode.UNAVAILABLE, [("prediction log", refusal)])

    # --- predict on feature rows ------------------------------------------------------------

    def predict(
        self,
        records: list[Any],
        *,
        request_id: str,
        protocol: str,
        started_ns: int | None = None,
        client_request_id: str | None = None,
    ) -> Outcome:
        """Score feature records (the model's inputs, as the feature table holds them).

        A record may also give the entity key and event time (:attr:`ids`): they are logged as
        the prediction's key and event time and the key is echoed in the response."""
        started_ns = started_ns or time.perf_counter_ns()
        self.admit()
        check_count(len(records), self.max_records)
        rows, ids = validate_feature_records(self.features, self.ids, records)
        scores = score(self.bundle, self.layout.matrix(rows))
        labels = labels_of(self.bundle, scores)
        if ids is None:
            self._record(
                PREDICT, protocol, request_id, started_ns, rows, scores, labels, None, None,
                client_request_id,
            )  # fmt: skip
            return self._outcome(request_id, scores, labels, None, client_request_id)
        keys, times, key_dicts = self._given_ids(rows, ids)
        self._record(
            PREDICT, protocol, request_id, started_ns, rows, scores, labels, keys, times,
            client_request_id,
        )  # fmt: skip
        return self._outcome(request_id, scores, labels, key_dicts, client_request_id)

    def _given_ids(
        self, rows: list[list[Any]], ids: list[list[Any] | None]
    ) -> tuple[list[list[Any]] | None, list[Any] | None, list[dict[str, Any]] | None]:
        """Log keys, log event times and echoed keys of feature records that gave ids."""
        src, t, names = self._id_key_src, self._id_time_idx, self.spec.key
        blank = [None] * len(src)
        keys: list[list[Any]] = []
        times: list[Any] = []
        for row, given in zip(rows, ids, strict=True):
            if given is None:
                keys.append(blank)
                times.append(None)
                continue
            key = [row[j] if in_features else given[j] for in_features, j in src]
            # A key whose own fields were left out (only the event time given) is no key.
            keys.append(key if any(not f and given[j] is not None for f, j in src) else blank)
            times.append(given[t] if t is not None else None)
        given_keys = any(k is not blank for k in keys)
        key_dicts = (
            [{n: v for n, v in zip(names, k, strict=True) if v is not None} for k in keys]
            if given_keys
            else None
        )
        has_time = any(v is not None for v in times)
        return (keys if given_keys else None), (times if has_time else None), key_dicts

    def _outcome(
        self,
        request_id: str,
        scores: np.ndarray,
        labels: list[Any] | None,
        keys: list[dict[str, Any]] | None = None,
        client_request_id: str | None = None,
    ) -> Outcome:
        b = self.bundle
        return Outcome(
            request_id, b.version, b.problem_type, scores, labels, b.classes, keys,
            client_request_id,
        )  # fmt: skip

    # --- predict by keys --------------------------------------------------------------------

    def store(self) -> Any:
        """The online-store client, opened on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    if self._store_factory is None:
                        raise RequestError(
                            ErrorCode.UNAVAILABLE,
                            [("", "no online store is configured: set ML_ASSETS_ONLINE_URL")],
                        )
                    try:
                        self._store = self._store_factory()
                    except Exception as exc:
                        log.exception("cannot open the online store")
                        raise RequestError(
                            ErrorCode.UNAVAILABLE,
                            [("online store", f"cannot open it: {type(exc).__name__}")],
                        ) from None
        return self._store

    def predict_by_keys(
        self,
        records: list[Any],
        *,
        request_id: str,
        protocol: str,
        started_ns: int | None = None,
        now: dt.datetime | None = None,
        client_request_id: str | None = None,
    ) -> Outcome:
        """Score entity records: the row and request-time features computed by the feature code
        (:func:`ml_assets.features.online_features`), the aggregates fetched from the online
        store by the records' group keys. A record's event time is the request time unless
        it gives one."""
        from ml_assets.features.online import online_features

        started_ns = started_ns or time.perf_counter_ns()
        self.admit()
        check_count(len(records), self.max_records)
        rows = validate_records(self.entities, records)
        now = now or dt.datetime.now(dt.UTC)
        t = self._time_idx
        for row in rows:
            if row[t] is None:
                row[t] = now
        frame = self._entity_frame(rows)
        store = self.store()
        try:
            feats = online_features(self.spec, frame, store)
        except LookupError as exc:
            raise RequestError(ErrorCode.UNAVAILABLE, [("online store", str(exc))]) from None
        except store_errors() as exc:  # a database that is down is not a bad request
            log.exception("online store lookup failed")
            raise RequestError(
                ErrorCode.UNAVAILABLE, [("online store", f"lookup failed: {type(exc).__name__}")]
            ) from None
        values = feats.select(self.bundle.features).rows()
        scores = score(self.bundle, self.computed_layout.matrix(values))
        labels = labels_of(self.bundle, scores)
        keys = [[row[k] for k in self._key_idx] for row in rows]
        times = [row[t] for row in rows]
        self._record(
            PREDICT_BY_KEYS, protocol, request_id, started_ns, values, scores, labels, keys, times,
            client_request_id,
        )  # fmt: skip
        key_dicts = None
        if any(any(v is not None for v in k) for k in keys):
            key_dicts = [
                {n: v for n, v in zip(self.spec.key, k, strict=True) if v is not None} for k in keys
            ]
        return self._outcome(request_id, scores, labels, key_dicts, client_request_id)

    def _entity_frame(self, rows: list[list[Any]]) -> Any:
        import polars as pl

        return pl.DataFrame(rows, schema=self._entity_dtypes, orient="row", strict=False)

    # --- logging and metrics ----------------------------------------------------------------

    def _record(
        self,
        endpoint: str,
        protocol: str,
        request_id: str,
        started_ns: int,
        rows: Sequence[Sequence[Any]],
        scores: np.ndarray,
        labels: list[Any] | None,
        keys: list[list[Any]] | None,
        times: list[dt.datetime] | None,
        client_request_id: str | None = None,
    ) -> None:
        latency_us = (time.perf_counter_ns() - started_ns) // 1000
        if self.log is not None:
            ts_us = time.time_ns() // 1000
            self.log.append(
                LogEntry(
                    request_id=request_id,
                    ts_us=ts_us,
                    endpoint=endpoint,
                    protocol=protocol,
                    latency_us=latency_us,
                    model_version=self.bundle.version,
                    rows=rows,
                    scores=scores,
                    labels=labels,
                    keys=keys,
                    event_times=times,
                    client_request_id=client_request_id,
                )
            )
        if self.metrics is not None:
            self.metrics.observe_predictions(self.bundle.version, scores, labels)

    def info(self) -> dict[str, Any]:
        """What is being served (for ``GET /v1/model``)."""
        return {
            "dataset": self.dataset,
            "model_version": self.bundle.version,
            "bentoml_model": self.bundle.tag,
            "problem_type": self.bundle.problem_type.value,
            "features": list(self.bundle.features),
            "classes": list(self.bundle.classes),
            "labels": self.bundle.labels,
            "contract_version": self.spec.contract.version,
            **self._fingerprints,
        }
