"""Generated pandera schemas and raw-to-contract casting, on small real polars frames."""

from __future__ import annotations

import datetime as dt
import math

import pandera.polars as pa
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from ml_assets.contracts import BUNDLED_DIR, Column, ColumnType, Contract, parse_contract
from ml_assets.contracts.model import EntityTable
from ml_assets.validate.schema import TYPED, cast_expr, pandera_schema, parse_datetimes

CAR_LOAN_TEXT = (BUNDLED_DIR / "car_loan.yaml").read_text(encoding="utf-8")
UTC = dt.UTC


@pytest.fixture(scope="module")
def car_loan() -> Contract:
    return parse_contract(CAR_LOAN_TEXT)


@pytest.fixture(scope="module")
def entity_schema(car_loan: Contract) -> pa.DataFrameSchema:
    return pandera_schema(car_loan.entity, name="car_loan.entity")


def entity_frame(**overrides: pl.Series) -> pl.DataFrame:
    """Three correctly typed car_loan entity rows; ``overrides`` replace whole columns."""
    frame = pl.DataFrame(
        {
            "id": pl.Series([1, 2, 3], dtype=pl.Int64),
            "timestamp": pl.Series(
                [dt.datetime(2018, 1, 1, h, tzinfo=UTC) for h in (0, 1, 2)],
                dtype=pl.Datetime("us", "UTC"),
            ),
            "car_value": [15_000.0, 0.0, 1_000_000.0],
            "salary_range": ["0 - 20K €", None, "60K+ €"],
            "debt_to_income_ratio": [0.2, 0.0, 5.0],
            "loan_length": [12.0, 1.0, 120.0],
            "repaid_loan_on_prev_car": [True, False, True],
            "size_of_downpayment": ["0%", "20%", "40%"],
            "driver_tenure": [3.5, None, 80.0],
        }
    )
    return frame.with_columns(**overrides)


