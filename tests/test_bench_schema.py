"""docs/bench.md's results.json schema and results.csv columns, held against what a run writes.

A student reads the schema to write their own analysis; a field the code renamed, added or
dropped without the page saying so breaks their script. So a tiny real run (a few seconds,
no baselines, no timing asserted) is written to disk and every field in it is looked up in
the page's tables, and every field those tables promise for these workloads is looked up in it.
"""

from __future__ import annotations

import csv
import json
import re

import pytest

from bench import cli
from hellohi.launcher import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "bench.md").read_text()


def _table_after(caption: str) -> list[list[str]]:
    """The rows (cells as text) of the first Markdown table after the line `caption`."""
    lines = DOC[DOC.index(caption):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:  # after the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _names(text: str) -> set[str]:
    """Every `backticked` word in `text`."""
    return set(re.findall(r"`([A-Za-z0-9_.]+)`", text))


def _first_column(rows) -> set[str]:
    return set().union(*(_names(row[0]) for row in rows))


def _row(rows, name: str) -> str:
    """The whole text of the row whose first column names `name`."""
    return next(" ".join(row) for row in rows if name in _names(row[0]))


TOP = _table_after("## results.json (schema")
SCENARIO = _table_after("A scenario:")
FIGURES = _table_after("`figures`, depending on the workload:")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema")
    code = cli.main(["--workloads", "hello,relay,throughput,fanin,drain", "--protocols", "tcp,udp",
                     "--payloads", "64", "--clients", "2", "--count", "5", "--no-baselines", "--out", str(out)])
    assert code == 0
    run = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open() as handle:
        columns = csv.DictReader(handle).fieldnames
    return run, columns


def test_every_top_level_field_is_documented_and_every_documented_one_written(written):
    run, _ = written
    assert set(run) == _first_column(TOP)
    assert set(run["environment"]) <= _names(_row(TOP, "environment"))


def test_every_scenario_field_and_config_field_is_documented(written):
    run, _ = written
    documented = _first_column(SCENARIO)
    for scenario in run["scenarios"]:
        assert set(scenario) <= documented, scenario["id"]
        assert set(scenario["config"]) <= _names(_row(SCENARIO, "config")), scenario["id"]
        assert set(scenario["server"]) <= _names(_row(SCENARIO, "server")), scenario["id"]


def test_every_figure_is_documented_with_the_workloads_that_write_it(written):
    run, _ = written
    for scenario in run["scenarios"]:
        workload, protocol = scenario["config"]["workload"], scenario["config"]["protocol"]
        for name in scenario["figures"]:
            # A row that names the figure and, in its "in" column, this workload (or all, or for
            # udp_counters this protocol); a figure may have two rows (messages_per_s: bulk, drain).
            where = [row[1] for row in FIGURES if name in _names(row[0])]
            assert any(f"`{workload}`" in cell or cell.startswith("all")
                       or (name == "udp_counters" and f"`{protocol}`" in cell) for cell in where), (scenario["id"], name)
        latency, delivery = scenario["figures"].get("latency"), scenario["figures"]["delivery"]
        if latency is not None:
            assert set(latency) == _names(_row(FIGURES, "latency")) - {"latency", "drain", "us"}, scenario["id"]
        assert set(delivery) == _names(_row(FIGURES, "delivery")) - {"delivery"}, scenario["id"]
        if "udp_counters" in scenario["figures"]:
            assert set(scenario["figures"]["udp_counters"]) <= _names(_row(FIGURES, "udp_counters"))


def test_the_figures_the_page_promises_for_these_workloads_are_written(written):
    run, _ = written
    by_workload = {}
    for scenario in run["scenarios"]:
        by_workload.setdefault(scenario["config"]["workload"], set()).update(scenario["figures"])
    assert {"latency", "delivery"} <= by_workload["hello"] & by_workload["relay"]
    assert _names(_row(FIGURES, "elapsed_s")) - {"throughput-raw", "fanout"} - {"throughput", "fanin"} \
        <= by_workload["throughput"] & by_workload["fanin"]
    assert _first_column([row for row in FIGURES if "drain_s" in row[0]]) <= by_workload["drain"]


def test_every_csv_column_is_a_documented_field(written):
    run, columns = written
    scenario_fields, top_fields = _first_column(SCENARIO), _first_column(TOP)
    ratio_fields = _names(_row(TOP, "ratios"))
    for column in columns:
        first = column.split(".")[0]
        assert column in ("kind", "id") or first in scenario_fields | top_fields | ratio_fields, column
        if first == "figures" and column.count(".") >= 1:
            assert column.split(".")[1] in _first_column(FIGURES), column
    assert columns[:2] == ["kind", "id"]
    assert "figures.latency.p99_9" in columns and "figures.delivery.lost" in columns and "server.cpu_s" in columns
