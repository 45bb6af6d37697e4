"""Reading results.json, the bench's output (schema "hellohi-bench/1", see docs/bench.md).

Everything the report prints comes from this file, so the loader checks the file's
shape up front: a bad input gets one clear sentence (what is wrong, what to do)
instead of a KeyError deep inside a table.
"""

from __future__ import annotations

import json
from pathlib import Path

SUPPORTED_SCHEMA = "hellohi-bench/1"

# How to produce a results.json, quoted in every "no results" message.
HOW_TO_MEASURE = "run the bench first: `make bench` (writes results/latest) or `python -m bench --out {folder}`"


class BadResults(Exception):
    """The input is not a bench run this report understands; the message says what to do."""


def results_file(path: Path) -> Path:
    """RESULTS_DIR or RESULTS_DIR/results.json -> the results.json path."""
    return path if path.suffix == ".json" else path / "results.json"


def load_run(path: Path) -> dict:
    """The run in `path` (a folder written by `python -m bench --out`, or its results.json)."""
    file = results_file(path)
    folder = file.parent
    if not folder.is_dir():
        raise BadResults(f"{folder} does not exist, so there are no bench results to report; "
                         + HOW_TO_MEASURE.format(folder=folder))
    if not file.is_file():
        raise BadResults(f"{folder} has no results.json; " + HOW_TO_MEASURE.format(folder=folder))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BadResults(f"cannot read {file} ({error}); check its permissions, or run the bench again") from None
    try:
        run = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadResults(f"{file} is not valid JSON ({error}); the bench may have been interrupted "
                         f"while writing it: run it again with `make bench` or `python -m bench --out {folder}`") from None
    if not isinstance(run, dict) or "schema" not in run:
        raise BadResults(f"{file} has no \"schema\" field, so it was not written by `python -m bench`; "
                         f"point python -m reports at a folder the bench wrote (python -m bench --out DIR)")
    if run["schema"] != SUPPORTED_SCHEMA:
        raise BadResults(f"{file} has schema {run['schema']!r} but this report reads {SUPPORTED_SCHEMA!r}; "
                         "run the bench of this checkout again to get a file this report can read")
    problem = shape_problem(run)
    if problem:
        raise BadResults(f"{file} does not follow schema {SUPPORTED_SCHEMA}: {problem}; "
                         "it was probably edited by hand or truncated: run the bench again")
    return run


# --------------------------------------------------------------------- shape check

_NUMBER = (int, float)


def _problem_in_figures(where: str, figures) -> str | None:
    if not isinstance(figures, dict):
        return f"{where}.figures is not an object"
    lat = figures.get("latency")
    if lat is not None:
        if not isinstance(lat, dict) or lat.get("measure") not in ("round_trip", "one_way"):
            return f"{where}.figures.latency has no \"measure\" of round_trip or one_way"
        for key in ("min", "p50", "p90", "p99", "p99_9", "max"):
            if lat.get(key) is not None and not isinstance(lat[key], _NUMBER):
                return f"{where}.figures.latency.{key} is not a number"
    delivery = figures.get("delivery")
    if delivery is not None:
        if not isinstance(delivery, dict):
            return f"{where}.figures.delivery is not an object"
        for key in ("sent", "delivered", "lost", "duplicates", "reordered"):
            if not isinstance(delivery.get(key), int):
                return f"{where}.figures.delivery.{key} is missing or not a whole number"
    for key in ("warm", "after_sleep"):  # bench/protocol_work.py's two timings
        if key in figures and not (isinstance(figures[key], dict) and isinstance(figures[key].get("p50"), _NUMBER)):
            return f"{where}.figures.{key} has no p50"
    udp = figures.get("udp_counters")  # what the UDP clients' reliability layer counted
    if udp is not None and not (isinstance(udp, dict) and isinstance(udp.get("retransmitted"), int)):
        return f"{where}.figures.udp_counters.retransmitted is missing or not a whole number"
    hosts = figures.get("tcp_counters")  # each emulated host's kernel, for TCP
    if hosts is not None and not (isinstance(hosts, dict) and hosts and all(
            isinstance(host, dict) and isinstance(host.get("RetransSegs"), int) for host in hosts.values())):
        return f"{where}.figures.tcp_counters has a host without a whole-number RetransSegs"
    turns = figures.get("ratio_median")  # bench/paired.py: hellohi beside sockperf, in turns
    if turns is not None and not (isinstance(turns, dict) and isinstance(figures.get("blocks"), list) and all(
            value is None or isinstance(value, _NUMBER) for value in turns.values())):
        return f"{where}.figures.ratio_median is not a map of numbers, or figures.blocks is missing"
    for key in ("messages_per_s", "goodput_MB_per_s", "elapsed_s", "drain_s", "avg_rtt_ms", "max_rtt_ms"):
        if figures.get(key) is not None and not isinstance(figures[key], _NUMBER):
            return f"{where}.figures.{key} is not a number"
    return None


