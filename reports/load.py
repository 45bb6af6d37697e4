"""Reading results.json, the bench's output (schema "hellohi-bench/1", see docs/bench.md).

Everything the report prints comes from this file, so the loader checks the file's
shape up front: a bad input gets one clear sentence (what is wrong, what to do)
instead of a KeyError deep inside a table.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

SUPPORTED_SCHEMA = "hellohi-bench/1"

# How to produce a results.json, quoted in every "no results" message.
HOW_TO_MEASURE = "run the bench first: `make bench RESULTS={folder}` or `python -m bench --out {folder}`"


def _shell_word(path) -> str:
    """`path` as one word of a command to copy into a shell: quoted if it holds spaces or quotes."""
    return shlex.quote(str(path))


class BadResults(Exception):
    """The input is not a bench run this report understands; the message says what to do."""


def results_file(path: Path) -> Path:
    """RESULTS_DIR or RESULTS_DIR/results.json -> the results.json path."""
    return path if path.suffix == ".json" else path / "results.json"


def _not_a_run_folder(path: Path) -> str:
    """What to say when `path` names a file other than results.json (often results.csv beside it)."""
    folder = path.parent
    if (folder / "results.json").is_file():
        fix = f"give it that folder: `python -m reports {_shell_word(folder)}`"
    else:
        fix = f"{folder} has no results.json either; " + HOW_TO_MEASURE.format(folder=_shell_word(folder))
    what = "is a file" if path.exists() else "does not exist"
    return (f"{path} {what}, but python -m reports reads the folder a bench run wrote (the one holding "
            f"results.json), or that results.json itself; {fix}")


class _NotAMeasurement(ValueError):
    """A number in results.json that no measurement is: what it is, in words."""


def _not_a_json_number(name: str):
    # Python's json reads NaN and Infinity, which JSON has not; the bench never writes
    # them, and a table would print "nan" as if it were a measurement.
    raise _NotAMeasurement(f"{name}, which is not a number in JSON and not one the bench writes "
                           "(it writes null for a figure not measured)")


def _finite_float(text: str) -> float:
    # JSON allows 1e999, which Python reads as infinity, as it reads Infinity.
    value = float(text)
    if not math.isfinite(value):
        raise _NotAMeasurement(f"{text}, a number too large to be a measurement (Python reads it as infinity)")
    return value


def load_run(path: Path) -> dict:
    """The run in `path` (a folder written by `python -m bench --out`, or its results.json)."""
    # results.csv sits beside results.json and is the file a student opens first, so it is
    # the likeliest file to be given here (even one that does not exist); any other file is
    # not a run folder either.
    if path.suffix != ".json" and not path.is_dir() and (path.exists() or path.name == "results.csv"):
        raise BadResults(_not_a_run_folder(path))
    file = results_file(path)
    folder = file.parent
    if not folder.is_dir():
        raise BadResults(f"{folder} does not exist, so there are no bench results to report; "
                         + HOW_TO_MEASURE.format(folder=_shell_word(folder)))
    if file.is_dir():
        raise BadResults(f"{file} is a folder, not the results.json file the bench writes; move it away, "
                         "then " + HOW_TO_MEASURE.format(folder=_shell_word(folder)))
    if not file.is_file():
        raise BadResults(f"{folder} has no {file.name}; " + HOW_TO_MEASURE.format(folder=_shell_word(folder)))
    try:
        data = file.read_bytes()
    except OSError as error:
        raise BadResults(f"cannot read {file} ({error}); check its permissions, or run the bench again") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # The bench writes plain ASCII JSON, so these bytes came from somewhere else (or
        # from an editor that saved the file in another encoding).
        raise BadResults(f"{file} is not UTF-8 text (the byte at offset {error.start} is not valid UTF-8), so it is not a "
                         f"results.json written by the bench; run the bench again with `make bench` or "
                         f"`python -m bench --out {_shell_word(folder)}`") from None
    try:
        run = json.loads(text, parse_constant=_not_a_json_number, parse_float=_finite_float)
    except _NotAMeasurement as error:
        raise BadResults(f"{file} holds {error}; it was probably edited by hand: "
                         f"run the bench again with `make bench` or `python -m bench --out {_shell_word(folder)}`") from None
    except json.JSONDecodeError as error:
        raise BadResults(f"{file} is not valid JSON ({error}); the bench may have been interrupted "
                         f"while writing it: run it again with `make bench` or `python -m bench --out {_shell_word(folder)}`") from None
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

# What may stop a run early (bench/cli.py); None: it ended by itself, or the bench did not say.
STOPPERS = (None, "Ctrl-C", "SIGTERM")

# The impairments describe_link puts into words; each is multiplied or formatted as a number.
_IMPAIRMENTS = ("loss", "delay_ms", "jitter_ms", "reorder", "duplicate", "rate_mbit")

# What the handout reads from a measured baseline, by its test (reports/handout.py).
_BASELINE_NEEDS = {
    "ping-pong-tcp": ("latency",), "ping-pong-udp": ("latency",),
    "python-echo-tcp": ("latency",), "python-echo-udp": ("latency",), "python-stop-and-wait-udp": ("latency",),
    "tcp-throughput": ("goodput_MB_per_s",),
    "protocol-work-udp": ("warm", "after_sleep"), "protocol-work-udp-raw": ("warm", "after_sleep"),
    "paired-hello-tcp": ("ratio_median", "blocks"), "paired-hello-udp": ("ratio_median", "blocks"),
}


def _whole(value) -> bool:
    """A whole number as JSON writes it (true and false are not counts, though Python calls them ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number_or_null(value) -> bool:
    return value is None or isinstance(value, _NUMBER)


def _problem_in_figures(where: str, figures) -> str | None:
    if not isinstance(figures, dict):
        return f"{where}.figures is not an object"
    lat = figures.get("latency")
    if lat is not None:
        if not isinstance(lat, dict) or lat.get("measure") not in ("round_trip", "one_way"):
            return f"{where}.figures.latency has no \"measure\" of round_trip or one_way"
        for key in ("min", "mean", "p50", "p90", "p99", "p99_9", "max", "jitter_rfc3550"):
            if not _number_or_null(lat.get(key)):
                return f"{where}.figures.latency.{key} is not a number"
        if lat.get("count") is not None and not _whole(lat["count"]):
            return f"{where}.figures.latency.count is not a whole number"
    delivery = figures.get("delivery")
    if delivery is not None:
        if not isinstance(delivery, dict):
            return f"{where}.figures.delivery is not an object"
        for key in ("sent", "delivered", "lost", "duplicates", "reordered"):
            if not isinstance(delivery.get(key), int):
                return f"{where}.figures.delivery.{key} is missing or not a whole number"
        if delivery.get("foreign") is not None and not _whole(delivery["foreign"]):
            return f"{where}.figures.delivery.foreign is not a whole number"
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
    readme = figures.get("kcp_readme_avg_max_rtt_ms")  # KCP's README: [average, maximum]
    if readme is not None and not (isinstance(readme, list) and len(readme) == 2
                                   and all(_number_or_null(value) for value in readme)):
        return f"{where}.figures.kcp_readme_avg_max_rtt_ms is not a list of two numbers (average, maximum)"
    return None


def _problem_in_config(where: str, config) -> str | None:
    """The scenario's config: the fields the tables, charts and handout read from it."""
    if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in ("workload", "protocol")):
        return f"{where}.config has no \"workload\" and \"protocol\""
    if not isinstance(config.get("link", "loopback"), str):
        return f"{where}.config.link is not a string (\"loopback\", \"emulated\" or \"remote\")"
    if "payload" in config and not _whole(config["payload"]):
        return f"{where}.config.payload is not a whole number (the body's size in bytes)"
    spec = config.get("link_config")
    if spec is not None:
        if not isinstance(spec, dict):
            return (f"{where}.config.link_config is not an object (the --link fields, "
                    "e.g. {\"loss\": 0.05, \"delay_ms\": 10.0}) or null")
        for key in _IMPAIRMENTS:
            if not _number_or_null(spec.get(key)):
                return f"{where}.config.link_config.{key} is not a number"
    if config.get("kcp_scenario") is not None and not isinstance(config["kcp_scenario"], dict):
        return f"{where}.config.kcp_scenario is not an object"
    return None


