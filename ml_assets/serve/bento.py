"""Build a Bento from a registered model: plain functions under the ``bento`` asset.

1. :func:`stage_champion` saves the MLflow champion's CatBoost model (``model.cbm``, native
   format) and its problem (features, categoricals, classes) to a folder.
2. :func:`prepare_context` lays out a build context: ``bentos/service.py`` and
   ``predictor.proto``, the serving subset of the ``ml_assets`` package (contract and feature
   code, ``ml_assets.serve``; no Dagster, no MLflow, none of the bundled contract YAMLs), the
   dataset's contract and features YAML under ``dataset/`` (:mod:`ml_assets.serve.carried`),
   ``bentofile.yaml``, the OpenAPI description, and ``bento_config.json``: the dataset, the
   carried files' fingerprints, and the online store and prediction log of the building
   platform as absolute defaults (:func:`ml_assets.serve.config.build_locations`). The Bento
   so needs nothing from the machine it is served on but the Python packages it lists.
3. :func:`build_bento` runs the import and the build in a subprocess with ``BENTOML_HOME`` set
   (BentoML resolves its stores once per process; a subprocess also keeps BentoML out of the
   Dagster process): the model goes into the model store with labels linking back to the
   registry and the runs (an identical import is reused), then ``bentoml build``.

The build is offline: ``python.lock_packages: false`` and requirements pinned to the versions in
the current environment, so nothing is resolved or downloaded; CPU only (no CUDA, no torch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ml_assets import settings
from ml_assets.serve.carried import DATASET_DIR, features_fingerprint, write_dataset_files
from ml_assets.serve.config import CONFIG_FILE, ServeConfig, build_locations

if TYPE_CHECKING:
    from ml_assets.features import FeatureSpec

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
SERVICE_TARGET = "service:PredictionService"

# What the service imports, pinned to this environment's versions (no resolution at build).
# BentoML adds its own pinned requirement.
REQUIREMENTS = (
    "catboost",
    "numpy",
    "polars",
    "orjson",
    "pyyaml",
    "pydantic",
    "sqlalchemy",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "protobuf",
    "prometheus-client",
)
OPTIONAL_REQUIREMENTS = {
    "psycopg": "psycopg[binary]",  # PostgreSQL online stores
    "s3fs": "s3fs",  # a prediction log on an object store (ML_ASSETS_PREDICTION_LOG=s3://...)
    "universal-pathlib": "universal-pathlib",
}
# Package files that pull Dagster or MLflow in stay out of the Bento, and so do the bundled
# contract and features YAMLs: the Bento's one contract is the one it carries.
EXCLUDE = ("assets.py", "__pycache__", "*.pyc", "cli.py", "*.yaml")
PACKAGE_PARTS = (
    "__init__.py",
    "settings.py",
    "problems.py",
    "py.typed",
    "contracts",
    "features",
    "serve",
)


@dataclass(frozen=True)
class StagedModel:
    """A registered model version saved to disk, ready to import into BentoML."""

    dataset: str
    version: str
    run_id: str
    directory: Path
    labels: dict[str, str]


@dataclass(frozen=True)
class BuiltBento:
    """What :func:`build_bento` made."""

    bento_tag: str
    model_tag: str
    model_version: str
    home: Path
    path: Path
    reused_model: bool
    reused_bento: bool
    seconds: float

    @property
    def serve_command(self) -> str:
        return f"BENTOML_HOME={self.home} bentoml serve {self.bento_tag}"

    def env(self) -> dict[str, str]:
        return {"BENTOML_HOME": str(self.home)}


def default_home() -> Path:
    """``BENTOML_HOME`` of the platform (see :attr:`ml_assets.settings.Settings.bentoml_home`)."""
    return settings.current().bentoml_home


def default_service_dir() -> Path:
    """The folder with ``service.py`` and ``predictor.proto`` (``ML_ASSETS_BENTOS``, else the
    checkout's ``bentos/``); a clear error when neither is there (an installed package)."""
    folder = settings.current().bentos_path
    if not (folder / "service.py").exists():
        raise FileNotFoundError(
            f"no BentoML service at {folder}: set ML_ASSETS_BENTOS to a copy of the "
            "repository's bentos/ folder"
        )
    return folder


def requirements() -> list[str]:
    """The Bento's Python requirements, pinned to what is installed here."""
    out = [f"{name}=={metadata.version(name)}" for name in REQUIREMENTS]
    for dist, req in OPTIONAL_REQUIREMENTS.items():
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{req}=={metadata.version(dist)}")
    return out


def stage_champion(
    tracking: Any,
    dataset: str,
    directory: Path,
    *,
    alias: str = "champion",
    dagster_run_id: str = "",
    contract_version: str = "",
) -> StagedModel:
    """Save the model the registry alias points at (``model.cbm``, ``problem.json``)."""
    from ml_assets.serve.runtime import MODEL_FILE, PROBLEM_FILE

    version = tracking.alias_version(dataset, alias)
    if version is None:
        raise LookupError(f"{dataset} has no {alias} model in the registry")
    tags = tracking.version_tags(dataset, version)
    if "problem" not in tags:
        raise LookupError(f"{dataset} v{version} has no 'problem' tag: cannot feed the model")
    from ml_assets.registry.tracking import MODEL_SHA256_TAG, file_sha256

    run_id = tracking.client().get_model_version(dataset, version).run_id or ""
    directory.mkdir(parents=True, exist_ok=True)
    recorded = tags.get(MODEL_SHA256_TAG)
    if recorded:
        tracking.model_file(dataset, version, directory / MODEL_FILE)
        sha256 = file_sha256(directory / MODEL_FILE)
        if sha256 != recorded:
            raise ValueError(
                f"{dataset} v{version}: the registry's model file has sha256 {sha256}, not the "
                f"{recorded} recorded when it was registered: refusing to build a Bento of it"
            )
    else:  # registered before sha256s were recorded: what is staged now is what is served
        tracking.load_model(dataset, version).save_model(str(directory / MODEL_FILE))
        sha256 = file_sha256(directory / MODEL_FILE)
    problem = json.loads(tags["problem"])
    (directory / PROBLEM_FILE).write_text(json.dumps(problem, indent=2), encoding="utf-8")
    labels = {
        "dataset": dataset,
        "registered_model": dataset,
        "model_version": str(version),
        "mlflow_run_id": run_id,
        "dagster_run_id": dagster_run_id or tags.get("dagster.run_id", ""),
        "training_dagster_run_id": tags.get("dagster.run_id", ""),
        "contract_version": contract_version or tags.get("contract.version", ""),
        "training_set_fingerprint": tags.get("training_set.fingerprint", ""),
        "model_sha256": sha256,
    }
    return StagedModel(dataset, str(version), run_id, directory, labels)


def dataset_spec(dataset: str) -> FeatureSpec:
    """The dataset's feature spec as the platform loads it (settings' contracts and features
    folders): what a Bento is built with when the caller gives none."""
    from ml_assets.contracts import load_contracts
    from ml_assets.features import load_feature_spec

    folder = settings.current().contracts_path
    contracts = load_contracts(folder)
    if dataset not in contracts:
        raise LookupError(
            f"no contract for dataset {dataset!r} in {folder} (ML_ASSETS_CONTRACTS): "
            f"{sorted(contracts)}"
        )
    return load_feature_spec(contracts[dataset])


def prepare_context(
    context: Path,
    config: ServeConfig,
    *,
    spec: FeatureSpec | None = None,
    service_dir: Path | None = None,
    labels: dict[str, str] | None = None,
    openapi: dict[str, Any] | None = None,
    lock_packages: bool = False,
) -> Path:
    """Lay out a build context in ``context`` (created).

    ``spec`` is the dataset's feature spec (with its contract) the Bento carries; default: as
    :func:`dataset_spec` loads it. ``lock_packages`` lets BentoML resolve a lock file, which
    needs a package index: the build is then no longer offline (and fails inside
    :func:`build_bento`'s guard).
    """
    spec = spec or dataset_spec(config.dataset)
    if spec.dataset != config.dataset:
        raise ValueError(f"the spec is {spec.dataset!r}'s, the config serves {config.dataset!r}")
    context.mkdir(parents=True, exist_ok=True)
    source = service_dir or default_service_dir()
    for name in ("service.py", "predictor.proto"):
        shutil.copy(source / name, context / name)
    pkg = context / "ml_assets"
    pkg.mkdir(exist_ok=True)
    for part in PACKAGE_PARTS:
        src = PACKAGE / part
        if src.is_dir():
            shutil.copytree(src, pkg / part, ignore=shutil.ignore_patterns(*EXCLUDE))
        else:
            shutil.copy(src, pkg / part)
    for profile in sorted(settings.DEPLOY.glob("*/profile.yaml")):
        # The profiles travel with the code: a serving host that sets ML_ASSETS_PROFILE gets
        # the profile's defaults (online store, prediction log, ...) without a checkout.
        target = context / "deploy" / profile.parent.name / profile.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(profile, target)
    carried = write_dataset_files(context, spec, settings.current().contracts_path)
    config = replace(config, **carried.config_fields())
    (context / CONFIG_FILE).write_text(config.to_json(), encoding="utf-8")
    if openapi is not None:
        (context / "openapi.json").write_text(json.dumps(openapi, indent=2), encoding="utf-8")
    bentofile = {
        "service": SERVICE_TARGET,
        "name": config.service_name,
        "description": (
            f"{config.dataset} prediction service (HTTP + gRPC) serving model "
            f"{(labels or {}).get('model_version', '?')}; built by ml_assets."
        ),
        "labels": labels or {},
        "include": [
            "service.py",
            "predictor.proto",
            CONFIG_FILE,
            "openapi.json",
            "ml_assets/**",
            f"{DATASET_DIR}/**",
            "deploy/*/profile.yaml",
        ],
        "exclude": ["**/__pycache__", "**/*.pyc"],
        "python": {"packages": requirements(), "lock_packages": lock_packages},
        "docker": {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"},
    }
    (context / "bentofile.yaml").write_text(yaml.safe_dump(bentofile, sort_keys=False))
    return context


def _openapi_for(staged: StagedModel, spec: FeatureSpec) -> dict[str, Any]:
    """The OpenAPI description for the staged model (the runtime without log/gRPC/metrics)."""
    from ml_assets.serve.openapi import openapi_document
    from ml_assets.serve.runtime import ServingRuntime, load_bundle

    bundle = load_bundle(staged.directory, labels=staged.labels)
    return openapi_document(ServingRuntime(spec, bundle))


def offline_env(home: Path) -> dict[str, str]:
    """Environment of the build subprocess: its BentoML home, telemetry off, and no way out
    (package indexes off, every proxy a closed local port): a build that tried to download
    would fail instead of quietly reaching out."""
    env = settings.child_env(drop_prefixes=("ML_ASSETS_SERVE_",))
    env["BENTOML_HOME"] = str(home)
    env.update(
        {
            "PIP_NO_INDEX": "1",
            "UV_OFFLINE": "1",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "NO_PROXY": "",
        }
    )
    return env


UV_GUARD = """#!/bin/sh
echo "ml_assets: the Bento build must stay offline; BentoML tried to run: uv $*" >&2
exit 3
"""


def _uv_guard(directory: Path) -> Path:
    """A folder with a ``uv`` that refuses to run.

    BentoML 1.4 looks uv up before every build and, when it is not on PATH, runs
    ``pip install uv`` (a download) even though an unlocked build never calls it. This guard
    satisfies the lookup, and would fail the build loudly if BentoML ever tried to lock or
    resolve packages with it.
    """
    folder = directory / "uv-guard"
    folder.mkdir(exist_ok=True)
    uv = folder / "uv"
    uv.write_text(UV_GUARD)
    uv.chmod(0o755)
    return folder


def build_bento(
    staged: StagedModel,
    *,
    spec: FeatureSpec | None = None,
    home: Path | None = None,
    service_dir: Path | None = None,
    config: ServeConfig | None = None,
    isolate_network: bool = False,
    lock_packages: bool = False,
    timeout: float = 600,
) -> BuiltBento:
    """Import the staged model and build the Bento (in a subprocess; see the module doc).

    ``spec`` is the dataset's feature spec (and contract) the Bento carries (default: as the
    platform loads it, :func:`dataset_spec`). The config's online store URL and prediction log
    root default to the building platform's (absolute). ``isolate_network`` runs the
    subprocess in an empty network namespace (``unshare -rn``), proving the build needs no
    network.
    """
    home = Path(home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = config or ServeConfig(dataset=staged.dataset)
    spec = spec or dataset_spec(config.dataset)
    trained_under = staged.labels.get("contract_version")
    if trained_under and trained_under != spec.contract.version:
        log.warning(
            "%s: the model was trained under contract %s; the Bento carries contract %s",
            spec.dataset,
            trained_under,
            spec.contract.version,
        )
    defaults = {
        k: v for k, v in build_locations(settings.current()).items() if not getattr(config, k)
    }
    config = replace(config, **defaults)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"bento-{staged.dataset}-") as tmp:
        ctx = prepare_context(
            Path(tmp) / "context",
            config,
            spec=spec,
            service_dir=service_dir,
            labels={
                **staged.labels,
                "contract_fingerprint": spec.contract.fingerprint(),
                "features_fingerprint": features_fingerprint(spec.file),
            },
            openapi=_openapi_for(staged, spec),
            lock_packages=lock_packages,
        )
        request = Path(tmp) / "request.json"
        request.write_text(
            json.dumps(
                {"staged": str(staged.directory), "context": str(ctx), "labels": staged.labels}
            )
        )
        cmd = [sys.executable, "-m", "ml_assets.serve.bento", str(request)]
        if isolate_network:
            cmd = ["unshare", "-rn", *cmd]
        env = offline_env(home)
        env["PATH"] = f"{_uv_guard(Path(tmp))}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ctx,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"bento build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    return BuiltBento(
        bento_tag=result["bento_tag"],
        model_tag=result["model_tag"],
        model_version=staged.version,
        home=home,
        path=Path(result["path"]),
        reused_model=result["reused_model"],
        reused_bento=result["reused_bento"],
        seconds=time.perf_counter() - started,
    )


def export_url(store: str, dataset: str, bento_tag: str) -> str:
    """Where :func:`export_bento` puts a Bento in a store (``<store>/<dataset>/<name>-<version>.bento``)."""
    return f"{store.rstrip('/')}/{dataset}/{bento_tag.replace(':', '-')}.bento"


def _bentoml_cli(args: list[str], home: Path, timeout: float = 300) -> str:
    """Run ``bentoml <args>`` with ``BENTOML_HOME`` set (a subprocess: BentoML fixes its stores
    once per process); its stdout, or a RuntimeError with the end of its stderr."""
    env = settings.child_env()
    env["BENTOML_HOME"] = str(home)
    exe = str(Path(sys.executable).parent / "bentoml")
    proc = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"bentoml {args[0]} failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout


def export_bento(built: BuiltBento, store: str, dataset: str) -> str:
    """Export a built Bento (service, model, contract) as one archive into ``store`` (any
    fsspec URL: ``s3://bucket/bentos``), where every serving host imports it from; its URL."""
    url = export_url(store, dataset, built.bento_tag)
    _bentoml_cli(["export", built.bento_tag, url], built.home)
    return url


def import_bento(url: str, home: Path) -> str:
    """Import an exported Bento into the BentoML home ``home`` (a serving host's); its tag."""
    home.mkdir(parents=True, exist_ok=True)
    _bentoml_cli(["import", url], home)
    name, _, version = Path(url).name.removesuffix(".bento").rpartition("-v")
    return f"{name}:v{version}"


# --- the subprocess ---------------------------------------------------------------------------


def _import_model(staged_dir: Path, labels: dict[str, str]) -> tuple[str, bool]:
    """Import into the model store, or reuse an import of the same version and run."""
    import bentoml

    from ml_assets.serve.runtime import MODEL_FILE, PROBLEM_FILE

    name = labels["dataset"]
    same = ("model_version", "mlflow_run_id", "registered_model", "model_sha256")
    try:
        existing = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        existing = []
    for model in existing:
        have = model.info.labels
        if all(have.get(k) == labels.get(k) for k in same):
            return str(model.tag), True
    problem = json.loads((staged_dir / PROBLEM_FILE).read_text(encoding="utf-8"))
    with bentoml.models.create(
        name,
        labels=labels,
        metadata={"problem": problem, "framework": "catboost", "format": "cbm"},
    ) as model:
        for file in (MODEL_FILE, PROBLEM_FILE):
            shutil.copy(staged_dir / file, model.path_of(file))
    return str(model.tag), False


def content_version(ctx: Path, model_tag: str, labels: dict[str, str]) -> str:
    """A Bento version from what it serves: the model, the registered version, the code and
    settings. Who built it and when (run ids in the labels) does not change it, so building
    the same champion with the same code again finds the Bento already there."""
    h = hashlib.sha256(model_tag.encode())
    config = json.loads((ctx / CONFIG_FILE).read_text())
    h.update(
        json.dumps({k: v for k, v in config.items() if k != "labels"}, sort_keys=True).encode()
    )
    h.update("\n".join(requirements()).encode())
    for path in sorted(ctx.rglob("*")):
        if path.is_file() and path.name not in (CONFIG_FILE, "bentofile.yaml"):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(ctx)).encode())
            h.update(path.read_bytes())
    version = labels.get("model_version", "0")
    return f"v{version}-{h.hexdigest()[:16]}"


def _run(request_file: Path) -> dict[str, Any]:
    import bentoml
    from bentoml.exceptions import NotFound

    req = json.loads(request_file.read_text())
    ctx = Path(req["context"])
    labels = req["labels"]
    model_tag, reused_model = _import_model(Path(req["staged"]), labels)
    config_path = ctx / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["model_tag"] = model_tag
    config["model_sha256"] = labels.get("model_sha256", "")
    config["labels"] = labels
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    bentofile = yaml.safe_load((ctx / "bentofile.yaml").read_text())
    version = content_version(ctx, model_tag, labels)
    try:
        bento = bentoml.bentos.get(f"{bentofile['name']}:{version}")
        reused_bento = True
    except NotFound:
        bento = bentoml.bentos.build_bentofile(
            str(ctx / "bentofile.yaml"), build_ctx=str(ctx), version=version
        )
        reused_bento = False
    return {
        "bento_tag": str(bento.tag),
        "model_tag": model_tag,
        "reused_model": reused_model,
        "reused_bento": reused_bento,
        "path": str(bento.path),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = _run(Path(sys.argv[1]))
    sys.stdout.write(json.dumps(out) + "\n")