def shape_problem(run: dict) -> str | None:
    """None if `run` has every field the report reads, else which one is wrong."""
    if not isinstance(run.get("environment"), dict):
        return "\"environment\" is missing or not an object"
    for key in ("scenarios", "baselines"):
        if not isinstance(run.get(key), list):
            return f"\"{key}\" is missing or not a list"
    rounds = run.get("rounds", 1)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        return "\"rounds\" is not a whole number of at least 1"
    if not isinstance(run.get("ratios", []), list):
        return "\"ratios\" is not a list"
    for i, scenario in enumerate(run["scenarios"]):
        where = f"scenarios[{i}]"
        if not isinstance(scenario, dict):
            return f"{where} is not an object"
        for key in ("id", "status"):
            if not isinstance(scenario.get(key), str):
                return f"{where} has no \"{key}\""
        config = scenario.get("config")
        if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in ("workload", "protocol")):
            return f"{where}.config has no \"workload\" and \"protocol\""
        if scenario.get("link") is not None and not isinstance(scenario["link"], dict):
            return f"{where}.link is not an object"
        if scenario.get("server") is not None and not isinstance(scenario["server"], dict):
            return f"{where}.server is not an object"
        if scenario["status"] == "ok":
            if (problem := _problem_in_figures(where, scenario.get("figures"))) is not None:
                return problem
    for i, baseline in enumerate(run["baselines"]):
        where = f"baselines[{i}]"
        if not isinstance(baseline, dict) or not all(isinstance(baseline.get(k), str) for k in ("tool", "test", "status")):
            return f"{where} has no \"tool\", \"test\" and \"status\""
        if baseline["status"] == "ok" and (problem := _problem_in_figures(where, baseline.get("figures"))):
            return problem
    for i, ratio in enumerate(run.get("ratios", [])):
        if not isinstance(ratio, dict) or not isinstance(ratio.get("name"), str):
            return f"ratios[{i}] has no \"name\""
        for key in ("value", "target"):
            if ratio.get(key) is not None and not isinstance(ratio[key], _NUMBER):
                return f"ratios[{i}].{key} is not a number"
    return None


# --------------------------------------------------------------------- lookups


def measured(run: dict) -> list[dict]:
    """Scenarios that produced figures (unavailable, skipped and failed ones have none)."""
    return [s for s in run["scenarios"] if s["status"] == "ok" and s.get("figures")]


def not_measured(run: dict) -> list[dict]:
    """Scenarios of the matrix that produced no figures, each with its status and reason."""
    return [s for s in run["scenarios"] if not (s["status"] == "ok" and s.get("figures"))]


def latency(scenario: dict) -> dict | None:
    """The latency summary, if this scenario measured one with at least one sample."""
    lat = scenario["figures"].get("latency")
    return lat if lat and lat.get("p50") is not None else None


def link_of(config: dict) -> str:
    return config.get("link", "loopback")


def describe_link(config: dict) -> str:
    """'loopback', or the impairments of an emulated link in words: 'emulated: loss 5 %, delay 10 ms one way'."""
    if link_of(config) == "loopback":
        return "loopback"
    spec = config.get("link_config") or {}
    words = []
    if spec.get("loss"):
        words.append(f"loss {spec['loss'] * 100:g} %")
    if spec.get("delay_ms"):
        words.append(f"delay {spec['delay_ms']:g} ms one way")
    if spec.get("jitter_ms"):
        words.append(f"jitter {spec['jitter_ms']:g} ms")
    if spec.get("reorder"):
        words.append(f"reorder {spec['reorder'] * 100:g} %")
    if spec.get("duplicate"):
        words.append(f"duplicate {spec['duplicate'] * 100:g} %")
    if spec.get("rate_mbit"):
        words.append(f"rate {spec['rate_mbit']:g} Mbit/s")
    return f"{link_of(config)}: " + (", ".join(words) if words else "no impairment")


def find(run: dict, workload: str, protocol: str, link: str = "loopback", payload: int | None = None,
         link_config: dict | None = None) -> dict | None:
    """The first measured scenario with this workload, protocol and link (and payload, link_config if given)."""
    for scenario in measured(run):
        config = scenario["config"]
        if (config["workload"], config["protocol"], link_of(config)) != (workload, protocol, link):
            continue
        if payload is not None and config.get("payload") != payload:
            continue
        if link_config is not None and config.get("link_config") != link_config:
            continue
        return scenario
    return None


def baseline(run: dict, test: str) -> dict | None:
    """The baseline entry for a test (e.g. 'ping-pong-tcp'), whatever its status."""
    for entry in run["baselines"]:
        if entry["test"] == test:
            return entry
    return None