def _problem_in_scenario(where: str, scenario) -> str | None:
    if not isinstance(scenario, dict):
        return f"{where} is not an object"
    for key in ("id", "status"):
        if not isinstance(scenario.get(key), str):
            return f"{where} has no \"{key}\""
    if (problem := _problem_in_config(where, scenario.get("config"))) is not None:
        return problem
    link = scenario.get("link")
    if link is not None:
        if not isinstance(link, dict):
            return f"{where}.link is not an object"
        counters = link.get("counters")  # per direction; the handout adds up the emulated link's drops
        if counters is not None and not isinstance(counters, dict):
            return f"{where}.link.counters is not an object"
        for direction, counted in (counters or {}).items():
            for key in ("nft_seen", "nft_dropped"):
                if isinstance(counted, dict) and key in counted and not _whole(counted[key]):
                    return f"{where}.link.counters.{direction}.{key} is not a whole number"
    server = scenario.get("server")
    if server is not None:
        if not isinstance(server, dict):
            return f"{where}.server is not an object"
        for key in ("cpu_s", "peak_rss_bytes"):
            if not _number_or_null(server.get(key)):
                return f"{where}.server.{key} is not a number"
    if scenario["status"] == "ok":
        return _problem_in_figures(where, scenario.get("figures"))
    return None


