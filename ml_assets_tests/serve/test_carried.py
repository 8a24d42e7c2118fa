"""What a Bento carries of its dataset (contract, features, fingerprints) and where a served
Bento keeps its state: the plain functions, on the bundled contracts and temp folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ml_assets import settings
from ml_assets.contracts import BUNDLED_DIR, load_contracts
from ml_assets.features import load_feature_spec
from ml_assets.serve.carried import (
    CONTRACT_FILE,
    FEATURES_FILE,
    BentoContentError,
    carried_spec,
    features_fingerprint,
    served_spec,
    write_dataset_files,
)
from ml_assets.serve.config import (
    CONFIG_FILE,
    ServeConfig,
    ServeConfigError,
    absolute_online_url,
    build_locations,
)


def carried_config(directory: Path, dataset: str) -> ServeConfig:
    spec = load_feature_spec(load_contracts()[dataset])
    carried = write_dataset_files(directory, spec, BUNDLED_DIR)
    return ServeConfig(dataset=dataset, **carried.config_fields())


@pytest.mark.parametrize("dataset", ["car_loan", "car_price", "credit_card"])
def test_the_bundled_files_are_carried_byte_for_byte_and_read_back(
    tmp_path: Path, dataset: str
) -> None:
    config = carried_config(tmp_path, dataset)
    contract = load_contracts()[dataset]
    assert (tmp_path / CONTRACT_FILE).read_bytes() == (BUNDLED_DIR / f"{dataset}.yaml").read_bytes()
    features = BUNDLED_DIR / "features" / f"{dataset}.yaml"
    assert (tmp_path / FEATURES_FILE).read_bytes() == features.read_bytes()
    assert config.contract_fingerprint == contract.fingerprint()
    spec = carried_spec(tmp_path, config)
    assert spec.contract == contract
    assert spec.file == load_feature_spec(contract).file
    assert features_fingerprint(spec.file) == config.features_fingerprint


def test_a_contract_not_on_disk_and_the_default_features_are_written_out(tmp_path: Path) -> None:
    """A contract loaded from elsewhere (not in the folder) and a dataset without a features
    file: both are dumped as YAML that reads back to the same content."""
    contract = load_contracts()["car_price"].model_copy(update={"name": "my_prices"})
    spec = load_feature_spec(contract, directory=tmp_path / "no_features_here")
    assert spec.origin == "<default>"
    carried = write_dataset_files(tmp_path / "ctx", spec, BUNDLED_DIR)
    config = ServeConfig(dataset="my_prices", **carried.config_fields())
    back = carried_spec(tmp_path / "ctx", config)
    assert back.contract == contract
    assert back.file == spec.file
    assert back.names == spec.names


def test_features_fingerprint_follows_content_not_formatting() -> None:
    spec = load_feature_spec(load_contracts()["car_loan"])
    same = spec.file.model_copy()
    assert features_fingerprint(same) == features_fingerprint(spec.file)
    changed = spec.file.model_copy(update={"description": "other"})
    assert features_fingerprint(changed) != features_fingerprint(spec.file)


@pytest.mark.parametrize(
    ("name", "old", "new", "what"),
    [
        (CONTRACT_FILE, "max: 1000000", "max: 2000000", "the contract"),
        (FEATURES_FILE, "window: 90d", "window: 30d", "the features"),
    ],
)
def test_an_edited_carried_file_fails_naming_file_and_fingerprints(
    tmp_path: Path, name: str, old: str, new: str, what: str
) -> None:
    config = carried_config(tmp_path, "car_loan")
    path = tmp_path / name
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(BentoContentError) as err:
        carried_spec(tmp_path, config)
    message = str(err.value)
    assert str(path) in message and f"{what} this Bento carries" in message
    assert "changed after the build" in message and "rebuild the Bento" in message


def test_formatting_only_edits_keep_the_fingerprint(tmp_path: Path) -> None:
    config = carried_config(tmp_path, "car_loan")
    path = tmp_path / CONTRACT_FILE
    path.write_text("# a comment added later\n" + path.read_text(encoding="utf-8"))
    assert carried_spec(tmp_path, config).dataset == "car_loan"


def test_missing_or_invalid_carried_files_fail_clearly(tmp_path: Path) -> None:
    config = carried_config(tmp_path, "car_loan")
    (tmp_path / FEATURES_FILE).write_text("dataset: car_loan\nrow: [{name: x, op: nope}]\n")
    with pytest.raises(BentoContentError, match=r"carried dataset files are invalid.*features"):
        carried_spec(tmp_path, config)
    (tmp_path / FEATURES_FILE).unlink()
    with pytest.raises(BentoContentError, match=r"features\.yaml: this Bento's carried file is"):
        carried_spec(tmp_path, config)


def test_serving_another_dataset_than_the_carried_one_fails(tmp_path: Path) -> None:
    config = dataclasses.replace(carried_config(tmp_path, "car_loan"), dataset="credit_card")
    with pytest.raises(BentoContentError, match=r"serves dataset 'car_loan'.*SERVE_DATASET"):
        carried_spec(tmp_path, config)


def test_unbuilt_service_reads_the_settings_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bentos/`` served from a checkout: the contracts folder of the settings (and the same
    clear error as before for a dataset it does not hold)."""
    monkeypatch.delenv("ML_ASSETS_CONTRACTS", raising=False)
    assert served_spec(tmp_path, ServeConfig(dataset="car_price")).dataset == "car_price"
    monkeypatch.setenv("ML_ASSETS_CONTRACTS", str(BUNDLED_DIR))
    with pytest.raises(LookupError, match=r"no contract for dataset 'mine'.*ML_ASSETS_CONTRACTS"):
        served_spec(tmp_path, ServeConfig(dataset="mine"))


