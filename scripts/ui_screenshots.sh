#!/usr/bin/env bash
# The README's Dagster UI screenshots, docs/images/lineage.png and docs/images/drift_over_time.png:
# the UI tests that take them (ml_assets_tests/ui/test_dagster_ui.py), run with
# ML_ASSETS_UI_SCREENSHOTS pointing at docs/images. They need a car_loan demo: the test session
# runs one (about 7 minutes on 2 cores); with ML_ASSETS_TEST_DEMO_HOME=DIR it is kept in DIR and
# reused by the next run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export ML_ASSETS_UI_SCREENSHOTS="$PWD/docs/images"
exec .venv/bin/pytest -p no:cacheprovider -q ml_assets_tests/ui/test_dagster_ui.py \
  -k "lineage_runs_from_the_bento or drift_over_time" "$@"
