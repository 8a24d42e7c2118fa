"""Every setting of the platform, in one typed object: its environment variable, default, doc.

:class:`Settings` is the only place that reads ``ML_ASSETS_*`` and ``MLFLOW_*`` variables (and
a contract's own ``source.url_env``). Everything has an embedded default (SQLite, local files
under ``ML_ASSETS_HOME``) so the platform runs with no server to start; production points the
same settings elsewhere. Paths derived from the home (``online.sqlite``, ``mlflow.db``, ...) are
built here and nowhere else. The README's configuration table is :func:`markdown_table`
(a test keeps the two equal); ``ml-assets settings`` prints the values in effect.

Read with :func:`current` each time they are needed (not cached: tests and the CLI change the
environment); it costs microseconds and is never on a request's path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from upath import UPath

# Every library in the stack reports usage unless told not to; no machine here has internet.
TELEMETRY_OFF = {
    "NML_DISABLE_USAGE_LOGGING": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DAGSTER_DISABLE_TELEMETRY": "1",
}

BUNDLED_CONTRACTS = Path(__file__).resolve().parent / "contracts"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
"""The checkout's ``deploy/``: the profiles (``deploy/<name>/profile.yaml``)."""
EXECUTORS = ("default", "celery")
PROFILE_APPLIED = "ML_ASSETS_PROFILE_APPLIED"
"""Set to the profile's name by :func:`apply_profile`, for its child processes."""


def profile_folder(profile: str) -> Path | None:
    """The folder of a profile (``embedded`` has none): ``deploy/<name>/`` or a file's folder."""
    if profile in ("", "embedded"):
        return None
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        return path.resolve().parent
    return DEPLOY / profile


def profile_defaults(profile: str) -> dict[str, str]:
    """The variables a profile sets (its ``profile.yaml``'s ``env:`` block), as strings."""
    folder = profile_folder(profile)
    if folder is None:
        return {}
    path = Path(profile) if Path(profile).suffix in (".yaml", ".yml") else folder / "profile.yaml"
    if not path.exists():
        known = ["embedded", *(p.parent.name for p in sorted(DEPLOY.glob("*/profile.yaml")))]
        raise SettingsError(
            f"ML_ASSETS_PROFILE={profile!r}: no profile file {path} (profiles: "
            f"{', '.join(known)}, or the path of a profile.yaml)"
        )
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        raise SettingsError(f"ML_ASSETS_PROFILE={profile!r}: {path} has no `env:` mapping")
    return {str(k): str(v) for k, v in env.items()}