def failures(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> set[tuple[str, str]]:
    """(column, check) of every failure, collected lazily."""
    with pytest.raises(SchemaErrors) as info:
        schema.validate(frame, lazy=True)
    cases = info.value.failure_cases
    return {(str(c), str(k)) for c, k in cases.select("column", "check").iter_rows()}


def failure_values(schema: pa.DataFrameSchema, frame: pl.DataFrame, column: str) -> set[str]:
    with pytest.raises(SchemaErrors) as info:
        schema.validate(frame, lazy=True)
    cases = info.value.failure_cases.filter(pl.col("column") == column)
    return set(cases["failure_case"].to_list())


# --- the generated schema ----------------------------------------------------------------


def test_schema_mirrors_the_contract(car_loan: Contract, entity_schema: pa.DataFrameSchema) -> None:
    assert list(entity_schema.columns) == list(car_loan.entity.columns)
    assert entity_schema.strict is True
    assert entity_schema.unique == ["id"]
    assert entity_schema.name == "car_loan.entity"
    for name, col in car_loan.entity.columns.items():
        assert entity_schema.columns[name].nullable is col.nullable
        assert entity_schema.columns[name].dtype.type == TYPED[col.type]
    assert pandera_schema(car_loan.labels).unique == ["id"]


def test_schema_accepts_a_correct_frame(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame()
    validated = entity_schema.validate(frame, lazy=True)
    assert validated.equals(frame)


def test_schema_accepts_nulls_where_nullable(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        salary_range=pl.Series([None, None, None], dtype=pl.String),
        driver_tenure=pl.Series([None, None, None], dtype=pl.Float64),
    )
    assert entity_schema.validate(frame, lazy=True).height == 3


def test_schema_rejects_out_of_range(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        car_value=pl.Series([-0.01, 10.0, 1_000_000.5]),
        loan_length=pl.Series([0.0, 12.0, 12.0]),
    )
    assert failures(entity_schema, frame) == {
        ("car_value", "greater_than_or_equal_to(0.0)"),
        ("car_value", "less_than_or_equal_to(1000000.0)"),
        ("loan_length", "greater_than_or_equal_to(1.0)"),
    }
    assert failure_values(entity_schema, frame, "car_value") == {"-0.01", "1000000.5"}


def test_schema_rejects_negative_int_key(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(id=pl.Series([1, -2, 3], dtype=pl.Int64))
    assert failures(entity_schema, frame) == {("id", "greater_than_or_equal_to(0.0)")}


def test_schema_rejects_values_not_allowed(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        size_of_downpayment=pl.Series(["0%", "15%", "40%"]),
        salary_range=pl.Series(["0 - 20K €", "0 - 20K", None]),
    )
    found = failures(entity_schema, frame)
    assert {c for c, _ in found} == {"size_of_downpayment", "salary_range"}
    assert all(check.startswith("isin(") for _, check in found)
    assert failure_values(entity_schema, frame, "size_of_downpayment") == {"15%"}
    assert failure_values(entity_schema, frame, "salary_range") == {"0 - 20K"}


def test_schema_rejects_null_in_non_nullable(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        car_value=pl.Series([None, 1.0, 2.0], dtype=pl.Float64),
        size_of_downpayment=pl.Series(["0%", None, "40%"], dtype=pl.String),
        repaid_loan_on_prev_car=pl.Series([True, None, False], dtype=pl.Boolean),
    )
    assert failures(entity_schema, frame) == {
        ("car_value", "not_nullable"),
        ("size_of_downpayment", "not_nullable"),
        ("repaid_loan_on_prev_car", "not_nullable"),
    }


def test_schema_rejects_duplicate_primary_key(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(id=pl.Series([7, 7, 8], dtype=pl.Int64))
    found = failures(entity_schema, frame)
    assert {check for _, check in found} == {"multiple_fields_uniqueness"}


def test_labels_schema_rejects_duplicate_key_and_bad_target(car_loan: Contract) -> None:
    schema = pandera_schema(car_loan.labels)
    ts = pl.Series([dt.datetime(2018, 2, 1, tzinfo=UTC)] * 3, dtype=pl.Datetime("us", "UTC"))
    good = pl.DataFrame({"id": [1, 2, 3], "observed_at": ts, "repaid": [0, 1, 1]})
    assert schema.validate(good, lazy=True).height == 3
    bad = good.with_columns(id=pl.Series([1, 1, 3]), repaid=pl.Series([0, 1, 2]))
    checks = {check for _, check in failures(schema, bad)}
    assert checks == {"multiple_fields_uniqueness", "isin([0, 1])"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_schema_rejects_non_finite_floats(entity_schema: pa.DataFrameSchema, bad: float) -> None:
    frame = entity_frame(debt_to_income_ratio=pl.Series([0.1, bad, 0.3]))
    assert ("debt_to_income_ratio", "not a finite number") in failures(entity_schema, frame)


def test_finite_check_on_an_unbounded_nullable_float() -> None:
    # no range and nullable: only the finite rule can catch NaN and infinities
    table = EntityTable.model_validate(
        {
            "table": "t",
            "primary_key": ["id"],
            "event_time": "ts",
            "columns": {
                "id": {"type": "int"},
                "ts": {"type": "datetime"},
                "score": {"type": "float", "nullable": True},
            },
        }
    )
    schema = pandera_schema(table)
    ts = pl.Series([dt.datetime(2018, 1, 1, tzinfo=UTC)] * 4, dtype=pl.Datetime("us", "UTC"))
    ok = pl.DataFrame({"id": [1, 2, 3, 4], "ts": ts, "score": [-1e300, 0.0, None, 1e300]})
    assert schema.validate(ok, lazy=True).height == 4
    for bad in (math.nan, math.inf, -math.inf):
        frame = ok.with_columns(score=pl.Series([1.0, bad, None, 2.0]))
        assert failures(schema, frame) == {("score", "not a finite number")}


def test_schema_rejects_extra_column(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame().with_columns(applicant_name=pl.lit("x"))
    found = failures(entity_schema, frame)
    assert found == {("car_loan.entity", "column_in_schema")}
    with pytest.raises(SchemaErrors) as info:
        entity_schema.validate(frame, lazy=True)
    assert info.value.failure_cases["failure_case"].to_list() == ["applicant_name"]


def test_schema_rejects_missing_column(entity_schema: pa.DataFrameSchema) -> None:
    found = failures(entity_schema, entity_frame().drop("driver_tenure"))
    assert found == {("car_loan.entity", "column_in_dataframe")}


def test_schema_rejects_wrong_dtypes(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        id=pl.Series([1.0, 2.0, 3.0]),
        timestamp=pl.Series([dt.datetime(2018, 1, 1)] * 3, dtype=pl.Datetime("us")),
    )
    assert {c for c, _ in failures(entity_schema, frame)} == {"id", "timestamp"}


def test_schema_reports_every_failure_lazily(entity_schema: pa.DataFrameSchema) -> None:
    frame = entity_frame(
        id=pl.Series([5, 5, 6], dtype=pl.Int64),
        car_value=pl.Series([-1.0, None, 3.0]),
        size_of_downpayment=pl.Series(["0%", "5%", "40%"]),
        loan_length=pl.Series([12.0, math.inf, 12.0]),
    ).with_columns(extra=pl.lit(0))
    checks = {check for _, check in failures(entity_schema, frame)}
    assert {
        "multiple_fields_uniqueness",
        "greater_than_or_equal_to(0.0)",
        "not_nullable",
        "isin(['0%', '10%', '20%', '30%', '40%'])",
        "not a finite number",
        "column_in_schema",
    } <= checks


# --- cast_expr ---------------------------------------------------------------------------


def cast(
    values: list, column: Column | ColumnType, dtype: pl.DataType | None = None, tz: str = "UTC"
) -> list:
    col = column if isinstance(column, Column) else Column(type=column, allowed=None)
    frame = pl.DataFrame({"raw": pl.Series(values, dtype=dtype)})
    out = frame.select(cast_expr("raw", col, frame.schema["raw"], tz).alias("v"))
    assert out.schema["v"] == TYPED[col.type]
    return out["v"].to_list()


def test_cast_strings_to_int() -> None:
    assert cast(["12", "12.0", " 12 ", "-3", "12.5", "x", "", None], ColumnType.INT) == [
        12,
        12,
        12,
        -3,
        None,
        None,
        None,
        None,
    ]


def test_cast_floats_to_int() -> None:
    assert cast([3.0, 3.5, -2.0, math.nan, math.inf, None], ColumnType.INT, pl.Float64) == [
        3,
        None,
        -2,
        None,
        None,
        None,
    ]


def test_cast_numbers_to_bool() -> None:
    assert cast([0, 1, 2, -1, None], ColumnType.BOOL, pl.Int64) == [False, True, None, None, None]
    assert cast([0.0, 1.0, 0.5], ColumnType.BOOL, pl.Float64) == [False, True, None]


def test_cast_strings_to_bool() -> None:
    values = ["true", "no", "Yes", " F ", "0", "1", "TRUE", "maybe", None]
    assert cast(values, ColumnType.BOOL) == [
        True,
        False,
        True,
        False,
        False,
        True,
        True,
        None,
        None,
    ]


def test_cast_strings_to_float() -> None:
    assert cast(["1.5", " 2 ", "1e3", "abc", None], ColumnType.FLOAT) == [
        1.5,
        2.0,
        1000.0,
        None,
        None,
    ]
    assert cast([1, 2], ColumnType.FLOAT, pl.Int64) == [1.0, 2.0]


def test_cast_to_category_and_string_keeps_text() -> None:
    cat = Column(type=ColumnType.CATEGORY, allowed=["1", "2"])
    assert cast([1, 2, None], cat, pl.Int64) == ["1", "2", None]
    assert cast([True, False], ColumnType.STRING, pl.Boolean) == ["true", "false"]


def test_cast_is_identity_for_the_right_type() -> None:
    assert cast([1, None, 3], ColumnType.INT, pl.Int64) == [1, None, 3]


def test_cast_strings_to_date() -> None:
    assert cast(["2018-01-31", "2018-02-30", "x"], ColumnType.DATE) == [
        dt.date(2018, 1, 31),
        None,
        None,
    ]


DATETIME_TEXT = [
    ("2018-01-01 00:00:00", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2018-01-01T00:00:00", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2018-01-01T00:00:00Z", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2018-01-01 02:00:00+02:00", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2017-12-31T19:00:00-05:00", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2018-01-01 00:00:00.123456", dt.datetime(2018, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ("2018-01-01T01:00:00.5+01:00", dt.datetime(2018, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)),
    ("2018-01-01 00:00", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("2018-01-01", dt.datetime(2018, 1, 1, tzinfo=UTC)),
    ("  2018-01-01 00:00:00  ", dt.datetime(2018, 1, 1, tzinfo=UTC)),
]


@pytest.mark.parametrize(("text", "instant"), DATETIME_TEXT)
def test_cast_datetime_text_to_utc_instant(text: str, instant: dt.datetime) -> None:
    (got,) = cast([text], ColumnType.DATETIME)
    assert got == instant
    assert got.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "garbage", ["garbage", "2018-13-01 00:00:00", "2018-01-01 25:00:00", "01/02/2018", ""]
)
def test_cast_garbage_datetime_text_to_null(garbage: str) -> None:
    assert cast([garbage, "2018-01-01 00:00:00"], ColumnType.DATETIME) == [
        None,
        dt.datetime(2018, 1, 1, tzinfo=UTC),
    ]


def test_naive_text_is_read_in_the_contract_timezone() -> None:
    amsterdam = parse_contract(
        CAR_LOAN_TEXT.replace("  timezone: UTC", "  timezone: Europe/Amsterdam")
    )
    tz = amsterdam.partitioning.timezone
    assert tz == "Europe/Amsterdam"
    column = amsterdam.entity.columns["timestamp"]
    got = cast(
        [
            "2018-01-01 00:00:00",  # CET, UTC+1
            "2018-07-01 00:00:00",  # CEST, UTC+2
            "2018-01-01T00:00:00Z",  # aware: not shifted
            "2018-01-01 02:00:00+02:00",  # aware: not shifted
        ],
        column,
        tz=tz,
    )
    assert got == [
        dt.datetime(2017, 12, 31, 23, tzinfo=UTC),
        dt.datetime(2018, 6, 30, 22, tzinfo=UTC),
        dt.datetime(2018, 1, 1, tzinfo=UTC),
        dt.datetime(2018, 1, 1, tzinfo=UTC),
    ]
    in_utc = cast(["2018-01-01 00:00:00"], column, tz="UTC")
    assert in_utc[0] - got[0] == dt.timedelta(hours=1)


def test_naive_text_in_a_dst_gap_is_null_and_ambiguous_takes_earliest() -> None:
    got = cast(
        ["2018-03-25 02:30:00", "2018-10-28 02:30:00"], ColumnType.DATETIME, tz="Europe/Amsterdam"
    )
    assert got[0] is None  # clocks jumped from 02:00 to 03:00
    assert got[1] == dt.datetime(2018, 10, 28, 0, 30, tzinfo=UTC)  # first 02:30, still CEST


def test_naive_datetime_column_gets_the_contract_timezone() -> None:
    naive = [dt.datetime(2018, 1, 1), dt.datetime(2018, 7, 1, 12), None]
    assert cast(naive, ColumnType.DATETIME, pl.Datetime("us"), tz="Europe/Amsterdam") == [
        dt.datetime(2017, 12, 31, 23, tzinfo=UTC),
        dt.datetime(2018, 7, 1, 10, tzinfo=UTC),
        None,
    ]
    assert cast(naive[:1], ColumnType.DATETIME, pl.Datetime("ns"), tz="UTC") == [
        dt.datetime(2018, 1, 1, tzinfo=UTC)
    ]


def test_aware_datetime_column_converts_to_utc() -> None:
    local = pl.Series(
        [dt.datetime(2018, 1, 1, 1), dt.datetime(2018, 7, 1, 2)]
    ).dt.replace_time_zone("Europe/Amsterdam")
    frame = pl.DataFrame({"raw": local.dt.cast_time_unit("ms")})
    column = Column(type=ColumnType.DATETIME)
    # the contract timezone does not reinterpret values that already carry one
    out = frame.select(cast_expr("raw", column, frame.schema["raw"], "America/New_York").alias("v"))
    assert out.schema["v"] == pl.Datetime("us", "UTC")
    assert out["v"].to_list() == [
        dt.datetime(2018, 1, 1, 0, tzinfo=UTC),
        dt.datetime(2018, 7, 1, 0, tzinfo=UTC),
    ]


def test_date_column_to_datetime_is_midnight_in_the_contract_timezone() -> None:
    got = cast([dt.date(2018, 1, 1)], ColumnType.DATETIME, pl.Date, tz="Europe/Amsterdam")
    assert got == [dt.datetime(2017, 12, 31, 23, tzinfo=UTC)]


def test_datetime_column_to_date() -> None:
    got = cast([dt.datetime(2018, 1, 1, 23, 59)], ColumnType.DATE, pl.Datetime("us"))
    assert got == [dt.date(2018, 1, 1)]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Amsterdam"])
def test_parse_datetimes_agrees_with_cast_expr(tz: str) -> None:
    clean = ["2018-01-01 00:00:00", "2018-01-01 00:00:00.250", None]
    mixed = [text for text, _ in DATETIME_TEXT] + ["garbage", None]
    for values in (clean, mixed):
        series = pl.Series("ts", values, dtype=pl.String)
        fast = parse_datetimes(series, tz)
        assert fast.name == "ts"
        assert fast.dtype == pl.Datetime("us", "UTC")
        assert fast.to_list() == cast(values, ColumnType.DATETIME, pl.String, tz=tz)


def test_cast_then_validate_round_trip(
    car_loan: Contract, entity_schema: pa.DataFrameSchema
) -> None:
    raw = pl.DataFrame(
        {
            "id": ["1", "2.0"],
            "timestamp": ["2018-01-01T00:00:00Z", "2018-01-01 03:00:00+02:00"],
            "car_value": ["15000", "20000.5"],
            "salary_range": ["0 - 20K €", None],
            "debt_to_income_ratio": [0.5, 1],
            "loan_length": [12, 24],
            "repaid_loan_on_prev_car": ["yes", "no"],
            "size_of_downpayment": ["0%", "10%"],
            "driver_tenure": [None, "2.5"],
        },
        strict=False,
    )
    typed = raw.select(
        cast_expr(name, col, raw.schema[name], "UTC").alias(name)
        for name, col in car_loan.entity.columns.items()
    )
    validated = entity_schema.validate(typed, lazy=True)
    assert validated["id"].to_list() == [1, 2]
    assert validated["timestamp"].to_list() == [
        dt.datetime(2018, 1, 1, tzinfo=UTC),
        dt.datetime(2018, 1, 1, 1, tzinfo=UTC),
    ]
    assert validated["repaid_loan_on_prev_car"].to_list() == [True, False]
    assert validated["driver_tenure"].to_list() == [None, 2.5]