def _problem_in_baseline(where: str, baseline) -> str | None:
    if not isinstance(baseline, dict) or not all(isinstance(baseline.get(k), str) for k in ("tool", "test", "status")):
        return f"{where} has no \"tool\", \"test\" and \"status\""
    ok = baseline["status"] == "ok"
    config = baseline.get("config")
    if not isinstance(config, dict) and (ok or config is not None):
        return f"{where}.config is missing or not an object"
    figures = baseline.get("figures")
    if not ok and figures is None:
        return None  # missing or failed: the report shows its reason, nothing else
    if (problem := _problem_in_figures(where, figures)) is not None:
        return problem
    if ok:
        for key in _BASELINE_NEEDS.get(baseline["test"], ()):
            if figures.get(key) is None:
                return f"{where} ({baseline['test']}) has no figures.{key}"
    if "warm" in figures and not isinstance((config or {}).get("sleep_us"), _NUMBER):
        return f"{where}.config.sleep_us is not a number (the sleep before each timed round trip, in µs)"
    cores = (config or {}).get("cores")  # bench/paired.py: where the clients and servers ran
    if cores is not None and not (isinstance(cores, dict) and "client" in cores and "server" in cores):
        return f"{where}.config.cores is not an object with \"client\" and \"server\" (or null: not pinned)"
    return None


def _problem_in_ratio(where: str, ratio) -> str | None:
    if not isinstance(ratio, dict) or not isinstance(ratio.get("name"), str):
        return f"{where} has no \"name\""
    for key in ("value", "target"):
        if ratio.get(key) is not None and not isinstance(ratio[key], _NUMBER):
            return f"{where}.{key} is not a number"
    if not (ratio.get("met") is None or isinstance(ratio["met"], bool)):
        return f"{where}.met is not true, false or null (null: not measured)"
    if ratio.get("detail") is not None and not isinstance(ratio["detail"], str):
        return f"{where}.detail is not a string"
    return None


def shape_problem(run: dict) -> str | None:
    """None if `run` has every field the report reads, else which one is wrong."""
    if not isinstance(run.get("environment"), dict):
        return "\"environment\" is missing or not an object"
    for key in ("scenarios", "baselines"):
        if not isinstance(run.get(key), list):
            return f"\"{key}\" is missing or not a list"
    rounds = run.get("rounds", 1)
    if not _whole(rounds) or rounds < 1:
        return "\"rounds\" is not a whole number of at least 1"
    if not isinstance(run.get("ratios", []), list):
        return "\"ratios\" is not a list"
    if run.get("interrupted") is not None and not isinstance(run["interrupted"], bool):
        return "\"interrupted\" is not true, false or null (true: Ctrl-C or SIGTERM stopped the run)"
    if run.get("stopped_by") not in STOPPERS:
        return "\"stopped_by\" is not \"Ctrl-C\", \"SIGTERM\" or null (what stopped an interrupted run)"
    if run.get("command") is not None and not isinstance(run["command"], list):
        return "\"command\" is not a list (the bench's command line, one word per item)"
    for key, check in (("scenarios", _problem_in_scenario), ("baselines", _problem_in_baseline),
                       ("ratios", _problem_in_ratio)):
        for i, entry in enumerate(run.get(key, [])):
            if (problem := check(f"{key}[{i}]", entry)) is not None:
                return problem
    return None


