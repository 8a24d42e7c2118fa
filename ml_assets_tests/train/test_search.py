"""The model search (issue 13) on real Optuna, CatBoost and MLflow, kept small: tiny synthetic
frames, 30 boosting rounds, 2-4 trials.

Budgets (trials and time), reproducibility, the folds (checked on their indices, independently
of the search code), resuming a killed search, the three problem kinds, bad settings refused
before any MLflow run, and a training that opts into a search result.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import numpy as np
import optuna
import polars as pl
import pytest
from mlflow import MlflowClient

from ml_assets.contracts import ProblemType
from ml_assets.dataset import Dataset
from ml_assets.registry.tracking import (
    BEST_CONFIG,
    PARAMS_SOURCE_TAG,
    SEARCH_ID_TAG,
    SEARCH_ROLE_TAG,
    STANDARD_TAGS,
    MlflowTracking,
    SearchTracking,
)
from ml_assets.storage import LAKE_IO, Lake, LakeIOManager
from ml_assets.train import core, search
from ml_assets.train.assets import build_model_asset, build_model_search_asset
from ml_assets.train.config import SearchConfig, TrainConfig
from ml_assets.train.search import SEARCHED, SearchError, run_search, time_folds
from ml_assets.train.training import resolve_params
from ml_assets_tests import yearly

FAST = {"iterations": 30}
TAGS = {tag: f"test-{tag}" for tag in STANDARD_TAGS}
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _frame(kind: ProblemType = ProblemType.BINARY, n: int = 1200, seed: int = 0) -> pl.DataFrame:
    """Rows in shuffled time order (minutes apart, some sharing a minute) with one numeric and
    one categorical feature; the target follows both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    band = rng.choice(["low", "mid", "high"], size=n)
    signal = 2 * x + np.select([band == "low", band == "mid"], [-1.0, 0.0], 1.0)
    signal = signal + rng.normal(scale=0.7, size=n)
    if kind is ProblemType.BINARY:
        y = (signal > 0).astype(int)
    elif kind is ProblemType.MULTICLASS:
        y = np.array(["a", "b", "c"])[np.digitize(signal, [-1, 1])]
    else:
        y = 100 + 10 * signal
    minutes = np.sort(rng.integers(0, n, size=n))  # ties: rows sharing an event time
    frame = pl.DataFrame(
        {
            "id": np.arange(n),
            "ts": [START + dt.timedelta(minutes=int(m)) for m in minutes],
            "x": x,
            "band": band,
            "y": y,
        }
    )
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def _problem(frame: pl.DataFrame, kind: ProblemType = ProblemType.BINARY) -> core.Problem:
    return core.Problem.from_frame(frame, kind, "y", ["x", "band"], "ts")


def _tracking(folder: Path) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", artifact_root=str(folder / "artifacts")
    )


def _search(frame, folder: Path, tracked: bool = False, kind=ProblemType.BINARY, **config):
    return run_search(
        frame,
        _problem(frame, kind),
        SearchConfig(**{**FAST, **config}),
        name="toy",
        fingerprint="fp",
        tracking=SearchTracking(_tracking(folder)) if tracked else None,
        tags=TAGS,
        storage=folder / "search" / "toy.sqlite",
    )


