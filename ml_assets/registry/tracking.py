"""The experiment-tracking standard and the model registry, on MLflow.

The standard, enforced here rather than hoped for:

* every training run is an MLflow run in the experiment named after the dataset;
* standard tags (``STANDARD_TAGS``): Dagster run id and URL, asset key, training window,
  git commit, contract version, training-set fingerprint, feature list;
* all parameters, all metrics, the model with its signature and an input example, the
  training set as an MLflow dataset input whose digest is the training set's fingerprint;
* each model becomes a new version of the registered model named after the dataset, with the
  alias ``challenger``; ``champion`` moves only through the promotion gate or a rollback.

MLflow is imported inside methods: loading the Dagster definitions must not pay for it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from ml_assets import settings

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
MODEL_SHA256_TAG = "model.sha256"
"""Model version tag: sha256 of the model file as registered (checked by the Bento build and
by the server at start)."""
CHAMPION = "champion"

STANDARD_TAGS = (
    "dagster.run_id",
    "dagster.run_url",
    "dagster.asset_key",
    "training.window",
    "git.commit",
    "contract.version",
    "training_set.fingerprint",
    "features",
)


SEARCH_ID_TAG = "search.id"
SEARCH_ROLE_TAG = "search.role"
"""``parent`` (one run per search) or ``trial`` (one nested run per trial)."""
SEARCH_VERSION_TAG = "search.result_version"
REFERENCE_FROM_TAG = "monitoring.reference_from"
"""On a model version trained because of a monitoring incident: the start (UTC, ISO) of the
incident's first partition. Its monitoring reference starts there (the new regime) instead of at
the whole held-out window's start, when enough of it is held out."""
PARAMS_SOURCE_TAG = "params.source"
"""On a model's run and version: the search id its hyperparameters came from, or ``default``."""
BEST_CONFIG = "best_config.json"