def test_a_carrying_bento_ignores_ml_assets_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = carried_config(tmp_path / "bento", "car_loan")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ML_ASSETS_CONTRACTS", str(empty))
    assert served_spec(tmp_path / "bento", config).dataset == "car_loan"


# --- where a served Bento keeps its state ----------------------------------------------------

STATE_VARS = ("ML_ASSETS_HOME", "ML_ASSETS_ONLINE_URL", "ML_ASSETS_PREDICTION_LOG")


def bento_dir(tmp_path: Path, **fields: str) -> Path:
    folder = tmp_path / "src"
    config = carried_config(folder, "car_loan")
    (folder / CONFIG_FILE).write_text(dataclasses.replace(config, **fields).to_json())
    return folder


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in STATE_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_build_records_absolute_locations(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("ML_ASSETS_HOME", "relative_home")
    got = build_locations(settings.current())
    assert got == {
        "prediction_log_dir": str(tmp_path / "relative_home" / "prediction_log"),
        "online_url": f"sqlite:///{tmp_path / 'relative_home' / 'online.sqlite'}",
    }
    clean_env.setenv("ML_ASSETS_ONLINE_URL", "sqlite:///store.sqlite")
    assert build_locations(settings.current())["online_url"] == (
        f"sqlite:///{tmp_path / 'store.sqlite'}"
    )
    # a password is not written into a Bento
    clean_env.setenv("ML_ASSETS_ONLINE_URL", "postgresql+psycopg://u:secret@db:5432/x")
    assert "online_url" not in build_locations(settings.current())
    assert absolute_online_url("postgresql+psycopg://db/x") == "postgresql+psycopg://db/x"


def test_a_bento_uses_its_recorded_locations_by_default(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = bento_dir(
        tmp_path, prediction_log_dir="/srv/log", online_url="sqlite:////srv/online.sqlite"
    )
    clean_env.chdir(folder)  # where BentoML runs a worker
    config = ServeConfig.load(folder)
    assert config.resolved_log_dir() == Path("/srv/log")
    assert config.resolved_online_url() == "sqlite:////srv/online.sqlite"


def test_serve_time_home_and_variables_override_the_recorded_ones(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = bento_dir(
        tmp_path, prediction_log_dir="/srv/log", online_url="sqlite:////srv/online.sqlite"
    )
    home = tmp_path / "home"
    clean_env.setenv("ML_ASSETS_HOME", str(home))
    config = ServeConfig.load(folder)
    assert config.resolved_log_dir() == home / "prediction_log"
    assert config.resolved_online_url() == f"sqlite:///{home / 'online.sqlite'}"
    clean_env.setenv("ML_ASSETS_PREDICTION_LOG", str(tmp_path / "log"))
    clean_env.setenv("ML_ASSETS_ONLINE_URL", "postgresql+psycopg://db/x")
    config = ServeConfig.load(folder)
    assert config.resolved_log_dir() == tmp_path / "log"
    assert config.resolved_online_url() == "postgresql+psycopg://db/x"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ML_ASSETS_HOME", ".ml_assets"),
        ("ML_ASSETS_PREDICTION_LOG", "logs/predictions"),
        ("ML_ASSETS_ONLINE_URL", "sqlite:///online.sqlite"),
    ],
)
def test_relative_state_paths_fail_a_bento_naming_the_variable(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, var: str, value: str
) -> None:
    folder = bento_dir(tmp_path, prediction_log_dir="/srv/log")
    clean_env.setenv(var, value)
    with pytest.raises(ServeConfigError, match=rf"{var}=.*relative.*absolute"):
        ServeConfig.load(folder)


def test_a_prediction_log_on_an_object_store_is_recorded_and_served_as_its_url(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """An ``s3://`` log is the same wherever the workers run: recorded as is at build, taken
    as is at serve time (no absolute-path rule), resolved to a path on the object store."""
    clean_env.setenv("ML_ASSETS_PREDICTION_LOG", "s3://bucket/prediction_log")
    assert build_locations(settings.current())["prediction_log_dir"] == (
        "s3://bucket/prediction_log"
    )
    folder = bento_dir(tmp_path, prediction_log_dir="/srv/log")
    config = ServeConfig.load(folder)
    assert config.prediction_log_dir == "s3://bucket/prediction_log"
    assert str(config.resolved_log_dir()) == "s3://bucket/prediction_log"
    recorded = bento_dir(tmp_path / "other", prediction_log_dir="s3://bucket/recorded")
    clean_env.delenv("ML_ASSETS_PREDICTION_LOG")
    assert str(ServeConfig.load(recorded).resolved_log_dir()) == "s3://bucket/recorded"


def test_a_relative_home_is_fine_when_the_specific_variables_are_absolute(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = bento_dir(tmp_path, prediction_log_dir="/srv/log")
    clean_env.setenv("ML_ASSETS_HOME", ".ml_assets")
    clean_env.setenv("ML_ASSETS_PREDICTION_LOG", str(tmp_path / "log"))
    clean_env.setenv("ML_ASSETS_ONLINE_URL", f"sqlite:///{tmp_path / 'o.sqlite'}")
    assert ServeConfig.load(folder).resolved_log_dir() == tmp_path / "log"


def test_a_bento_recording_no_store_serves_without_one(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    folder = bento_dir(tmp_path, prediction_log_dir="/srv/log")
    assert ServeConfig.load(folder).resolved_online_url() == ""
    old = bento_dir(tmp_path / "old")  # recorded no log location either
    with pytest.raises(ServeConfigError, match="ML_ASSETS_PREDICTION_LOG"):
        ServeConfig.load(old).resolved_log_dir()


def test_unbuilt_service_resolves_as_the_platform_does(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.chdir(tmp_path)
    clean_env.setenv("ML_ASSETS_HOME", "rel")
    config = ServeConfig.load(tmp_path)  # no config file: the repository's bentos/
    assert config.resolved_log_dir() == tmp_path / "rel" / "prediction_log"
    assert config.resolved_online_url() == f"sqlite:///{tmp_path / 'rel' / 'online.sqlite'}"