def _runs(folder: Path, role: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("toy")
    return client.search_runs([exp.experiment_id], f"tags.`{SEARCH_ROLE_TAG}` = '{role}'")


# --- folds, checked on the indices --------------------------------------------------------


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_expand_and_never_train_on_a_later_row(folds):
    frame = _frame(n=1000)
    times = frame.get_column("ts").to_list()
    result = time_folds(frame.get_column("ts"), folds)
    assert len(result) == folds
    previous: set[int] = set()
    for fold in result:
        train, valid = fold.train.tolist(), fold.valid.tolist()
        assert train and valid and not set(train) & set(valid)
        assert max(times[i] for i in train) < min(times[i] for i in valid)
        # expanding: each fold trains on everything the previous one trained and validated on
        assert previous <= set(train)
        previous = set(train) | set(valid)
    assert previous == set(range(frame.height))  # the last fold validates on the newest rows
    # the same data gives the same folds (every trial and the default config share them)
    again = time_folds(frame.get_column("ts"), folds)
    assert all(
        (a.train == b.train).all() and (a.valid == b.valid).all()
        for a, b in zip(result, again, strict=True)
    )


# --- pruning within a fold ---------------------------------------------------------------


def test_the_pruner_hears_the_loss_during_the_fit_and_can_stop_a_trial_in_its_first_fold():
    """Every REPORT_EVERY rounds the early-stopping loss reaches the hook, at steps of the first
    fold; a stop ends the fit at once and the trial never reaches its second fold."""
    frame = _frame(n=1200)
    problem = _problem(frame)
    data = search.SearchData.build(frame, problem, time_folds(frame.get_column("ts"), 3))
    config = TrainConfig(iterations=200, early_stopping_rounds=1000)
    heard: list[tuple[int, float]] = []
    folds: list[int] = []

    def hook(step: int, loss: float) -> bool:
        heard.append((step, loss))
        return step >= 3 * search.REPORT_EVERY  # stop at the third report (rounds count from 1)

    with pytest.raises(search.Pruned, match="pruned in fold 1"):
        search.fold_scores(data, config, 1, lambda k, s: folds.append(k), hook)
    assert folds == []  # the first fold's score was never reached
    steps = [step for step, _ in heard]
    assert steps == [search.REPORT_EVERY * i for i in (1, 2, 3)]
    assert all(0 < loss < 1 for _, loss in heard)  # binary log loss, falling as it learns
    assert heard[-1][1] < heard[0][1]
    # unstopped, the hook hears every fold, at steps that never collide across folds
    heard.clear()

    def listens(step: int, loss: float) -> bool:
        heard.append((step, loss))
        return False

    scores = search.fold_scores(data, TrainConfig(iterations=60), 1, None, listens)
    assert len(scores) == 3
    by_fold = {step // search.ROUNDS_PER_FOLD for step, _ in heard}
    assert by_fold == {0, 1, 2}
    assert (
        search.fold_step(0)
        < search.ROUNDS_PER_FOLD
        <= min(s for s, _ in heard if s >= search.ROUNDS_PER_FOLD)
    )


# --- budgets ------------------------------------------------------------------------------


def test_the_trial_budget_is_respected_and_tracked_by_the_standard(tmp_path):
    result = _search(_frame(), tmp_path, tracked=True, n_trials=3, timeout_s=600)
    assert result.stopped_by == "n_trials"
    assert result.trials == 3 and result.trials_this_run == 3
    [parent] = _runs(tmp_path, "parent")
    trials = _runs(tmp_path, "trial")
    assert len(trials) == 3
    for run in [parent, *trials]:
        assert run.data.tags[SEARCH_ID_TAG] == result.search_id
        assert all(run.data.tags[t] == TAGS[t] for t in STANDARD_TAGS)
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["search.trial_state"] in ("complete", "pruned")
        assert set(run.data.params) == set(SEARCHED)
        assert "fold_1" in run.data.metrics or "fold_1_early_stopping_loss" in run.data.metrics
    states = sorted(r.data.tags["search.trial_state"] for r in trials)
    assert states.count("pruned") == result.trials_pruned
    m = parent.data.metrics
    assert m["best_cv_score"] == pytest.approx(result.best_score)
    assert m["default_cv_score"] == pytest.approx(result.default_score)
    assert "best_cv_spread" in m and "default_cv_spread" in m
    assert {f"best.{k}" for k in SEARCHED} <= set(parent.data.params)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert BEST_CONFIG in artifacts
    assert "plots/optimization_history.png" in plots
    if result.trials_complete >= 2:
        assert "plots/param_importance.png" in plots
    else:
        assert any("parameter importance needs 2" in n for n in result.notes)
    loaded = SearchTracking(_tracking(tmp_path)).load_result("toy", "latest")
    assert loaded["params"] == result.best_params and loaded["version"] == 1
    assert SearchTracking(_tracking(tmp_path)).load_result("toy", "v1") == loaded
    assert SearchTracking(_tracking(tmp_path)).load_result("toy", result.search_id) == loaded
    # started over: a new study and a new parent run; the old parent is marked replaced
    over = _search(_frame(), tmp_path, tracked=True, n_trials=1, resume=False)
    assert over.search_id == result.search_id and over.trials == 1 and over.version == 2
    assert [r.info.run_id for r in _runs(tmp_path, "replaced")] == [parent.info.run_id]
    assert SearchTracking(_tracking(tmp_path)).load_result("toy", "latest")["version"] == 2


def test_the_time_budget_stops_the_search_before_its_trials(tmp_path):
    result = _search(_frame(), tmp_path, n_trials=10_000, timeout_s=1.5)
    assert result.stopped_by == "timeout"
    assert 0 < result.trials < 10_000
    # ends within the budget plus one trial (generous: a trial here takes well under a second)
    assert result.seconds < 1.5 + 30


def test_the_same_seed_and_trial_count_give_the_same_best_config(tmp_path):
    first = _search(_frame(), tmp_path / "a", n_trials=3, seed=7)
    second = _search(_frame(), tmp_path / "b", n_trials=3, seed=7)
    assert first.best_params == second.best_params
    assert first.best_fold_scores == second.best_fold_scores
    assert first.default_fold_scores == second.default_fold_scores


@pytest.mark.parametrize("kind", list(ProblemType))
def test_each_problem_kind_is_searched_by_its_primary_metric(tmp_path, kind):
    result = _search(_frame(kind), tmp_path, kind=kind, n_trials=2)
    problem_kind = _problem(_frame(kind), kind).kind
    assert result.metric == problem_kind.primary_metric
    assert result.higher_is_better is problem_kind.higher_is_better
    assert result.trials == 2 and np.isfinite(result.best_score)
    study = optuna.load_study(
        study_name=result.search_id, storage=f"sqlite:///{tmp_path / 'search' / 'toy.sqlite'}"
    )
    assert study.direction.name == ("MAXIMIZE" if problem_kind.higher_is_better else "MINIMIZE")
    done = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert result.best_score == (max(done) if problem_kind.higher_is_better else min(done))


def test_parallel_trials_never_oversubscribe_the_cores(tmp_path, monkeypatch):
    if search.cores() < 2:  # on CI a missing core is a failure, not a skipped test
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs two cores")
    threads: list[int] = []
    real = search.fold_scores

    def spy(data, config, thread_count, report=None, every_round=None):
        if report is not None:  # a trial (the default config uses every core, alone)
            threads.append(thread_count)
        return real(data, config, thread_count, report, every_round)

    monkeypatch.setattr(search, "fold_scores", spy)
    result = _search(_frame(), tmp_path, n_trials=2, parallel=2)
    assert result.trials == 2
    assert threads and all(t * 2 <= search.cores() for t in threads)


# --- a killed search resumes --------------------------------------------------------------

KILLED = """
import os, signal, sys
import polars as pl
from ml_assets.train import search
from ml_assets_tests.train.test_search import _search, _frame
from pathlib import Path

done = []
real = search.fold_scores

def dies_in_the_third_trial(data, config, threads, report=None, every_round=None):
    if report is not None and len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: trial 2 is left RUNNING
    return real(data, config, threads, report, every_round)

def counted(trial):
    done.append(trial.number)

search.fold_scores = dies_in_the_third_trial
original = search.run_search
def run_search(*args, **kwargs):
    return original(*args, on_trial=counted, **kwargs)
search.run_search = run_search
import ml_assets_tests.train.test_search as t
t.run_search = run_search
_search(_frame(), Path(sys.argv[1]), tracked=True, n_trials=4, seed=3)
"""


def test_a_killed_search_resumes_without_repeating_trials(tmp_path):
    code = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert code.returncode == -9, code.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'search' / 'toy.sqlite'}"
    [sid] = optuna.get_all_study_names(storage)
    before = optuna.load_study(study_name=sid, storage=storage).trials
    assert [t.state.name for t in before][:2] != ["RUNNING", "RUNNING"]
    assert before[2].state.name == "RUNNING" and len(before) == 3
    assert len(_runs(tmp_path, "trial")) == 2

    result = _search(_frame(), tmp_path, tracked=True, n_trials=4, seed=3)
    after = optuna.load_study(study_name=sid, storage=storage).trials
    assert result.search_id == sid and result.trials == 4 and result.trials_this_run == 2
    assert after[2].state.name == "FAIL"  # the killed trial counts for nothing
    for old, new in zip(before[:2], after[:2], strict=True):  # finished trials kept, not rerun
        assert (old.params, old.value, old.datetime_complete) == (
            new.params,
            new.value,
            new.datetime_complete,
        )
    assert [t.number for t in after if t.state.name in ("COMPLETE", "PRUNED")] == [0, 1, 3, 4]
    [parent] = _runs(tmp_path, "parent")  # the parent run is reused
    assert parent.info.status == "FINISHED"
    assert sorted(int(r.data.tags["search.trial"]) for r in _runs(tmp_path, "trial")) == [
        0,
        1,
        3,
        4,
    ]
    again = _search(_frame(), tmp_path, tracked=True, n_trials=4, seed=3)
    assert again.stopped_by == "done" and again.trials_this_run == 0
    assert again.version == result.version  # nothing new: the same result version


# --- bad input, refused before any MLflow run ---------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": -3}, "n_trials"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"depth": []}, "depth"),
        ({"depth": [8, 4]}, "depth range [8, 4] is inverted"),
        ({"learning_rate": [0.3, 0.01]}, "learning_rate"),
        ({"l2_leaf_reg": [0.0, 3.0]}, "l2_leaf_reg"),
        ({"border_count": [16]}, "border_count"),
        ({"model_family": "lightgbm"}, "model_family 'lightgbm' is unknown"),
        ({"parallel": 64}, "parallel"),
        ({"folds": 1}, "folds"),
        ({"folds": 30}, "folds = 30 needs at least"),
    ],
)
def test_a_bad_setting_is_refused_naming_it_before_any_mlflow_run(tmp_path, setting, message):
    with pytest.raises(SearchError, match=re.escape(message)):
        _search(_frame(n=600), tmp_path, tracked=True, **setting)
    assert not (tmp_path / "mlflow.db").exists()  # no run, not even a tracking store
    assert not (tmp_path / "search").exists()