def apply_profile(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the defaults of the profile named by ``ML_ASSETS_PROFILE`` into the environment
    (a variable already set wins) and return what was set. Run at import, so every process of
    the platform (CLI, code server, daemon, Celery workers, ``bentoml serve``) sees one profile,
    and the libraries that read their own variables (botocore, Dagster's ``DAGSTER_PG_URL``)
    see them too."""
    environ = os.environ if environ is None else environ
    profile = environ.get("ML_ASSETS_PROFILE", "")
    if environ.get(PROFILE_APPLIED) == profile:
        # A child process of one that applied it (a Bento build, `bentoml serve`, a Celery
        # worker's task): the variables are inherited, and the profile file need not exist
        # where the child runs (a Bento's build context has no deploy/).
        return {}
    applied = {}
    for key, value in profile_defaults(profile).items():
        if environ.get(key) in (None, ""):
            environ[key] = applied[key] = value
    if profile:
        environ[PROFILE_APPLIED] = profile
    return applied


def disable_telemetry() -> None:
    """Set the opt-out switches of nannyml, BentoML, MLflow (Dagster's is in dagster.yaml).

    ``bentoml serve`` reads its switch once, cached, before it imports the served module (ours,
    in every Bento): without the variable in the user's shell it had already decided to report
    the serve start and the command's end to BentoML's tracking host. Clearing that cache after
    setting the variable makes the Bento itself carry the opt-out (checked with the connect
    calls of a real ``bentoml serve`` in ``ml_assets_tests/serve/test_offline.py``)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    usage = sys.modules.get("bentoml._internal.utils.analytics.usage_stats")
    if usage is not None:
        usage.do_not_track.cache_clear()


class SettingsError(ValueError):
    """An environment variable whose value cannot be used; the message names it."""


def _setting(env: str, default: Any, doc: str, default_doc: str | None = None) -> Any:
    return Field(
        default=default,
        alias=env,
        description=doc,
        json_schema_extra={"default_doc": default_doc if default_doc is not None else default},
    )


class Settings(BaseModel):
    """The platform's configuration. Fields are named for the code; aliases are the variables."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    # --- where state lives -------------------------------------------------------------------
    home: Path = _setting(
        "ML_ASSETS_HOME",
        Path(".ml_assets"),
        "local state: demo source, lake, stores, Dagster home, BentoML home",
        "`.ml_assets`",
    )
    source_url: str | None = _setting(
        "ML_ASSETS_SOURCE_URL",
        None,
        "the source database of contracts whose `source.url_env` names it (the default)",
        "`sqlite:///$ML_ASSETS_HOME/source.sqlite`",
    )
    source_url_override: str | None = _setting(
        "ML_ASSETS_SOURCE_URL_OVERRIDE",
        None,
        "one source URL for every contract, whatever its `source` block says",
        "unset",
    )
    lake: str | None = _setting(
        "ML_ASSETS_LAKE",
        None,
        "the lake: a folder or any fsspec URL (`s3://bucket/lake`)",
        "`$ML_ASSETS_HOME/lake`",
    )
    contracts_dir: Path | None = _setting(
        "ML_ASSETS_CONTRACTS",
        None,
        "folder of contract YAML files",
        "the bundled contracts",
    )
    features_dir: Path | None = _setting(
        "ML_ASSETS_FEATURES",
        None,
        "folder of features YAML files (`<dataset>.yaml`)",
        "`$ML_ASSETS_CONTRACTS/features`, else the bundled ones",
    )
    online_url: str | None = _setting(
        "ML_ASSETS_ONLINE_URL",
        None,
        "the online feature store (SQLAlchemy URL)",
        "`sqlite:///$ML_ASSETS_HOME/online.sqlite`",
    )
    mlflow_tracking_uri: str | None = _setting(
        "MLFLOW_TRACKING_URI",
        None,
        "MLflow tracking and registry",
        "`sqlite:///$ML_ASSETS_HOME/mlflow.db`",
    )
    dagster_home: Path | None = _setting(
        "DAGSTER_HOME",
        None,
        "the Dagster instance the CLI runs jobs in",
        "`$ML_ASSETS_HOME/dagster_home`",
    )
    prediction_log: str | None = _setting(
        "ML_ASSETS_PREDICTION_LOG",
        None,
        "root of the prediction log (parquet segments by dataset and date): a folder or any "
        "fsspec URL (`s3://bucket/prediction_log`), where monitoring on another host reads it",
        "`$ML_ASSETS_HOME/prediction_log`; production: `s3://ml-assets/prediction_log`",
    )
    bentos_dir: Path | None = _setting(
        "ML_ASSETS_BENTOS",
        None,
        "folder with the BentoML service (`service.py`, `predictor.proto`)",
        "the checkout's `bentos/`",
    )

    # --- serving: each overrides what a Bento's `bento_config.json` says ----------------------
    serve_dataset: str | None = _setting(
        "ML_ASSETS_SERVE_DATASET", None, "dataset served (running `bentos/` unbuilt)", "the Bento's"
    )
    serve_model: str | None = _setting(
        "ML_ASSETS_SERVE_MODEL",
        None,
        "BentoML model tag served",
        "the Bento's (`<dataset>:latest`)",
    )
    serve_workers: int | None = _setting(
        "ML_ASSETS_SERVE_WORKERS", None, "HTTP worker processes", "1"
    )
    grpc_port: int | None = _setting(
        "ML_ASSETS_GRPC_PORT", None, "gRPC port; 0 turns gRPC off", "50051"
    )
    serve_host: str | None = _setting(
        "ML_ASSETS_SERVE_HOST",
        None,
        "HTTP bind address (`0.0.0.0` exposes it on every interface; `bentoml serve --host` "
        "overrides it)",
        "`127.0.0.1`",
    )
    grpc_host: str | None = _setting(
        "ML_ASSETS_GRPC_HOST",
        None,
        "gRPC bind address (`0.0.0.0` or `[::]` exposes it on every interface)",
        "`127.0.0.1`",
    )
    serve_token: str | None = _setting(
        "ML_ASSETS_SERVE_TOKEN",
        None,
        "bearer token required on the prediction and model endpoints, HTTP and gRPC "
        "(`/livez`, `/readyz`, `/metrics` and gRPC health stay open); never stored in a Bento",
        "unset (no authentication)",
    )
    grpc_threads: int | None = _setting(
        "ML_ASSETS_GRPC_THREADS", None, "gRPC server threads per worker", "8"
    )
    serve_max_body_bytes: int | None = _setting(
        "ML_ASSETS_SERVE_MAX_BODY_BYTES",
        None,
        "largest request body / gRPC message accepted (larger: 413)",
        "4194304",
    )
    serve_max_records: int | None = _setting(
        "ML_ASSETS_SERVE_MAX_RECORDS", None, "most records per request (more: 413)", "10000"
    )
    serve_max_concurrency: int | None = _setting(
        "ML_ASSETS_SERVE_MAX_CONCURRENCY",
        None,
        "most prediction requests in progress in the service, split over its workers; more get "
        "503 with `Retry-After` at once instead of queueing (load is shed, not queued)",
        "64",
    )
    prediction_log_flush_seconds: float | None = _setting(
        "ML_ASSETS_PREDICTION_LOG_FLUSH_SECONDS",
        None,
        "how often the prediction log writes a segment: the rows answered in the last interval "
        "are what a killed worker (SIGKILL, OOM) loses",
        "1.0",
    )
    prediction_log_max_queued_rows: int | None = _setting(
        "ML_ASSETS_PREDICTION_LOG_MAX_QUEUED_ROWS",
        None,
        "most prediction rows a worker holds unwritten; at the bound, or while writing fails, "
        "predictions and `/readyz` answer 503",
        "50000",
    )

    # --- the production profile: execution and shared services (deploy/production/) ---------
    profile: str = _setting(
        "ML_ASSETS_PROFILE",
        "embedded",
        "`embedded` (SQLite, local files, in-process runs) or `production` (every store and the "
        "execution on shared services: `deploy/production/profile.yaml`), or the path of a "
        "profile file; a profile only sets defaults, the environment wins",
        "`embedded`",
    )
    executor: str = _setting(
        "ML_ASSETS_EXECUTOR",
        "default",
        "how runs execute: `default` (the CLI runs a job in its own process; a run launched from "
        "the UI uses Dagster's multiprocess executor) or `celery` (runs are submitted to the "
        "Dagster webserver, queued by the daemon, and each step is a Celery task on a worker)",
        "`default`",
    )
    celery_broker: str = _setting(
        "ML_ASSETS_CELERY_BROKER",
        "pyamqp://guest:guest@127.0.0.1:5672//",
        "the Celery broker URL (RabbitMQ; `redis://` works too)",
        "`pyamqp://guest:guest@127.0.0.1:5672//`",
    )
    celery_backend: str = _setting(
        "ML_ASSETS_CELERY_BACKEND", "rpc://", "the Celery result backend", "`rpc://`"
    )
    celery_queue: str = _setting(
        "ML_ASSETS_CELERY_QUEUE",
        "dagster",
        "the Celery queue the steps go to and the workers consume; one per deployment sharing a "
        "broker (the workers' node names carry it)",
        "`dagster`",
    )
    celery_workers: int = _setting(
        "ML_ASSETS_CELERY_WORKERS",
        2,
        "Celery worker processes `ml-assets services up` starts (one task at a time each)",
    )
    pool_limits: dict[str, int] = _setting(
        "ML_ASSETS_POOL_LIMITS",
        {},
        "steps that may run at once per concurrency pool, across runs (`pool=limit,...`; pools "
        "`ml_assets/ingest`, `ml_assets/train`, `ml_assets/serve`, `ml_assets/score`, "
        "`ml_assets/monitor`); `ml-assets services up` sets them in the Dagster instance",
        "unset (the instance's `default_limit`); production: `ml_assets/ingest=1,ml_assets/train=1`",
    )
    dagster_url: str = _setting(
        "ML_ASSETS_DAGSTER_URL",
        "http://127.0.0.1:3000",
        "the Dagster webserver runs are submitted to with the `celery` executor",
        "`http://127.0.0.1:3000`",
    )
    dagster_pg_url: str | None = _setting(
        "DAGSTER_PG_URL",
        None,
        "the Dagster instance's PostgreSQL (production profile; a `postgresql+psycopg2://` URL)",
        "unset (SQLite under `DAGSTER_HOME`)",
    )
    mlflow_backend_store: str | None = _setting(
        "ML_ASSETS_MLFLOW_BACKEND_STORE",
        None,
        "the backend store of the MLflow tracking server `ml-assets services up` starts",
        "`sqlite:///$ML_ASSETS_HOME/mlflow.db`",
    )
    mlflow_artifacts_destination: str | None = _setting(
        "ML_ASSETS_MLFLOW_ARTIFACTS",
        None,
        "where that server stores artifacts (`--artifacts-destination`, e.g. `s3://bucket/mlflow`)",
        "`$ML_ASSETS_HOME/mlartifacts`",
    )
    bento_store: str | None = _setting(
        "ML_ASSETS_BENTO_STORE",
        None,
        "where each built Bento is also exported (`bentoml export`; any fsspec URL)",
        "unset (the Bento stays in `BENTOML_HOME`)",
    )
    s3_standin: str | None = _setting(
        "ML_ASSETS_S3_STANDIN",
        None,
        "`moto`: `ml-assets services up` runs moto's S3 server at `AWS_ENDPOINT_URL_S3` (loopback "
        "only) as the object store",
        "unset",
    )
    s3_endpoint: str | None = _setting(
        "AWS_ENDPOINT_URL_S3",
        None,
        "the S3 endpoint of the lake, MLflow's artifacts and the Bento store (read by botocore)",
        "unset (AWS)",
    )

    @field_validator("prediction_log")
    @classmethod
    def _a_folder_or_object_store(cls, value: str | None) -> str | None:
        if value is None or "://" not in value:
            return value
        scheme = value.split("://", 1)[0].lower()
        if scheme.startswith(("postgres", "sqlite", "mysql", "mssql", "oracle")):
            raise ValueError(
                "the prediction log is parquet segments in a folder or on an object store "
                "(`s3://bucket/prediction_log`), not a database table (README, 'Production "
                "profile', says why)"
            )
        from fsspec.registry import known_implementations, registry

        if scheme not in known_implementations and scheme not in registry:
            raise ValueError(f"{scheme}:// is not a storage protocol fsspec knows")
        return value

    @field_validator("executor")
    @classmethod
    def _an_executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"must be one of {', '.join(EXECUTORS)}")
        return value

    # --- monitoring: alerts and the retrain sensor ---------------------------------------------
    alert_webhook: str | None = _setting(
        "ML_ASSETS_ALERT_WEBHOOK",
        None,
        "webhook (Slack-compatible JSON) that monitoring incidents are posted to; alerts always "
        "go to the Dagster log",
        "unset",
    )
    alert_attempts: int = _setting(
        "ML_ASSETS_ALERT_ATTEMPTS", 3, "attempts per alert when the webhook fails (then logged)"
    )
    alert_timeout_seconds: float = _setting(
        "ML_ASSETS_ALERT_TIMEOUT_SECONDS", 5.0, "timeout of one webhook request"
    )
    retrain_consecutive: int = _setting(
        "ML_ASSETS_RETRAIN_CONSECUTIVE",
        2,
        "consecutive alerting partitions of a performance metric before the sensor retrains",
    )

    retrain_min_label_coverage: float = _setting(
        "ML_ASSETS_RETRAIN_MIN_LABEL_COVERAGE",
        0.5,
        "share of the rows of an incident's first N partitions whose label must have arrived "
        "before the sensor retrains: the challenger learns the new regime only from labelled "
        "rows (0: retrain at once)",
    )

    @field_validator("retrain_min_label_coverage")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("pool_limits", mode="before")
    @classmethod
    def _pool_limits(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        limits: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            pool, sep, limit = item.rpartition("=")
            if not sep or not pool or not limit.strip().isdigit():
                raise ValueError(f"{item!r} is not `pool=limit` (a whole number)")
            limits[pool.strip()] = int(limit)
        return limits

    @field_validator("alert_attempts", "retrain_consecutive", "celery_workers")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    # --- derived paths: the one place each default is built ----------------------------------

    @property
    def root(self) -> Path:
        """The home folder, absolute."""
        return self.home.resolve()

    @property
    def demo_source_url(self) -> str:
        """The embedded demo source database: a SQLite file under the home folder."""
        return f"sqlite:///{self.root / 'source.sqlite'}"

    @property
    def lake_path(self) -> str:
        return self.lake or str(self.root / "lake")

    @property
    def contracts_path(self) -> Path:
        return self.contracts_dir or BUNDLED_CONTRACTS

    @property
    def features_path(self) -> Path:
        if self.features_dir is not None:
            return self.features_dir
        return self.contracts_path / "features"

    @property
    def online_store_url(self) -> str:
        return self.online_url or f"sqlite:///{self.root / 'online.sqlite'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Where new MLflow experiments put their artifacts (local default)."""
        return self.root / "mlartifacts"

    @property
    def dagster_home_path(self) -> Path:
        """``DAGSTER_HOME``; by default one per profile, so that switching profiles never points
        a profile's runs at the other's instance."""
        default = (
            "dagster_home" if self.profile == "embedded" else f"dagster_home_{self.profile_name}"
        )
        return (self.dagster_home or self.root / default).resolve()

    @property
    def profile_name(self) -> str:
        """The profile's short name (a profile given as a file: its folder's name)."""
        path = Path(self.profile)
        return path.parent.name if path.suffix in (".yaml", ".yml") else self.profile

    @property
    def instance_yaml(self) -> Path:
        """The ``dagster.yaml`` of the profile's Dagster instance: the profile folder's, else
        the checkout's local default."""
        folder = profile_folder(self.profile)
        if folder is not None and (folder / "dagster.yaml").exists():
            return folder / "dagster.yaml"
        return Path(__file__).resolve().parents[1] / "dagster.yaml"

    @property
    def search_path(self) -> Path:
        """The model searches' Optuna studies, one SQLite file per dataset
        (``<dataset>.sqlite``): what lets a killed search resume without repeating trials."""
        return self.root / "search"

    @property
    def bentoml_home(self) -> Path:
        """``BENTOML_HOME`` of the platform's Bentos and models."""
        return self.root / "bentoml"

    @property
    def prediction_log_path(self) -> Path | UPath:
        """The prediction log's root: a local folder (a :class:`~pathlib.Path`), or a
        :class:`~upath.UPath` on an object store (the same path operations)."""
        if self.prediction_log is None:
            return self.root / "prediction_log"
        return location(self.prediction_log)

    @property
    def monitoring_path(self) -> Path:
        """Local state of monitoring (which alerts were sent)."""
        return self.root / "monitoring"

    @property
    def alerts_state_path(self) -> Path:
        """The incidents already alerted, by sink (JSON, written atomically)."""
        return self.monitoring_path / "alerts_sent.json"

    @property
    def bentos_path(self) -> Path:
        """The service folder: ``ML_ASSETS_BENTOS``, else ``bentos/`` of the checkout this
        package runs from (an installed package has none: set the variable)."""
        if self.bentos_dir is not None:
            return self.bentos_dir
        return Path(__file__).resolve().parents[1] / "bentos"

    def source_url_for(self, url_env: str | None, url: str | None) -> str:
        """A contract's source: the override, else its URL, else its variable, else the demo."""
        if self.source_url_override:
            return self.source_url_override
        if url:
            return url
        if url_env == "ML_ASSETS_SOURCE_URL":
            return self.source_url or self.demo_source_url
        if url_env and os.environ.get(url_env):
            return os.environ[url_env]
        return self.demo_source_url

    def serve_overrides(self) -> dict[str, Any]:
        """Serving settings given in the environment, by :class:`ServeConfig` field name."""
        fields = {
            "serve_dataset": "dataset",
            "serve_model": "model_tag",
            "serve_workers": "workers",
            "grpc_port": "grpc_port",
            "serve_host": "http_host",
            "grpc_host": "grpc_host",
            "serve_token": "token",
            "grpc_threads": "grpc_threads",
            "serve_max_body_bytes": "max_body_bytes",
            "serve_max_records": "max_records",
            "serve_max_concurrency": "max_concurrency",
            "prediction_log": "prediction_log_dir",
            "prediction_log_flush_seconds": "log_flush_seconds",
            "prediction_log_max_queued_rows": "log_max_queued_rows",
            "online_url": "online_url",
        }
        out: dict[str, Any] = {}
        for name, target in fields.items():
            value = getattr(self, name)
            if value is not None:
                out[target] = str(value) if isinstance(value, Path) else value
        return out

    def summary(self) -> dict[str, str]:
        """Where things are, as resolved now (for the CLI's closing summary)."""
        return {
            "lake": self.lake_path,
            "online store": self.online_store_url,
            "MLflow tracking": self.tracking_uri,
            "Dagster home": str(self.dagster_home_path),
            "BentoML home": str(self.bentoml_home),
            "prediction log": str(self.prediction_log_path),
        }


def is_url(value: str | os.PathLike[str]) -> bool:
    """Whether a location setting is a URL (``s3://...``, ``file://...``), not a local path."""
    return "://" in str(value)


def location(value: str | os.PathLike[str]) -> Path | UPath:
    """A folder setting as a path object: a local :class:`~pathlib.Path`, or for an fsspec URL
    a :class:`~upath.UPath` (the lake's path type, with the same operations on ``s3://``)."""
    if isinstance(value, Path) or hasattr(value, "fs"):  # a Path, or a UPath with its options
        return value  # type: ignore[return-value]
    if not is_url(value):
        return Path(value)
    from upath import UPath

    return UPath(str(value))


def variables() -> dict[str, str]:
    """Environment variable -> field name, for every setting."""
    return {f.alias: name for name, f in Settings.model_fields.items() if f.alias}


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from an environment (``os.environ`` by default); empty values count as unset."""
    environ = os.environ if environ is None else environ
    given = {v: environ[v] for v in variables() if environ.get(v) not in (None, "")}
    try:
        return Settings.model_validate(given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            var = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{var}={given.get(var)!r}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def current() -> Settings:
    """The settings in effect now."""
    return from_env()


def home() -> Path:
    """Root of local state (``ML_ASSETS_HOME``, absolute)."""
    return current().root


def child_env(drop_prefixes: tuple[str, ...] = ()) -> dict[str, str]:
    """A copy of this process's environment for a child process, without the variables whose
    names start with one of ``drop_prefixes``, and with telemetry off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes or ("\0",))}
    env.update(TELEMETRY_OFF)
    return env


@contextmanager
def restoring_env(*names: str) -> Iterator[None]:
    """Put ``names`` back as they were on exit: for libraries that write their settings into
    ``os.environ`` (``mlflow.set_tracking_uri`` does), where they would outlive the call and
    leak into subprocesses."""
    saved = {k: os.environ.get(k) for k in names}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def markdown_table() -> str:
    """The README's configuration table, generated from the fields."""
    lines = ["| environment variable | default | what |", "|---|---|---|"]
    for field in Settings.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        lines.append(f"| `{field.alias}` | {extra.get('default_doc')} | {field.description} |")
    return "\n".join(lines)


disable_telemetry()
apply_profile()
