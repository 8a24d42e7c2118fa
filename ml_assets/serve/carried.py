"""What a Bento carries of its dataset: the contract and features YAML it was built with.

A served Bento must not depend on the machine it runs on for the definition of its data: the
contract (record validation, keys, event time) and the feature spec (the features
``predict_by_keys`` computes) travel inside it. At build, :func:`write_dataset_files` writes
``dataset/contract.yaml`` and ``dataset/features.yaml`` into the build context (the files the
platform loaded, byte for byte, when they can be found; else the parsed content as YAML) and
returns their paths and fingerprints, which go into ``bento_config.json``. At start,
:func:`served_spec` parses the carried files and checks their fingerprints against the recorded
ones: a Bento whose files were edited after the build refuses to start, saying so.

A ``bentos/`` folder served unbuilt (no carried files) reads the contracts folder of the
settings instead (``ML_ASSETS_CONTRACTS``), as a checkout does.

``features_fingerprint`` belongs on :class:`~ml_assets.features.FeatureSpec` next to
:meth:`~ml_assets.contracts.Contract.fingerprint`; it lives here until it moves there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from ml_assets.contracts import Contract
    from ml_assets.features import FeatureSpec
    from ml_assets.features.declarations import FeatureFile
    from ml_assets.serve.config import ServeConfig

log = logging.getLogger(__name__)

DATASET_DIR = "dataset"
CONTRACT_FILE = f"{DATASET_DIR}/contract.yaml"
FEATURES_FILE = f"{DATASET_DIR}/features.yaml"


class BentoContentError(RuntimeError):
    """A Bento's carried dataset files are missing, do not parse or do not match the
    fingerprints recorded at build: the message names the file and what to do."""


@dataclass(frozen=True)
class CarriedFiles:
    """Where the carried files are (relative to the service folder) and their fingerprints."""

    contract_file: str
    contract_fingerprint: str
    features_file: str
    features_fingerprint: str

    def config_fields(self) -> dict[str, str]:
        """The :class:`~ml_assets.serve.config.ServeConfig` fields recording them."""
        return {
            "contract_file": self.contract_file,
            "contract_fingerprint": self.contract_fingerprint,
            "features_file": self.features_file,
            "features_fingerprint": self.features_fingerprint,
        }


def features_fingerprint(file: FeatureFile) -> str:
    """A short hash of a features file's content (not its formatting or comments), as
    :meth:`Contract.fingerprint` is of a contract's."""
    payload = json.dumps(file.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _dump(model: object) -> str:
    data = model.model_dump(mode="json", by_alias=True)  # type: ignore[attr-defined]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def contract_text(contract: Contract, contracts_dir: Path | None) -> tuple[str, str]:
    """(YAML text, where it came from) of ``contract``: the file of ``contracts_dir`` holding
    exactly this contract (same fingerprint), else the contract dumped as YAML."""
    from ml_assets.contracts import ContractError, load_contract

    wanted = contract.fingerprint()
    if contracts_dir is not None and contracts_dir.is_dir():
        for path in sorted(contracts_dir.glob("*.yaml")):
            try:
                found = load_contract(path)
            except ContractError:
                continue
            if found.name == contract.name and found.fingerprint() == wanted:
                return path.read_text(encoding="utf-8"), str(path)
    return _dump(contract), "<generated from the loaded contract>"


def features_text(spec: FeatureSpec) -> tuple[str, str]:
    """(YAML text, where it came from) of the feature spec: its file when it was loaded from one
    that still holds the same content, else the spec dumped as YAML (a dataset without a
    features file gets its passthrough default written out)."""
    from ml_assets.features.spec import FeatureSpecError, parse_feature_spec

    origin = Path(spec.origin)
    if not spec.origin.startswith("<") and origin.is_file():
        text = origin.read_text(encoding="utf-8")
        try:
            same = parse_feature_spec(text, spec.contract, str(origin)).file == spec.file
        except FeatureSpecError:
            same = False
        if same:
            return text, str(origin)
    return _dump(spec.file), "<generated from the loaded feature spec>"


def write_dataset_files(
    directory: Path, spec: FeatureSpec, contracts_dir: Path | None = None
) -> CarriedFiles:
    """Write the contract and features YAML of ``spec`` under ``directory`` (a build context)
    and return their paths and fingerprints; each file is re-read to check it gives back the
    same content."""
    from ml_assets.contracts import parse_contract
    from ml_assets.features.spec import parse_feature_spec

    folder = directory / DATASET_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ctext, corigin = contract_text(spec.contract, contracts_dir)
    ftext, forigin = features_text(spec)
    (directory / CONTRACT_FILE).write_text(ctext, encoding="utf-8")
    (directory / FEATURES_FILE).write_text(ftext, encoding="utf-8")
    contract = parse_contract(ctext, CONTRACT_FILE)
    file = parse_feature_spec(ftext, contract, FEATURES_FILE).file
    if contract.fingerprint() != spec.contract.fingerprint() or file != spec.file:
        raise BentoContentError(  # pragma: no cover - the dumps round-trip (tested)
            f"{spec.dataset}: the carried contract or features do not read back as loaded"
        )
    log.info("%s: the Bento carries %s and %s", spec.dataset, corigin, forigin)
    return CarriedFiles(
        CONTRACT_FILE, contract.fingerprint(), FEATURES_FILE, features_fingerprint(file)
    )


def carried_spec(directory: Path, config: ServeConfig) -> FeatureSpec:
    """The feature spec (and contract) a Bento carries, checked against its fingerprints."""
    from ml_assets.contracts import ContractError, parse_contract
    from ml_assets.features.spec import FeatureSpecError, parse_feature_spec

    rebuild = f"rebuild the Bento (materialize {config.dataset}/bento) instead of editing it"
    texts = {}
    for name in (config.contract_file, config.features_file):
        path = directory / name
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BentoContentError(
                f"{path}: this Bento's carried file is missing or unreadable ({exc}); {rebuild}"
            ) from None
    cpath = directory / config.contract_file
    fpath = directory / config.features_file
    try:
        contract = parse_contract(texts[config.contract_file], str(cpath))
        spec = parse_feature_spec(texts[config.features_file], contract, str(fpath))
    except (ContractError, FeatureSpecError) as exc:
        raise BentoContentError(f"this Bento's carried dataset files are invalid: {exc}") from None
    checks = (
        (cpath, "contract", contract.fingerprint(), config.contract_fingerprint),
        (fpath, "features", features_fingerprint(spec.file), config.features_fingerprint),
    )
    for path, what, actual, recorded in checks:
        if actual != recorded:
            raise BentoContentError(
                f"{path}: the {what} this Bento carries has fingerprint {actual}, but the Bento "
                f"recorded {recorded} when it was built: the file was changed after the build; "
                f"{rebuild}"
            )
    if contract.name != config.dataset:
        raise BentoContentError(
            f"this Bento serves dataset {contract.name!r} (its carried contract), not "
            f"{config.dataset!r}: unset ML_ASSETS_SERVE_DATASET or serve a Bento of "
            f"{config.dataset!r}"
        )
    return spec


def served_spec(directory: Path | None, config: ServeConfig) -> FeatureSpec:
    """What a service serves: the files its Bento carries, or (a ``bentos/`` folder served
    unbuilt) the dataset's contract from the settings' contracts folder and its features."""
    if config.contract_file:
        if directory is None:
            raise BentoContentError("a built Bento's config needs the folder it is in")
        return carried_spec(directory, config)
    from ml_assets import settings
    from ml_assets.contracts import load_contracts
    from ml_assets.features import load_feature_spec

    folder = settings.current().contracts_path
    contracts = load_contracts(folder)
    if config.dataset not in contracts:
        raise LookupError(
            f"no contract for dataset {config.dataset!r} in {folder} (ML_ASSETS_CONTRACTS): "
            f"{sorted(contracts)}"
        )
    return load_feature_spec(contracts[config.dataset])
