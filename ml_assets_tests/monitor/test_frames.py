"""The frames monitoring compares: reference from the held-out window, analysis from batch and
served predictions, labels as observed so far."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from ml_assets.contracts import ProblemType
from ml_assets.monitor.frames import SOURCE, analysis_frame, reference_frame, with_labels
from ml_assets.train import core
from ml_assets_tests.train.test_core import FAST, _frame, _problem


@pytest.fixture(scope="module", params=list(ProblemType))
def trained(request):
    kind = request.param
    frame = _frame(kind, n=1500)
    problem = _problem(frame, kind)
    split = core.time_split(frame, "ts")
    return frame, problem, core.fit(split, problem, FAST), split


def test_reference_is_the_held_out_window_with_labels_and_predictions(trained) -> None:
    frame, problem, model, split = trained
    ref = reference_frame(frame, problem, model, "4", split.boundaries[1], ["id"])
    assert ref.height == split.test.height
    assert ref.get_column("ts").min() >= split.boundaries[1]
    outputs = problem.kind.output_schema(problem.classes)
    assert {*outputs, "y", "x", "band", "model_version"} <= set(ref.columns)
    assert ref.schema["prediction"] == outputs["prediction"]
    assert ref.get_column("model_version").unique().to_list() == ["4"]
    # The predictions are the champion's, as batch scoring makes them.
    direct = core.score_frame(model, ref.select("id", "ts", "x", "band"), problem, "4")
    assert ref.get_column("prediction").to_list() == direct.get_column("prediction").to_list()


def test_analysis_unions_batch_and_served_rows_keeping_every_row(trained) -> None:
    _, problem, model, split = trained
    feats = split.test.drop("y")
    batch = core.score_frame(model, feats.head(40), problem, "4")
    served = core.score_frame(model, feats.slice(40, 10), problem, "4")
    served = pl.concat(
        [served.drop("id", "ts"), feats.slice(40, 10).select("x", "band")], how="horizontal"
    ).with_columns(pl.lit(dt.datetime(2024, 2, 1, tzinfo=dt.UTC)).alias("ts"))
    older = served.drop("band")  # a log segment of a model version that had no `band` input
    out = analysis_frame(problem, ["id"], batch, feats, pl.concat([served, older.with_columns(
        pl.lit(None, pl.String).alias("band"))], how="diagonal_relaxed"))  # fmt: skip
    assert out.height == 40 + 20
    assert out.get_column(SOURCE).value_counts().sort(SOURCE).rows() == [
        ("batch", 40),
        ("served", 20),
    ]
    assert out.filter(pl.col(SOURCE) == "served").get_column("band").null_count() == 10
    assert out.filter(pl.col(SOURCE) == "batch").get_column("x").null_count() == 0
    # Served feature rows carry no key: their event time is the request time.
    assert out.filter(pl.col(SOURCE) == "served").get_column("ts").null_count() == 0


def test_labels_join_by_key_as_observed_so_far(trained) -> None:
    _, problem, model, split = trained
    feats = split.test.drop("y").head(10)
    batch = core.score_frame(model, feats, problem, "4")
    out = analysis_frame(problem, ["id"], batch, feats, None)
    t0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    labels = split.test.head(10).select(
        "id", "y", pl.Series("seen", [t0 + dt.timedelta(days=i) for i in range(10)])
    )
    labelled = with_labels(
        out, labels, ["id"], ["id"], "y", "seen", as_of=t0 + dt.timedelta(days=4)
    )
    assert labelled.height == 10
    assert labelled.get_column("y").null_count() == 6  # labels seen on days 0-3 only
    assert with_labels(out, None, ["id"], ["id"], "y", "seen").get_column("y").null_count() == 10


def test_an_empty_partition_gives_an_empty_typed_frame(trained) -> None:
    _, problem, _, _ = trained
    out = analysis_frame(problem, ["id"], None, None, None)
    assert out.height == 0 and SOURCE in out.columns and "prediction" in out.columns