def model_requirements() -> list[str]:
    """The logged model's requirements, pinned to this environment's versions.

    Given explicitly: inferring them makes MLflow import the model in a subprocess (~2 s per
    log_model, see STACK_NOTES). Taken from the environment, so they always match it.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("catboost", "pandas", "numpy")]


@contextmanager
def _no_requirement_mismatch_scan():
    """Skip MLflow's check of the model's requirements against the environment.

    Our requirements are read from the environment itself (``model_requirements``), so the
    check cannot find a mismatch; it costs ~0.45 s per process (a scan of every installed
    distribution's metadata), a fifth of training the demo model.
    """
    import mlflow.pyfunc
    import mlflow.utils.environment

    # Both modules import the function by name: log_model calls it through the first, and
    # again through the second when it validates the input example by loading the model.
    modules = (mlflow.utils.environment, mlflow.pyfunc)
    originals = [m.warn_dependency_requirement_mismatches for m in modules]
    for m in modules:
        m.warn_dependency_requirement_mismatches = lambda *a, **k: None
    try:
        yield
    finally:
        for m, original in zip(modules, originals, strict=True):
            m.warn_dependency_requirement_mismatches = original


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def model_file_sha256(model: Any) -> str:
    """sha256 of the CatBoost file ``model`` saves to (as MLflow's flavor saves it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.cbm"
        model.save_model(str(path))
        return file_sha256(path)


def git_commit() -> str:
    """The commit of the code that trained the model ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _metric_key(text: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and space; slice values are free text.
    return re.sub(r"[^0-9A-Za-z_\-./ ]", "_", text)


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    experiment_id: str
    version: str
    model_uri: str
    run_url: str


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking server and registry. Local SQLite by default; PostgreSQL by URL."""

    tracking_uri: str | None = None
    """``sqlite:///...`` or ``postgresql+psycopg2://...`` or ``http://mlflow:5000``."""
    artifact_root: str | None = None
    """Where new experiments put artifacts (a folder or object-store URL)."""
    ui_url: str = "http://127.0.0.1:5000"
    """Base URL of the MLflow UI, for links from Dagster."""
    dagster_ui_url: str = "http://127.0.0.1:3000"
    """Base URL of the Dagster UI, for links from MLflow back to the run."""

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or settings.current().tracking_uri

    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(settings.current().mlflow_artifacts)

    @contextmanager
    def _mlflow(self):
        import mlflow

        # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in os.environ: put it back.
        with settings.restoring_env("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            uri = self.resolved_tracking_uri()
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            yield mlflow

    def client(self):
        from mlflow import MlflowClient

        uri = self.resolved_tracking_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def prepare(self) -> None:
        """Create (and migrate) the tracking store now. MLflow migrates a new SQL store on first
        use, and two processes doing that at once on one SQLite file collide (alembic: "Online
        migration expected to match one row"): call this once before starting processes that
        share the store."""
        self.client().search_experiments(max_results=1)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if self.artifact_root is None and self.resolved_tracking_uri().startswith("http"):
            # A tracking server: its own artifact store, proxied (`mlflow-artifacts:/`), so
            # clients need no credentials for, or even knowledge of, the object store.
            return client.create_experiment(name)
        root = self.resolved_artifact_root()
        if "://" not in root:
            Path(root).mkdir(parents=True, exist_ok=True)
            root = Path(root).resolve().as_uri()
        return client.create_experiment(name, artifact_location=f"{root}/{name}")

    def run_url(self, experiment_id: str, run_id: str) -> str:
        uri = self.resolved_tracking_uri()
        base = uri.rstrip("/") if uri.startswith("http") else self.ui_url
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    def log_training(
        self,
        *,
        dataset: str,
        tags: dict[str, str],
        params: dict[str, Any],
        metrics: dict[str, float],
        model: Any,
        input_example: Any,
        training_set: Any,
        training_set_source: str,
        fingerprint: str,
        target: str,
        plots: dict[str, Path],
        extra_artifacts: dict[str, str] | None = None,
    ) -> LoggedModel:
        """One MLflow run with everything the standard asks for; registers a new version."""
        missing = [t for t in STANDARD_TAGS if not tags.get(t)]
        if missing:
            raise ValueError(f"experiment-tracking standard: missing tags {missing}")
        with self._mlflow() as mlflow:
            from mlflow.models import infer_signature

            exp_id = self.experiment_id(dataset)
            with mlflow.start_run(experiment_id=exp_id, tags=tags) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics(
                    {_metric_key(k): float(v) for k, v in metrics.items() if v == v}  # drop NaN
                )
                ds = mlflow.data.from_polars(
                    training_set,
                    source=training_set_source,
                    targets=target,
                    name=f"{dataset}_training_set",
                    digest=fingerprint[:36],
                )
                mlflow.log_input(ds, context="training")
                for path in plots.values():
                    mlflow.log_artifact(str(path), artifact_path="plots")
                for name, text in (extra_artifacts or {}).items():
                    mlflow.log_text(text, name)
                prediction = model.predict(input_example)
                with _no_requirement_mismatch_scan():
                    info = mlflow.catboost.log_model(
                        model,
                        name="model",
                        signature=infer_signature(input_example, prediction),
                        input_example=input_example,
                        pip_requirements=model_requirements(),
                        registered_model_name=dataset,
                        await_registration_for=60,
                    )
                version = str(info.registered_model_version)
            client = self.client()
            client.set_registered_model_alias(dataset, CHALLENGER, version)
            for key in ("dagster.run_id", "contract.version", "training_set.fingerprint"):
                client.set_model_version_tag(dataset, version, key, tags[key])
            if PARAMS_SOURCE_TAG in tags:
                client.set_model_version_tag(
                    dataset, version, PARAMS_SOURCE_TAG, tags[PARAMS_SOURCE_TAG]
                )
            # the bytes MLflow stored (CatBoost saves an in-memory model identically each
            # time): what a Bento must serve, verified at build and at every start
            client.set_model_version_tag(
                dataset, version, MODEL_SHA256_TAG, model_file_sha256(model)
            )
            return LoggedModel(
                run_id=run.info.run_id,
                experiment_id=exp_id,
                version=version,
                model_uri=f"models:/{dataset}/{version}",
                run_url=self.run_url(exp_id, run.info.run_id),
            )

    def alias_version(self, dataset: str, alias: str) -> str | None:
        """The version an alias points at, or None when it is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client().get_model_version_by_alias(dataset, alias).version)
        except MlflowException:
            return None

    def load_model(self, dataset: str, version: str):
        with self._mlflow() as mlflow:
            return mlflow.catboost.load_model(f"models:/{dataset}/{version}")

    def model_file(self, dataset: str, version: str, dest: Path) -> Path:
        """Copy the registered version's CatBoost file, byte for byte, to ``dest`` (loading
        and saving again would not give the same bytes, so no recorded sha256 could match)."""
        import shutil
        import tempfile

        import yaml

        with self._mlflow() as mlflow, tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(f"models:/{dataset}/{version}", dst_path=tmp)
            )
            meta = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
            shutil.copyfile(local / meta["flavors"]["catboost"]["data"], dest)
        return dest

    def version_tags(self, dataset: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(dataset, version).tags)

    def record_decision(
        self, dataset: str, version: str, decision: str, description: str, numbers: dict
    ) -> None:
        """Write the promotion decision and its numbers onto the model version."""
        client = self.client()
        client.set_model_version_tag(dataset, version, "promotion.decision", decision)
        for key, value in numbers.items():
            client.set_model_version_tag(dataset, version, f"promotion.{key}", str(value))
        client.update_model_version(dataset, version, description=description)

    def promote(self, dataset: str, version: str) -> str | None:
        """Point ``champion`` at ``version``; return the previous champion's version."""
        previous = self.alias_version(dataset, CHAMPION)
        self.client().set_registered_model_alias(dataset, CHAMPION, version)
        return previous

    def rollback(self, dataset: str, version: str | None = None) -> tuple[str | None, str]:
        """Point ``champion`` back at ``version`` (default: the champion before the current one).

        Returns (from_version, to_version).
        """
        client = self.client()
        current = self.alias_version(dataset, CHAMPION)
        if version is None:
            if current is None:
                raise ValueError(f"{dataset} has no champion to roll back from")
            tags = client.get_model_version(dataset, current).tags
            version = tags.get("promotion.previous_champion")
            if not version or version == "none":
                raise ValueError(
                    f"{dataset} v{current} has no previous champion recorded: name a version"
                )
        client.get_model_version(dataset, version)  # raises if it does not exist
        client.set_registered_model_alias(dataset, CHAMPION, version)
        client.set_model_version_tag(dataset, version, "promotion.decision", "rolled back to")
        return current, version


class SearchTracking:
    """The experiment-tracking standard for model searches (issue 13), on an
    :class:`MlflowTracking`: one parent run per search, in the dataset's experiment, found again
    by its ``search.id`` when the search resumes; one nested run per trial (params, fold
    scores, state); the parent's best config, scores and plots, and the best config as a
    versioned JSON artifact that a training can opt into (``TrainConfig.params_from``).

    Uses :class:`mlflow.MlflowClient` only (no fluent active run), so trials logging from
    several threads never share a run context; the caller serialises the writes.
    """

    def __init__(self, tracking: MlflowTracking) -> None:
        self.tracking = tracking

    def _standard(self, tags: dict[str, str], search_id: str) -> dict[str, str]:
        missing = [t for t in STANDARD_TAGS if not tags.get(t)]
        if missing:
            raise ValueError(f"experiment-tracking standard: missing tags {missing}")
        return {**tags, SEARCH_ID_TAG: search_id}

    def find_parent(self, dataset: str, search_id: str) -> str | None:
        """The parent run of a search, if it exists."""
        client = self.tracking.client()
        exp = client.get_experiment_by_name(dataset)
        if exp is None:
            return None
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=(
                f"tags.`{SEARCH_ID_TAG}` = '{search_id}' and tags.`{SEARCH_ROLE_TAG}` = 'parent'"
            ),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def start_search(
        self,
        dataset: str,
        search_id: str,
        tags: dict[str, str],
        params: dict[str, Any],
        resume: bool = True,
    ) -> str:
        """The search's parent run: the existing one (set running again) on resume, else new
        (a search started over marks its old parent ``search.role = replaced``)."""
        tags = self._standard(tags, search_id)
        client = self.tracking.client()
        run_id = self.find_parent(dataset, search_id)
        if run_id is not None and not resume:
            client.set_tag(run_id, SEARCH_ROLE_TAG, "replaced")
            run_id = None
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            return run_id
        from mlflow.entities import Param

        run = client.create_run(
            self.tracking.experiment_id(dataset),
            tags={**tags, SEARCH_ROLE_TAG: "parent", "mlflow.runName": f"search {search_id}"},
        )
        client.log_batch(
            run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()]
        )
        return run.info.run_id

    def log_trial(
        self, dataset: str, parent: str, search_id: str, tags: dict[str, str], trial: Any
    ) -> str:
        """One trial as a nested run: its params, fold scores, mean score and state."""
        from mlflow.entities import Metric, Param

        client = self.tracking.client()
        run = client.create_run(
            self.tracking.experiment_id(dataset),
            tags={
                **self._standard(tags, search_id),
                SEARCH_ROLE_TAG: "trial",
                "mlflow.parentRunId": parent,
                "mlflow.runName": f"trial {trial.number}",
                "search.trial": str(trial.number),
                "search.trial_state": trial.state.name.lower(),
            },
        )
        from ml_assets.train.search import ROUNDS_PER_FOLD, fold_step

        now = int(time.time() * 1000)
        # the folds' scores; the losses reported during the fits (the steps between) go in as
        # one series per fold, its step the boosting round
        metrics = []
        for step, v in sorted(trial.intermediate_values.items()):
            k, rnd = divmod(step, ROUNDS_PER_FOLD)
            if step == fold_step(k):
                metrics.append(Metric(f"fold_{k + 1}", float(v), now, 0))
            else:
                metrics.append(Metric(f"fold_{k + 1}_early_stopping_loss", abs(float(v)), now, rnd))
        if trial.value is not None:
            metrics.append(Metric("cv_score", float(trial.value), now, 0))
        client.log_batch(
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            metrics=[m for m in metrics if m.value == m.value],
        )
        client.set_terminated(run.info.run_id, "FINISHED" if trial.value is not None else "KILLED")
        return run.info.run_id

    def next_version(self, dataset: str) -> int:
        """One more than the highest result version of the dataset's searches."""
        client = self.tracking.client()
        exp = client.get_experiment_by_name(dataset)
        if exp is None:
            return 1
        # every result ever versioned, a replaced search's too: a version names one result
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{SEARCH_VERSION_TAG}` LIKE '%'"
        )
        versions = [int(r.data.tags.get(SEARCH_VERSION_TAG, 0)) for r in runs]
        return max(versions, default=0) + 1

    def finish_search(
        self, dataset: str, parent: str, result: Any, plots: dict[str, Path] | None = None
    ) -> None:
        """The parent's best params, best and default CV scores (with their fold spread), trial
        counts, plots and the best config as ``best_config.json``: a new result version, unless
        the search ran no new trial (a finished search run again keeps its version)."""
        import json
        import tempfile

        from mlflow.entities import Metric, Param

        client = self.tracking.client()
        previous = client.get_run(parent).data.tags.get(SEARCH_VERSION_TAG)
        # a search run again with nothing left to do keeps its version; any new trial, a new one
        unchanged = previous is not None and result.trials_this_run == 0
        result.version = int(previous) if unchanged else self.next_version(dataset)
        now = int(time.time() * 1000)
        metrics = {
            "best_cv_score": result.best_score,
            "best_cv_spread": result.best_spread,
            "default_cv_score": result.default_score,
            "default_cv_spread": result.default_spread,
            "trials_complete": result.trials_complete,
            "trials_pruned": result.trials_pruned,
            "trials_failed": result.trials_failed,
            "pruned_share": result.pruned_share,
            "search_seconds": result.seconds,
            **{f"best_fold_{k + 1}": v for k, v in enumerate(result.best_fold_scores)},
        }
        existing = client.get_run(parent).data.params
        params = {f"best.{k}": str(v) for k, v in result.best_params.items()}
        client.log_batch(
            parent,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v == v],
            # a resumed search may find a new best: params are write-once in MLflow
            params=[Param(k, v) for k, v in params.items() if k not in existing],
        )
        for k, v in params.items():
            if existing.get(k, v) != v:
                client.set_tag(parent, f"latest.{k}", v)
        client.set_tag(parent, SEARCH_VERSION_TAG, str(result.version))
        client.set_tag(parent, "search.stopped_by", result.stopped_by)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / BEST_CONFIG
            path.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
            client.log_artifact(parent, str(path))
            for plot in (plots or {}).values():
                client.log_artifact(parent, str(plot), artifact_path="plots")
        client.set_terminated(parent, "FINISHED")

    def load_result(self, dataset: str, ref: str) -> dict[str, Any]:
        """A finished search's best config: ``latest``, a search id, or a result version
        (``v3`` / ``3``). Raises ``ValueError`` naming what was asked when there is none."""
        import json
        import tempfile

        client = self.tracking.client()
        exp = client.get_experiment_by_name(dataset)
        # every finished, versioned result (a replaced search's too, by its version)
        where = f"tags.`{SEARCH_VERSION_TAG}` LIKE '%' and attributes.status = 'FINISHED'"
        if ref != "latest":
            version = ref[1:] if ref[:1] in ("v", "V") and ref[1:].isdigit() else ref
            key = SEARCH_VERSION_TAG if version.isdigit() else SEARCH_ID_TAG
            where += f" and tags.`{key}` = '{version if version.isdigit() else ref}'"
        runs = (
            client.search_runs(
                [exp.experiment_id], filter_string=where, order_by=["attributes.end_time DESC"]
            )
            if exp is not None
            else []
        )
        if not runs:
            raise ValueError(
                f"params_from {ref!r}: {dataset} has no finished model search "
                + ("yet (run its model_search job)" if ref == "latest" else "of that id or version")
            )
        runs.sort(key=lambda r: int(r.data.tags[SEARCH_VERSION_TAG]), reverse=True)
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(runs[0].info.run_id, BEST_CONFIG, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