def test_a_training_set_too_small_for_its_folds_is_refused(tmp_path):
    with pytest.raises(SearchError, match="folds = 3"):
        _search(_frame(n=100), tmp_path, tracked=True)
    assert not (tmp_path / "mlflow.db").exists()


# --- opting in ----------------------------------------------------------------------------


def test_opting_in_changes_the_trained_models_params_and_tags(tmp_path, monkeypatch):
    """Through Dagster: the survey dataset's model_search, then its model with and without
    ``params_from``; the registered versions say where their hyperparameters came from."""
    dataset = Dataset.build(yearly.contract())
    keys = dataset.keys
    rng = np.random.default_rng(1)
    n = 1500
    satisfaction = rng.uniform(0, 10, size=n)
    plan = rng.choice(["basic", "plus", "pro"], size=n)
    renewed = (satisfaction + (plan == "pro") * 2 + rng.normal(scale=2, size=n)) > 5.5
    frame = pl.DataFrame(
        {
            "id": np.arange(n),
            "answered_at": [START + dt.timedelta(hours=int(i)) for i in range(n)],
            "satisfaction": satisfaction,
            "plan": plan,
            "renewed": renewed.astype(int),
        }
    )
    lake = Lake(base_path=str(tmp_path / "lake"))
    lake.write(keys.training_set, None, frame)
    mlflow = _tracking(tmp_path)
    resources = {"lake": lake, LAKE_IO: LakeIOManager(lake=lake), "mlflow": mlflow}
    assets = [build_model_search_asset(dataset), build_model_asset(dataset)]
    instance = dg.DagsterInstance.ephemeral()
    search_op, model_op = (k.to_python_identifier() for k in (keys.model_search, keys.model))
    monkeypatch.setenv("ML_ASSETS_HOME", str(tmp_path / "home"))  # the study storage

    searched = dg.materialize(
        assets,
        selection=[keys.model_search],
        resources=resources,
        instance=instance,
        run_config={"ops": {search_op: {"config": {**FAST, "n_trials": 2, "depth": [2, 3]}}}},
    )
    assert searched.success
    meta = searched.asset_materializations_for_node(search_op)[0].metadata
    assert meta["config_version"].value == 1 and meta["trials"].value == 2
    assert "best_cv_roc_auc" in meta and "default_cv_roc_auc" in meta and "plots" in meta
    sid = meta["search_id"].value

    def train(config: dict) -> dict[str, str]:
        result = dg.materialize(
            assets,
            selection=[keys.model],
            resources=resources,
            instance=instance,
            run_config={"ops": {model_op: {"config": {**FAST, **config}}}},
            raise_on_error=False,
        )
        [m] = result.asset_materializations_for_node(model_op)
        version = str(m.metadata["model_version"].value)
        tags = mlflow.version_tags("survey", version)
        run = mlflow.client().get_run(mlflow.client().get_model_version("survey", version).run_id)
        return {**tags, **{f"run.{k}": v for k, v in run.data.tags.items()},
                **{f"param.{k}": v for k, v in run.data.params.items()}}  # fmt: skip

    default = train({})
    opted = train({"params_from": "latest"})
    best = SearchTracking(mlflow).load_result("survey", "latest")["params"]
    assert default[PARAMS_SOURCE_TAG] == default[f"run.{PARAMS_SOURCE_TAG}"] == "default"
    assert opted[PARAMS_SOURCE_TAG] == opted[f"run.{PARAMS_SOURCE_TAG}"] == sid
    assert opted["param.depth"] == str(best["depth"]) != default["param.depth"]  # 6 by default
    assert opted["param.border_count"] == str(best["border_count"])
    config, source = resolve_params(mlflow, "survey", TrainConfig(params_from="v1"))
    assert source == sid and config.depth == best["depth"]
    with pytest.raises(ValueError, match="params_from 'v9'"):
        resolve_params(mlflow, "survey", TrainConfig(params_from="v9"))


def test_the_asset_refuses_a_bad_setting_before_reading_or_tracking(tmp_path, monkeypatch):
    dataset = Dataset.build(yearly.contract())
    lake = Lake(base_path=str(tmp_path / "lake"))
    monkeypatch.setenv("ML_ASSETS_HOME", str(tmp_path / "home"))
    op = dataset.keys.model_search.to_python_identifier()
    result = dg.materialize(
        [build_model_search_asset(dataset)],
        resources={"lake": lake, LAKE_IO: LakeIOManager(lake=lake), "mlflow": _tracking(tmp_path)},
        run_config={"ops": {op: {"config": {"timeout_s": 0}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "model search: timeout_s must be a positive number" in str(failure.step_failure_data)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "home").exists()
