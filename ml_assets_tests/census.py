"""A yearly census-style dataset whose only time is an integer year, for tests of event times
``stored_as`` a year and of yearly partitions.

Ten yearly waves (2015 .. 2024) of :data:`PEOPLE` answers each, in a table whose ``year``
column is an INTEGER; each answer's income (the regression target) is recorded the next year,
in a labels table whose ``observed_year`` is an INTEGER too. Yearly partitions 2015 .. 2024:
every partition holds one wave, none is empty.
"""

from __future__ import annotations

import random
from pathlib import Path

import sqlalchemy as sa

from ml_assets.contracts import Contract, parse_contract

YEARS = list(range(2015, 2025))
PEOPLE = 150
SECTORS = ["farming", "industry", "services"]
OCCUPATIONS = [f"occ_{i:02d}" for i in range(55)]
"""A high-cardinality category the contract does not list: ``categories: learned``."""

CONTRACT = """\
name: census
version: 1.0.0
owner: tests@example.com
problem_type: regression
target: income
source: {url_env: ML_ASSETS_SOURCE_URL}
partitioning: {granularity: yearly, start: "2015-01-01", end: "2025-01-01"}
entity:
  table: census_people
  primary_key: [person_id]
  event_time: year
  columns:
    person_id: {type: int}
    year: {type: datetime, stored_as: year, description: Census wave (an integer year).}
    age: {type: int, min: 16, max: 100}
    hours: {type: float, min: 0, max: 80}
    sector: {type: category, allowed: [farming, industry, services]}
    occupation: {type: category, categories: learned, description: One of 55 codes.}
labels:
  table: census_income
  key: [person_id]
  observed_at: observed_year
  columns:
    person_id: {type: int}
    observed_year: {type: datetime, stored_as: year}
    income: {type: float, min: 0}
"""


UPPER = {
    "census_people": "CENSUS_PEOPLE",
    "census_income": "CENSUS_INCOME",
    "person_id": "PERSON_ID",
    "year": "YEAR",
    "age": "AGEP",
    "hours": "Hours Worked",
    "sector": "SECTOR",
    "occupation": "OCCUPATION",
    "observed_year": "OBSERVED_YEAR",
    "income": "INCOME",
}
"""The source's names in the upper-case variant (a census extract as published): most are the
contract's names in capitals (found by :func:`~ml_assets.contracts.model.snake_name`), two are
other names the contract maps with ``source:``."""

CONTRACT_UPPER = (
    CONTRACT.replace("table: census_people", "table: CENSUS_PEOPLE")
    .replace("table: census_income", "table: CENSUS_INCOME")
    .replace(
        "age: {type: int, min: 16, max: 100}", "age: {type: int, min: 16, max: 100, source: AGEP}"
    )
    .replace(
        "hours: {type: float, min: 0, max: 80}",
        'hours: {type: float, min: 0, max: 80, source: "Hours Worked"}',
    )
)


CONTRACT_ONE_TABLE = (
    CONTRACT[: CONTRACT.index("labels:")]
    + """\
labels:
  table: census_people
  key: [person_id]
  observed_at: year
  observed_after_days: 366
  columns:
    person_id: {type: int}
    year: {type: datetime, stored_as: year}
    income: {type: float, min: 0}
"""
)
"""The variant with the income a column of the answers' table itself, known 366 days after the
wave (a year, and a day of margin for leap years): no second table."""


def contract(upper: bool = False) -> Contract:
    return parse_contract(CONTRACT_UPPER if upper else CONTRACT, "census.yaml")


def write_contract(folder: Path, upper: bool = False, one_table: bool = False) -> Path:
    """The contract as ``folder/census.yaml`` (a contracts folder of its own); ``upper``: the
    variant for the upper-case source of :func:`seed`; ``one_table``: the labels in the
    answers' table."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "census.yaml"
    text = CONTRACT_ONE_TABLE if one_table else CONTRACT_UPPER if upper else CONTRACT
    path.write_text(text, encoding="utf-8")
    return path


def records() -> tuple[list[dict], list[dict]]:
    """The answers and their incomes, the same on every call."""
    rng = random.Random(7)
    rows, labels = [], []
    for wave, year in enumerate(YEARS):
        for i in range(PEOPLE):
            pid = wave * PEOPLE + i
            age, hours = rng.randint(16, 80), round(rng.uniform(5, 60), 1)
            sector = rng.choice(SECTORS)
            occupation = OCCUPATIONS[i % len(OCCUPATIONS)]
            rows.append(
                {
                    "person_id": pid,
                    "year": year,
                    "age": age,
                    "hours": hours,
                    "sector": sector,
                    "occupation": occupation,
                }
            )
            income = 400 * hours + 150 * min(age, 60) + 5000 * SECTORS.index(sector)
            income += 40 * (OCCUPATIONS.index(occupation) % 10)
            income += rng.gauss(0, 1500) + 300 * wave
            labels.append(
                {"person_id": pid, "observed_year": year + 1, "income": round(max(income, 0), 2)}
            )
    return rows, labels


def seed(url: str, upper: bool = False, one_table: bool = False) -> int:
    """Create and fill the two source tables (years as INTEGER); return the answers' count.
    ``upper``: with the source names of :data:`UPPER` (quoted identifiers on PostgreSQL);
    ``one_table``: the income a column of the answers' table (no labels table)."""
    if one_table:
        return _seed_one_table(url)
    n = (lambda name: UPPER[name]) if upper else (lambda name: name)
    md = sa.MetaData()
    people = sa.Table(
        n("census_people"),
        md,
        sa.Column(n("person_id"), sa.Integer, primary_key=True),
        sa.Column(n("year"), sa.Integer, nullable=False),
        sa.Column(n("age"), sa.Integer, nullable=False),
        sa.Column(n("hours"), sa.Float, nullable=False),
        sa.Column(n("sector"), sa.Text, nullable=False),
        sa.Column(n("occupation"), sa.Text, nullable=False),
    )
    income = sa.Table(
        n("census_income"),
        md,
        sa.Column(n("person_id"), sa.Integer, primary_key=True),
        sa.Column(n("observed_year"), sa.Integer, nullable=False),
        sa.Column(n("income"), sa.Float, nullable=False),
    )
    rows, labels = records()
    rows = [{n(k): v for k, v in r.items()} for r in rows]
    labels = [{n(k): v for k, v in r.items()} for r in labels]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(people.insert(), rows)
        conn.execute(income.insert(), labels)
    engine.dispose()
    return len(rows)


def _seed_one_table(url: str) -> int:
    md = sa.MetaData()
    people = sa.Table(
        "census_people",
        md,
        sa.Column("person_id", sa.Integer, primary_key=True),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("age", sa.Integer, nullable=False),
        sa.Column("hours", sa.Float, nullable=False),
        sa.Column("sector", sa.Text, nullable=False),
        sa.Column("occupation", sa.Text, nullable=False),
        sa.Column("income", sa.Float, nullable=False),
    )
    rows, labels = records()
    income = {r["person_id"]: r["income"] for r in labels}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(people.insert(), [{**r, "income": income[r["person_id"]]} for r in rows])
    engine.dispose()
    return len(rows)