# --------------------------------------------------------------------- lookups


def interrupted(run: dict) -> bool:
    """Whether Ctrl-C (or SIGTERM) stopped the run (results.json then holds only what finished)."""
    return run.get("interrupted") is True


def stopped_by(run: dict) -> str:
    """What stopped an interrupted run, in the report's words. Results written before the
    bench recorded it (no "stopped_by") say only that one of the two did."""
    return run.get("stopped_by") or "Ctrl-C or SIGTERM"


def is_measured(scenario: dict) -> bool:
    """Whether a scenario produced figures (unavailable, not_applicable and error ones have none)."""
    return scenario["status"] == "ok" and bool(scenario.get("figures"))


def measured(run: dict) -> list[dict]:
    """Scenarios that produced figures."""
    return [s for s in run["scenarios"] if is_measured(s)]


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
    """'loopback', 'remote server', or the impairments of an emulated link in words: 'emulated: loss 5 %, delay 10 ms one way'.
    KCP's test runs on a link of its own, simulated with a virtual clock, whatever its config's link says."""
    if config.get("workload") == "kcp-test":
        return "simulated (KCP's test link, virtual time)"
    if link_of(config) == "loopback":
        return "loopback"
    if link_of(config) == "remote":
        return "remote server (--server: the network to another computer)"
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


def links_used(run: dict) -> str:
    """The links the run's scenarios used, in words: loopback (the baselines' link too) unless the run
    measured only a server on another computer, then each other link, KCP's simulated one included."""
    others = sorted({describe_link(s["config"]) for s in run["scenarios"]} - {"loopback"})
    if run["scenarios"] and all(link_of(s["config"]) == "remote" for s in run["scenarios"]):
        return ", ".join(others)
    return ", ".join(["loopback", *others])


def describe_cpu_idle(environment: dict) -> str | None:
    """How the run's machine put idle CPUs to sleep, as words that follow "idle CPUs"; None if the run did not record it
    (runs before the bench did, or a machine whose kernel does not say)."""
    idle = environment.get("cpu_idle")
    if not isinstance(idle, dict):
        return None
    names = f"cpuidle driver {idle.get('driver') or '?'}, governor {idle.get('governor') or '?'}"
    poll = idle.get("guest_halt_poll_ns")
    if poll == 0:
        return f"halt at once ({names}; guest halt-polling 0 ns), so every wake-up goes through the hypervisor"
    if isinstance(poll, int):
        return f"poll up to {poll / 1000:g} µs before they halt ({names})"
    return f"sleep as the {names} choose"


def find_all(run: dict, workload: str, protocol: str, link: str = "loopback", payload: int | None = None,
             link_config: dict | None = None) -> list[dict]:
    """Every measured scenario with this workload, protocol and link (and payload, link_config if given),
    in the run's order: one per round with --rounds."""
    return matching(measured(run), workload, protocol, link, payload, link_config)


def matching(scenarios: list[dict], workload: str, protocol: str, link: str = "loopback", payload: int | None = None,
             link_config: dict | None = None) -> list[dict]:
    """Those of `scenarios`, measured or not, with this workload, protocol and link (and payload,
    link_config if given), in their order."""
    found = []
    for scenario in scenarios:
        config = scenario["config"]
        if (config["workload"], config["protocol"], link_of(config)) != (workload, protocol, link):
            continue
        if payload is not None and config.get("payload") != payload:
            continue
        if link_config is not None and config.get("link_config") != link_config:
            continue
        found.append(scenario)
    return found


def find(run: dict, workload: str, protocol: str, link: str = "loopback", payload: int | None = None,
         link_config: dict | None = None) -> dict | None:
    """The first measured scenario with this workload, protocol and link (and payload, link_config if given)."""
    found = find_all(run, workload, protocol, link, payload, link_config)
    return found[0] if found else None


def round_of(entry: dict) -> int:
    """Which round of --rounds measured a scenario (its config says) or a baseline (the entry says)."""
    return (entry.get("config") or {}).get("round") or entry.get("round") or 1


def baseline(run: dict, test: str) -> dict | None:
    """The baseline entry for a test (e.g. 'ping-pong-tcp'), whatever its status."""
    for entry in run["baselines"]:
        if entry["test"] == test:
            return entry
    return None
