"""``ml-assets contract init``: a draft contract from a table that passes ``ml-assets check``."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from ml_assets.cli import main
from ml_assets.contracts import load_contract
from ml_assets.contracts.check import check
from ml_assets.contracts.draft import DraftError, draft_contract

ROWS = 400
START = dt.datetime(2024, 3, 1)


def mixed_table(url: str, name: str = "orders") -> None:
    """A hand-made table of 20 columns of every kind: keys, times (one as text), numbers with
    and without nulls, flags, categories, free text, a date, a decimal, a name that is not
    snake_case, and a three-class outcome to predict."""
    rng = random.Random(7)
    md = sa.MetaData()
    table = sa.Table(
        name,
        md,
        sa.Column("order_id", sa.BigInteger, primary_key=True),
        sa.Column("placed_at", sa.DateTime, nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("discount", sa.Float),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("is_gift", sa.Boolean, nullable=False),
        sa.Column("colour", sa.Text, nullable=False),
        sa.Column("region", sa.String(20)),
        sa.Column("note", sa.Text),
        sa.Column("customer_since", sa.Date, nullable=False),
        sa.Column("shipped_at", sa.DateTime),
        sa.Column("unit_price", sa.Numeric(10, 2), nullable=False),
        sa.Column("rating", sa.SmallInteger),
        sa.Column("weight_kg", sa.Float, nullable=False),
        sa.Column("coupon", sa.String(8)),
        sa.Column("first_order", sa.Integer, nullable=False),
        sa.Column("tier", sa.Text, nullable=False),
        sa.Column("CamelScore", sa.Float),
        sa.Column("visits", sa.BigInteger),
        sa.Column("outcome", sa.Text, nullable=False),
    )
    rows = []
    for i in range(ROWS):
        placed = START + dt.timedelta(hours=2.5 * i, minutes=rng.randint(0, 59))
        rows.append(
            {
                "order_id": 1000 + i,
                "placed_at": placed,
                "amount": round(rng.uniform(5, 500), 2),
                "discount": None if i % 7 == 0 else rng.uniform(0, 0.3),
                "quantity": rng.randint(1, 12),
                "is_gift": rng.random() < 0.2,
                "colour": rng.choice(["red", "green", "blue"]),
                "region": None if i % 11 == 0 else rng.choice(["north", "south", "east", "west"]),
                "note": f"note {i} {rng.random():.6f}",
                "customer_since": dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1400)),
                "shipped_at": None if i % 5 == 0 else placed + dt.timedelta(days=rng.randint(1, 9)),
                "unit_price": Decimal(f"{rng.uniform(1, 99):.2f}"),
                "rating": None if i % 3 == 0 else rng.randint(1, 5),
                "weight_kg": rng.uniform(0.1, 30),
                "coupon": None if i % 2 else f"C{rng.randint(0, 10**6):06d}",
                "first_order": int(i % 4 == 0),
                "tier": rng.choice(["bronze", "silver", "gold"]),
                "CamelScore": rng.random(),
                "visits": None if i % 13 == 0 else rng.randint(0, 10**9),
                "outcome": rng.choice(["kept", "returned", "exchanged"]),
            }
        )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(table.insert(), rows)
    engine.dispose()


def init(capsys: pytest.CaptureFixture[str], out: Path, *argv: str) -> list[str]:
    code = main(["contract", "init", *argv, "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines
    return lines


def assert_passes_check(path: Path, url: str) -> None:
    report = check(path, url=url)
    assert report.exit_code == 0, "\n".join(report.lines())
    assert f"source {sa.make_url(url).render_as_string(hide_password=True)}: checked" in (
        report.notes
    )


# --- demo-shaped tables --------------------------------------------------------------------


def test_init_on_the_demo_tables_passes_check(
    car_loan_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loans.yaml"
    lines = init(
        capsys,
        out,
        "--url",
        car_loan_sqlite,
        "--table",
        "car_loan_applications",
        "--labels",
        "car_loan_outcomes",
        "--name",
        "loans",
    )
    assert lines[0].startswith(f"wrote {out}: loans, binary on repaid, 9 entity columns")
    text = out.read_text(encoding="utf-8")
    c = load_contract(out)
    assert (c.name, c.target, c.problem_type.value) == ("loans", "repaid", "binary")
    assert c.entity.primary_key == ["id"] and c.entity.event_time == "timestamp"
    assert c.labels.key == ["id"] and c.labels.observed_at == "observed_at"
    assert c.labels.columns["repaid"].allowed == [0, 1]
    assert c.entity.columns["size_of_downpayment"].allowed == ["0%", "10%", "20%", "30%", "40%"]
    assert c.entity.columns["repaid_loan_on_prev_car"].type.value == "bool"
    # The house style: one flow mapping per column, each guess with a REVIEW line above it.
    assert (
        '    size_of_downpayment: {type: category, nullable: false, allowed: ["0%", "10%", '
        '"20%", "30%", "40%"]}' in text
    )
    body = text.splitlines()
    body = body[: body.index("labels:")]  # the entity's columns
    for i, line in enumerate(body):
        if line.startswith("    ") and line.strip().split(":")[0] in c.entity.columns:
            assert body[i - 1].strip().startswith("# REVIEW: "), line
    assert text.count("# REVIEW: ") >= len(c.entity.columns) + 6
    # The whole table's labels are inside the partitioning (they arrive up to 90 days late).
    assert c.partitioning.granularity.value == "weekly"
    assert c.partitioning.start == dt.date(2018, 1, 1)
    assert c.partitioning.end is not None and c.partitioning.end > dt.date(2019, 11, 26)
    assert_passes_check(out, car_loan_sqlite)


def test_init_refuses_to_overwrite_and_names_a_missing_table(
    car_loan_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.yaml"
    out.write_text("keep me\n")
    code = main(
        [
            "contract",
            "init",
            "--url",
            car_loan_sqlite,
            "--table",
            "car_loan_applications",
            "--out",
            str(out),
        ]
    )
    assert code == 2 and out.read_text() == "keep me\n"
    assert "exists; pass --force" in capsys.readouterr().out
    with pytest.raises(
        DraftError,
        match=r"table 'loans' is not in the database \(it has: "
        r"car_loan_applications, car_loan_outcomes\)",
    ):
        draft_contract(car_loan_sqlite, "loans")
    with pytest.raises(DraftError, match="no such SQLite file"):
        draft_contract(f"sqlite:///{tmp_path / 'none.sqlite'}", "t")
    assert not (tmp_path / "none.sqlite").exists()


# --- a hand-made table ---------------------------------------------------------------------


@pytest.fixture
def orders_sqlite(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'orders.sqlite'}"
    mixed_table(url)
    return url


def assert_mixed_draft(out: Path) -> None:
    c = load_contract(out)
    cols = c.entity.columns
    assert c.problem_type.value == "multiclass" and c.target == "outcome"
    assert c.labels.table == "orders" and c.labels.observed_at == "placed_at"
    assert sorted(c.labels.columns["outcome"].allowed or []) == ["exchanged", "kept", "returned"]
    assert "outcome" not in cols and "CamelScore" not in cols
    assert len(cols) == 19
    assert cols["camelscore"].source == "CamelScore"  # the contract's name, reading the source's
    assert c.entity.primary_key == ["order_id"] and c.entity.event_time == "placed_at"
    types = {n: col.type.value for n, col in cols.items()}
    assert types == {
        "order_id": "int",
        "placed_at": "datetime",
        "amount": "float",
        "discount": "float",
        "quantity": "int",
        "is_gift": "bool",
        "colour": "category",
        "region": "category",
        "note": "string",
        "customer_since": "date",
        "shipped_at": "datetime",
        "unit_price": "float",
        "rating": "int",
        "weight_kg": "float",
        "coupon": "string",
        "first_order": "int",
        "tier": "category",
        "visits": "int",
        "camelscore": types["camelscore"],
    }
    nullable = {n for n, col in cols.items() if col.nullable}
    assert nullable == {"discount", "region", "shipped_at", "rating", "coupon", "visits"}
    assert cols["region"].allowed == ["east", "north", "south", "west"]
    assert cols["quantity"].min == 1 and cols["quantity"].max == 12
    assert c.partitioning.granularity.value == "daily"
    assert c.partitioning.start == START.date()
    assert "# REVIEW: camelscore: the contract's name of source column 'CamelScore'" in (
        out.read_text(encoding="utf-8")
    )


def test_init_on_a_mixed_table_passes_check(
    orders_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "orders.yaml"
    init(capsys, out, "--url", orders_sqlite, "--table", "orders")
    assert_mixed_draft(out)  # the last candidate column is the guessed target: outcome
    assert_passes_check(out, orders_sqlite)
    # choosing another target (the documented way) moves that column to the labels
    init(capsys, out, "--url", orders_sqlite, "--table", "orders", "--target", "amount", "--force")
    c = load_contract(out)
    assert (c.target, c.problem_type.value) == ("amount", "regression")
    assert "amount" not in c.entity.columns and "outcome" in c.entity.columns
    assert_passes_check(out, orders_sqlite)


@pytest.mark.slow
def test_the_pipeline_runs_on_a_reviewed_draft(
    orders_sqlite: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dagster as dg

    from ml_assets.dataset import load_datasets
    from ml_assets.definitions import build_definitions
    from ml_assets_tests.pipeline import counts, range_tags

    folder = tmp_path / "contracts"
    out = folder / "orders.yaml"
    init(capsys, out, "--url", orders_sqlite, "--table", "orders", "--target", "outcome")
    # The review, as the README says: the owner and the description (the rest is kept).
    text = out.read_text(encoding="utf-8")
    text = text.replace("owner: data-owner@example.com", "owner: shop-data@example.com")
    text = text.replace("description: Drafted from orders.", "description: Orders; kept or not?")
    out.write_text(text, encoding="utf-8")
    assert_passes_check(out, orders_sqlite)

    home = tmp_path / "home"
    monkeypatch.setenv("ML_ASSETS_HOME", str(home))
    monkeypatch.setenv("ML_ASSETS_CONTRACTS", str(folder))
    monkeypatch.setenv("ML_ASSETS_SOURCE_URL", orders_sqlite)
    datasets = load_datasets()
    job = build_definitions(datasets).resolve_job_def("orders_pipeline")
    keys = job.partitions_def.get_partition_keys()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(keys[0], keys[-1])
    )
    assert result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert not [e for e in failed if e.severity is dg.AssetCheckSeverity.ERROR]
    contract = datasets["orders"].contract
    assert counts(home / "lake", contract, "entity") == (ROWS, 0)
    assert counts(home / "lake", contract, "labels") == (ROWS, 0)


# --- PostgreSQL ----------------------------------------------------------------------------


def test_init_on_postgres_passes_check(
    pg_url: str, contracts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml_assets.ingest.demo import seed_demo

    seed_demo(pg_url, contracts["credit_card"], rows=3000)
    out = tmp_path / "cards.yaml"
    init(
        capsys,
        out,
        "--url",
        pg_url,
        "--table",
        "credit_card_applications",
        "--labels",
        "credit_card_outcomes",
    )
    c = load_contract(out)
    assert (c.target, c.problem_type.value) == ("card_product", "multiclass")
    assert_passes_check(out, pg_url)

    mixed_table(pg_url, "orders_pg")
    out = tmp_path / "orders.yaml"
    init(capsys, out, "--url", pg_url, "--table", "orders_pg", "--name", "orders")
    text = out.read_text(encoding="utf-8")
    assert yaml.safe_load(text)["labels"]["table"] == "orders_pg"
    assert_passes_check(out, pg_url)


@pytest.mark.parametrize(
    ("where", "upper"),
    [
        ("sqlite", False),
        ("sqlite", True),
        pytest.param("postgres", True, marks=pytest.mark.postgres),
    ],
)
def test_init_reads_an_integer_year_as_the_time_and_drafts_yearly_partitions(
    where: str, upper: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], request
) -> None:
    """The census tables keep their times as INTEGER years (2015 .. 2024; incomes observed the
    next year, up to 2025): the draft declares both times ``stored_as: year`` and yearly
    partitions from 2015 to 2026 (the last observation's year included), and passes check.
    Upper-case source names (``AGEP``, ``"Hours Worked"``) become snake-case contract names
    that say their ``source``."""
    from ml_assets_tests import census

    url = (
        request.getfixturevalue("fresh_pg_url")
        if where == "postgres"
        else (f"sqlite:///{tmp_path / 'census.sqlite'}")
    )
    census.seed(url, upper=upper)
    name = (lambda n: census.UPPER[n]) if upper else (lambda n: n)
    out = tmp_path / "people.yaml"
    init(
        capsys, out, "--url", url, "--table", name("census_people"), "--labels",
        name("census_income"), "--target", "income", "--name", "people",
    )  # fmt: skip
    c = load_contract(out)
    assert c.entity.event_time == "year" and c.labels.observed_at == "observed_year"
    assert c.entity.columns["year"].stored_as.value == "year"
    assert c.labels.columns["observed_year"].stored_as.value == "year"
    assert c.partitioning.granularity.value == "yearly"
    assert (c.partitioning.start, c.partitioning.end) == (dt.date(2015, 1, 1), dt.date(2026, 1, 1))
    assert "stored_as: year" in out.read_text(encoding="utf-8")
    # 55 occupation codes, each on about 27 rows: a category whose values are learned
    occupation = c.entity.columns["occupation"]
    assert (occupation.type.value, occupation.categories) == ("category", "learned")
    if upper:
        assert c.entity.primary_key == ["person_id"]
        assert c.entity.columns["agep"].source == "AGEP"
        assert c.entity.columns["hours_worked"].source == "Hours Worked"
        assert c.labels.columns["income"].source == "INCOME"
    assert_passes_check(out, url)
