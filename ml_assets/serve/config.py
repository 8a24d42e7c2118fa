"""Serving settings: what a Bento serves and its limits, from the Bento's config file and env.

A built Bento carries ``bento_config.json`` beside its service file (written by
:func:`ml_assets.serve.bento.build_bento`): the dataset and the BentoML model tag it was built
for, the carried contract and features files with their fingerprints
(:mod:`ml_assets.serve.carried`), and where the online store and the prediction log were when
it was built (absolute: the defaults of a server given nothing else). The serving variables of
:mod:`ml_assets.settings` override it, which is also how the service source file is served
straight from the repository (``ML_ASSETS_SERVE_DATASET``, ``ML_ASSETS_SERVE_MODEL``).

Where a served Bento keeps state, most specific first: ``ML_ASSETS_ONLINE_URL`` /
``ML_ASSETS_PREDICTION_LOG``; else the paths derived from ``ML_ASSETS_HOME`` when it is set;
else the paths recorded at build. A built Bento's workers run in the Bento's own folder inside
the BentoML store (``$BENTOML_HOME/bentos/<name>/<version>/src``), so a relative path there would
quietly put state inside the store: a relative ``ML_ASSETS_HOME``, ``ML_ASSETS_PREDICTION_LOG``
or SQLite file in ``ML_ASSETS_ONLINE_URL`` fails the start with :class:`ServeConfigError` naming
the variable. (The launching shell's working directory is not known to the workers: BentoML
changes into the Bento's folder before it imports the service.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_assets import settings

if TYPE_CHECKING:
    from upath import UPath

CONFIG_FILE = "bento_config.json"


class ServeConfigError(ValueError):
    """A serving setting that cannot be used; the message names the variable and the fix."""


DEFAULT_GRPC_PORT = 50051
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 10_000


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service needs to know besides the model itself."""

    dataset: str = "car_loan"
    model_tag: str = ""
    """BentoML model tag (``car_loan:abc123``); default ``<dataset>:latest``."""
    model_sha256: str = ""
    """sha256 of the model file the Bento was built with (recorded with the registered model
    version); the server refuses to start when the file in the model store differs."""
    workers: int = 1
    """HTTP worker processes (each also runs a gRPC server on the shared port)."""
    grpc_port: int = DEFAULT_GRPC_PORT
    """gRPC port; 0 or less turns gRPC off."""
    http_host: str = "127.0.0.1"
    """HTTP bind address: loopback unless exposed on purpose (``0.0.0.0``; BentoML's
    ``--host`` / ``BENTOML_HOST`` override it)."""
    grpc_host: str = "127.0.0.1"
    """gRPC bind address: loopback unless exposed on purpose (``0.0.0.0``, ``[::]``)."""
    grpc_threads: int = 8
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body (HTTP) or message (gRPC) accepted; larger gets 413."""
    max_records: int = DEFAULT_MAX_RECORDS
    """Most records per request; more gets 413."""
    body_timeout_seconds: float = 10.0
    """Longest wait for a request body once its headers came; a slower client gets 408 and
    its connection closed."""
    header_timeout_seconds: float = 10.0
    """Longest time a connection may take to send a request head (the request line and the
    headers); a slower one gets 408 and is closed (:mod:`ml_assets.serve.connections`)."""
    max_connections: int = 512
    """Most open HTTP connections per worker; a new one beyond gets 503 and is closed."""
    max_concurrency: int = 64
    """Most prediction requests (HTTP) in progress in the service, split over the workers
    (``ceil(max_concurrency / workers)`` each); more get 503 with ``Retry-After`` at once
    instead of queueing (:class:`~ml_assets.serve.http_app.HttpApp`). Ours, not BentoML's
    ``traffic.max_concurrency``: that one answers 429 with a body outside the API's error
    schema (found by ``bench/bench_load.py``)."""

    @property
    def max_in_flight_per_worker(self) -> int:
        """This worker's share of :attr:`max_concurrency` (at least 1)."""
        workers = self.workers if isinstance(self.workers, int) and self.workers > 0 else 1
        return max(1, -(-self.max_concurrency // workers))

    prediction_log_dir: str = ""
    """Root of the prediction log, a folder or an fsspec URL (``s3://bucket/prediction_log``);
    default ``$ML_ASSETS_HOME/prediction_log`` (a built Bento records the building platform's,
    absolute: see the module doc)."""
    log_flush_seconds: float = 1.0
    """How often the prediction log writes a segment: the window of answered rows a killed
    worker loses (see :mod:`ml_assets.serve.prediction_log`)."""
    log_max_queued_rows: int = 50_000
    """Most rows a worker's prediction log holds unwritten; at the bound (or while writing
    fails) predictions and ``/readyz`` answer 503."""
    token: str = field(default="", repr=False)
    """Bearer token the prediction and model endpoints require (empty: none). From
    ``ML_ASSETS_SERVE_TOKEN`` at serve time only: never written into ``bento_config.json``."""
    online_url: str = ""
    """Online feature store URL; default a SQLite file ``online.sqlite`` under ML_ASSETS_HOME (a
    built Bento records the building platform's, absolute, unless it has a password)."""
    contract_file: str = ""
    """The contract YAML a built Bento carries (relative to its service folder); empty when
    ``bentos/`` is served unbuilt (the settings' contracts folder is read then)."""
    contract_fingerprint: str = ""
    features_file: str = ""
    """The features YAML a built Bento carries (relative to its service folder)."""
    features_fingerprint: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    """What the Bento was built from (registered model, version, run ids): informational."""

    @property
    def resolved_model_tag(self) -> str:
        return self.model_tag or f"{self.dataset}:latest"

    @property
    def service_name(self) -> str:
        return f"{self.dataset}_service"

    def resolved_log_dir(self) -> Path | UPath:
        """Root of the prediction log (a built Bento: what :meth:`load` settled on)."""
        if self.prediction_log_dir:
            return settings.location(self.prediction_log_dir)
        if self.built:
            raise ServeConfigError(
                "this Bento records no prediction log location: set ML_ASSETS_PREDICTION_LOG "
                "(or ML_ASSETS_HOME) to an absolute path"
            )
        return settings.current().prediction_log_path

    def resolved_online_url(self) -> str:
        """The same resolution as the ``online_store`` resource of the feature assets; empty
        for a built Bento that records none (its ``predict_by_keys`` then answers 503 until
        ``ML_ASSETS_ONLINE_URL`` is set)."""
        if self.online_url or self.built:
            return self.online_url
        return settings.current().online_store_url

    def to_json(self) -> str:
        """The config file's text: everything but the token (a Bento is no place for a
        secret)."""
        values = asdict(self)
        values.pop("token", None)
        return json.dumps(values, indent=2, sort_keys=True)

    @property
    def built(self) -> bool:
        """Whether this is a built Bento's config (it carries its dataset files)."""
        return bool(self.contract_file)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> ServeConfig:
        """The config file in ``directory`` (if there is one), then environment overrides (see
        the module doc for where state goes, and why relative paths fail in a built Bento)."""
        values: dict[str, Any] = {}
        if directory is not None:
            path = Path(directory) / CONFIG_FILE
            if path.exists():
                values = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        config = cls(**{k: v for k, v in values.items() if k in known and k != "token"})
        current = settings.current()
        overrides = current.serve_overrides()
        if config.built:
            overrides.update(state_locations(current))
        return replace(config, **overrides) if overrides else config


def _require_absolute(variable: str, value: str | Path) -> None:
    if settings.is_url(value):  # an object store: the same wherever the workers run
        return
    if not Path(value).is_absolute():
        raise ServeConfigError(
            f"{variable}={str(value)!r} is a relative path: a built Bento's workers run in the "
            "Bento's own folder inside the BentoML store, where it would land; give an absolute "
            f"path (e.g. {variable}=$PWD/{value})"
        )


def _sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None for another database or an in-memory one)."""
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ServeConfigError(
            f"ML_ASSETS_ONLINE_URL={url!r}: not a database URL ({exc})"
        ) from None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def absolute_online_url(url: str) -> str:
    """``url`` with a relative SQLite file made absolute (against this process' directory)."""
    import sqlalchemy as sa

    file = _sqlite_file(url)
    if file is None or Path(file).is_absolute():
        return url
    parsed = sa.make_url(url).set(database=str(Path(file).resolve()))
    return parsed.render_as_string(hide_password=False)


def state_locations(current: settings.Settings) -> dict[str, str]:
    """Online store URL and prediction log root given at serve time to a built Bento, by
    :class:`ServeConfig` field: the specific variable, else the path derived from an
    ``ML_ASSETS_HOME`` that is set; each must be absolute (see the module doc)."""
    out: dict[str, str] = {}
    home_given = "home" in current.model_fields_set
    if current.prediction_log is not None:
        _require_absolute("ML_ASSETS_PREDICTION_LOG", current.prediction_log)
        out["prediction_log_dir"] = str(current.prediction_log)
    elif home_given:
        _require_absolute("ML_ASSETS_HOME", current.home)
        out["prediction_log_dir"] = str(current.prediction_log_path)
    if current.online_url is not None:
        file = _sqlite_file(current.online_url)
        if file is not None and not Path(file).is_absolute():
            raise ServeConfigError(
                f"ML_ASSETS_ONLINE_URL={current.online_url!r} names a relative SQLite file: a "
                "built Bento's workers run in the Bento's own folder inside the BentoML store; "
                "give an absolute path (sqlite:////abs/path/online.sqlite)"
            )
        out["online_url"] = current.online_url
    elif home_given:
        _require_absolute("ML_ASSETS_HOME", current.home)
        out["online_url"] = current.online_store_url
    return out


def build_locations(current: settings.Settings) -> dict[str, str]:
    """The online store URL and prediction log root recorded in a Bento at build: where the
    building platform has them, absolute, so a server given neither (nor ``ML_ASSETS_HOME``)
    uses the same ones from any directory. An online store URL with a password is not
    recorded (a Bento is no place for a secret): such a server needs ``ML_ASSETS_ONLINE_URL``."""
    import sqlalchemy as sa

    log_root = current.prediction_log_path
    out = {"prediction_log_dir": str(log_root if settings.is_url(log_root) else log_root.resolve())}
    url = current.online_store_url
    try:
        has_password = sa.make_url(url).password is not None
    except sa.exc.ArgumentError:
        has_password = False
    if not has_password:
        out["online_url"] = absolute_online_url(url)
    return out
