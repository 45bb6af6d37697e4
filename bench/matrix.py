"""Which scenarios a bench run holds: the default and --full matrices, flags, config files, emulated links.

Each scenario starts as a "cell", a plain dict of Scenario fields (workload,
protocol, payload, clients, count, link, ...), so that the three ways of
describing a matrix (built in, from flags, from a TOML or JSON file) meet in
one shape; `to_scenarios` turns the cells into Scenario objects.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import fields
from pathlib import Path

from hellohi.codec import DEFAULT_MAX_BODY
from hellohi.relay import RelayLimits

from .clients import DEFAULT_PROTOCOLS, PROTOCOLS
from .emulation.spec import LinkSpec
from .kcp_peer import KcpScenario
from .runner import BODY_WORKLOADS, KCP_WORKLOADS, RELIABLE_ON_KCP_LINK, TCP_ONLY_WORKLOADS
from .workloads import ID_WIDTH, WORKLOADS, Scenario

KCP_PROTOCOLS = ("kcp-default", "kcp-normal", "kcp-fast")
KCP_PINGPONG_MODES = ("kcp-normal", "kcp-fast")  # the modes the built-in matrices ping-pong (docs/bench.md)
ALL_WORKLOADS = WORKLOADS + KCP_WORKLOADS
ALL_PROTOCOLS = PROTOCOLS + KCP_PROTOCOLS


def _count_for(workload: str, payload: int, scale: int) -> int:
    base = {"hello": 1000, "hello-raw": 2000, "relay": 300, "fanin": 5000, "fanout": 5000,
            "drain": 2000, "kcp-pingpong": 500}
    if workload in ("throughput", "throughput-raw"):
        # 20k messages of 64 B; bigger bodies: 200 to 5,000 messages, about 16 MB from 4 KiB up.
        return (20_000 if payload <= 64 else max(200, min(5_000, 16_000_000 // payload))) * scale
    if workload == "kcp-test":
        return 1000  # KCP's own test: 1000 echoes, at any scale (--count sets another number)
    return base[workload] * scale


def default_matrix(full: bool, protocols: list[str] | None = None) -> list[dict]:
    """The matrix of `python -m bench` (quick) and `--full`. Without --protocols, the quick
    matrix runs every workload for tcp, udp and udp-raw, and the latency preset udp-turbo
    only for hello, relay and kcp-test (its bulk figures are in --full), to stay under 2 minutes.
    With --protocols, the same matrix for the protocols named, and nothing else."""
    scale = 5 if full else 1
    payloads = [16, 64, 256, 1024, 4096, 16384, 65536] if full else [16, 64, 1024, 65536]
    widths = [10, 50] if full else [10]
    turbo_light = protocols is None and not full
    kcp_pingpong, kcp_test = _kcp_modes(KCP_PINGPONG_MODES, protocols), _kcp_modes(KCP_PROTOCOLS, protocols)
    if protocols is None:
        protocols = list(PROTOCOLS) if full else list(DEFAULT_PROTOCOLS)
    cells: list[dict] = []
    for protocol in [p for p in protocols if not p.startswith("kcp-")]:
        cells.append({"workload": "hello", "protocol": protocol})
        cells.append({"workload": "hello-raw", "protocol": protocol})
        cells.append({"workload": "relay", "protocol": protocol})
        cells += [{"workload": "throughput", "protocol": protocol, "payload": p} for p in payloads]
        if protocol == "tcp":  # the server alone, from a minimal client (bench/throughput_raw.py)
            cells.append({"workload": "throughput-raw", "protocol": protocol, "payload": 64})
        cells += [{"workload": w, "protocol": protocol, "clients": c} for w in ("fanin", "fanout") for c in widths]
        cells.append({"workload": "drain", "protocol": protocol})
    if turbo_light:
        cells += [{"workload": w, "protocol": "udp-turbo"} for w in ("hello", "relay")]
    cells += [{"workload": "kcp-pingpong", "protocol": p} for p in kcp_pingpong]
    # KCP's own test (8-byte echoes), with KCP and with hellohi's reliability layer
    # (udp: default preset, udp-turbo: latency preset) on the same simulated link.
    kcp_test += [p for p in RELIABLE_ON_KCP_LINK if p in protocols or (turbo_light and p == "udp-turbo")]
    cells += [{"workload": "kcp-test", "protocol": p, "payload": default_payload("kcp-test")} for p in kcp_test]
    for cell in cells:
        cell.setdefault("count", _count_for(cell["workload"], cell.get("payload", 64), scale))
    return cells


def _kcp_modes(modes: tuple[str, ...], protocols: list[str] | None) -> list[str]:
    """The KCP `modes` a matrix runs: all of them without --protocols, else those it names."""
    return [mode for mode in modes if protocols is None or mode in protocols]


def pair_problem(workload: str, protocol: str) -> str | None:
    """Why `workload` cannot run over `protocol`, or None if it can."""
    if workload in KCP_WORKLOADS:
        if protocol.startswith("kcp-") or (workload == "kcp-test" and protocol in RELIABLE_ON_KCP_LINK):
            return None
        return (f"{workload} needs a kcp-* protocol" + (" (or udp, udp-turbo: hellohi's reliability layer on "
                                                        "KCP's simulated link)" if workload == "kcp-test" else ""))
    if protocol.startswith("kcp-"):
        return f"{protocol} runs only kcp-test and kcp-pingpong"
    if workload in TCP_ONLY_WORKLOADS and protocol != "tcp":
        return f"{workload} runs over tcp only"
    return None


def default_payload(workload: str) -> int:
    return KcpScenario.payload if workload == "kcp-test" else 64  # KCP's test echoes 8 bytes, as its README figures do


def payload_bounds(workload: str) -> tuple[int, str]:
    """(the smallest payload `workload` can carry, why); the largest is the server's body limit."""
    if workload in KCP_WORKLOADS:
        return KCP_MIN_PAYLOAD, " (its echo carries an 8-byte id and timestamp)"
    if workload in BODY_WORKLOADS:
        return ID_WIDTH, f" (each body starts with a {ID_WIDTH}-digit message id)"
    return 1, ""


def check_payload_flag(payloads: list[int], workloads: list[str], protocols: list[str]) -> None:
    """Refuse a --payloads size that a workload of the flag matrix cannot carry, naming the flag."""
    runnable = [w for w in workloads if any(pair_problem(w, p) is None for p in protocols)]
    for payload in payloads:
        for workload in runnable:
            low, why = payload_bounds(workload)
            if not low <= payload <= DEFAULT_MAX_BODY:
                raise MatrixError(f"--payloads {payload}: {workload} takes payloads from {low} to "
                                  f"{DEFAULT_MAX_BODY} bytes{why}; {DEFAULT_MAX_BODY} is the server's body limit")


def flag_matrix(args) -> list[dict]:
    """Every combination of the flags' lists that can run (pair_problem() skips the others)."""
    cells = []
    for workload, protocol, payload, clients in itertools.product(
            args.workloads, args.protocols, args.payloads or [None], args.clients or [1]):
        if payload is None:
            payload = default_payload(workload)
        if pair_problem(workload, protocol) is not None:
            continue
        if workload not in ("fanin", "fanout") and clients != (args.clients or [1])[0]:
            continue  # the width only matters to fan-in/fan-out
        cell = {"workload": workload, "protocol": protocol, "payload": payload, "clients": clients}
        cell["count"] = args.count or _count_for(workload, payload, 5 if args.full else 1)
        cells.append(cell)
    return cells


def _toml_module():
    try:
        import tomllib  # Python 3.11 and newer
    except ImportError:
        import tomli as tomllib  # its backport, installed by requirements.txt on Python 3.10
    return tomllib


class MatrixError(ValueError):
    """A matrix that cannot run; the message names the problem and what to write instead."""


CONFIG_SECTIONS = ("defaults", "scenario", "scenarios", "matrix")
MATRIX_LISTS = {"workloads": str, "protocols": str, "payloads": int, "clients": int}
SCENARIO_FIELDS = tuple(f.name for f in fields(Scenario))
# Fan-in/fan-out width: the clients the server takes by default, less the one at the other end.
MAX_CLIENTS = RelayLimits().max_clients - 1
KCP_MIN_PAYLOAD = 8  # KCP's echo carries an 8-byte id and timestamp


def load_config(path: str) -> list[dict]:
    """TOML or JSON: optional [defaults] (any Scenario field), then either a list of
    [[scenario]] tables or a [matrix] of lists (workloads, protocols, payloads, clients)."""
    kind = "TOML" if path.endswith(".toml") else "JSON"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise MatrixError(f"cannot read --config {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise MatrixError(f"--config {path} is not UTF-8 text; save it as UTF-8 (some editors write UTF-16 "
                          "unless asked)") from None
    try:
        data = _toml_module().loads(text) if kind == "TOML" else json.loads(text)
    except ValueError as error:  # TOMLDecodeError and JSONDecodeError are both ValueErrors
        raise MatrixError(f"--config {path} is not valid {kind} ({error}); "
                          "a file not ending in .toml is read as JSON") from None
    where = f"--config {path}"
    if not isinstance(data, dict):
        raise MatrixError(f"{where}: the top level must be a table (TOML) or an object (JSON)")
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise MatrixError(f"{where}: unknown section {unknown[0]!r}; the sections are defaults, scenario "
                          "(a list of scenarios) and matrix")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise MatrixError(f"{where}: [defaults] must be a table of scenario fields")
    if unknown := sorted(set(defaults) - set(SCENARIO_FIELDS)):
        raise MatrixError(f"{where}, [defaults]: unknown field {unknown[0]!r}; the fields are {', '.join(SCENARIO_FIELDS)}")
    if "scenario" in data and "scenarios" in data:
        raise MatrixError(f"{where} has both [[scenario]] and [[scenarios]]; put all the scenarios under one name")
    listed = data.get("scenario", data.get("scenarios", []))
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise MatrixError(f"{where}: scenarios are a list of tables: [[scenario]] in TOML, "
                          '"scenarios": [{...}] in JSON')
    cells = [dict(defaults, **item) for item in listed]
    if "matrix" in data:
        cells += _matrix_cells(data["matrix"], defaults, where)
    if not cells:
        raise MatrixError(f"{where} describes no scenario: add [[scenario]] tables or a [matrix]")
    # A bad value may be the scenario's own or one it took from [defaults]: the message says both.
    inherited = " (its fields include [defaults])" if defaults else ""
    for number, cell in enumerate(cells, 1):
        if "round" in cell:  # run_round sets it; a file's value was silently replaced
            raise MatrixError(f"{where}, scenario {number}{inherited}: round is not set in a file; "
                              "measure the matrix again with --rounds N")
        check_cell(cell, f"{where}, scenario {number}{inherited}")
        cell.setdefault("payload", default_payload(cell["workload"]))
        cell.setdefault("count", _count_for(cell["workload"], cell["payload"], 1))
    return cells


def _matrix_cells(m, defaults: dict, where: str) -> list[dict]:
    if not isinstance(m, dict):
        raise MatrixError(f"{where}: [matrix] must be a table of lists")
    unknown = sorted(set(m) - set(MATRIX_LISTS))
    if unknown:
        raise MatrixError(f"{where}: [matrix] has no field {unknown[0]!r}; its fields are "
                          f"{', '.join(MATRIX_LISTS)}")
    for key, kind in MATRIX_LISTS.items():
        if key in m and (not isinstance(m[key], list) or not m[key]
                         or not all(isinstance(v, kind) and not isinstance(v, bool) for v in m[key])):
            example = '["hello", "relay"]' if kind is str else "[64, 1024]"
            raise MatrixError(f"{where}: [matrix] {key} must be a non-empty list, e.g. {key} = {example}")
    # Like the flags, a matrix holds every combination of its lists that can run
    # (pair_problem); a list left out keeps [defaults]' value, or the workload's default.
    cells, problems = [], []
    for workload, protocol, payload, clients in itertools.product(
            m.get("workloads", ["hello"]), m.get("protocols", ["tcp"]), m.get("payloads", [None]),
            m.get("clients", [None])):
        if (problem := pair_problem(workload, protocol)) is not None:
            problems.append(problem)
            continue
        cell = dict(defaults, workload=workload, protocol=protocol)
        if payload is not None:
            cell["payload"] = payload
        if clients is not None:
            cell["clients"] = clients
        cells.append(cell)
    if not cells and problems:
        raise MatrixError(f"{where}: no workload in [matrix] can run over its protocols: {problems[0]}")
    return cells


def check_cell(cell: dict, where: str) -> None:
    """Refuse, with a MatrixError naming the field, a cell that could not run as meant."""
    unknown = sorted(set(cell) - set(SCENARIO_FIELDS))
    if unknown:
        raise MatrixError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(SCENARIO_FIELDS)}")
    workload, protocol = cell.get("workload"), cell.get("protocol", "tcp")
    if workload is None:
        raise MatrixError(f"{where} has no workload; add one, e.g. workload = \"hello\" (the workloads are "
                          f"{', '.join(ALL_WORKLOADS)})")
    if workload not in ALL_WORKLOADS:
        raise MatrixError(f"{where}: workload {workload!r} is not one of {', '.join(ALL_WORKLOADS)}")
    if protocol not in ALL_PROTOCOLS:
        raise MatrixError(f"{where}: protocol {protocol!r} is not one of {', '.join(ALL_PROTOCOLS)}")
    if (problem := pair_problem(workload, protocol)) is not None:
        raise MatrixError(f"{where}: workload {workload!r} with protocol {protocol!r} cannot run: {problem}")

    def whole(name: str, low: int, high: int | None = None) -> None:
        value = cell.get(name)
        if value is None:
            return  # the Scenario default
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise MatrixError(f"{where}: {name} must be a whole number {bound}, got {value!r}")

    whole("count", 1)
    whole("clients", 1, MAX_CLIENTS)
    whole("window", 1)
    whole("warmup", 0)
    whole("seed", 0)
    whole("round", 1)
    whole("payload", payload_bounds(workload)[0], DEFAULT_MAX_BODY)
    timeout = cell.get("timeout", 1.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
        raise MatrixError(f"{where}: timeout is in seconds, more than 0, got {timeout!r}")
    link = cell.get("link", "loopback")
    if link not in ("loopback", "emulated"):
        raise MatrixError(f"{where}: link is \"loopback\" or \"emulated\", got {link!r}")
    if link == "emulated":
        link_spec(cell.get("link_config", {}), where)
    elif cell.get("link_config"):
        # Loopback has no link to impair: run as it is, the scenario would silently measure a clean link.
        raise MatrixError(f"{where}: link_config only applies to an emulated link; add link = \"emulated\" "
                          "(or remove link_config to run on loopback)")


def link_spec(config, where: str) -> LinkSpec:
    """The LinkSpec for a link_config dict, or a MatrixError that says what is wrong with it."""
    if not isinstance(config, dict):
        raise MatrixError(f"{where}: link_config must be a table of LinkSpec fields")
    known = [f.name for f in fields(LinkSpec)]
    for name, value in config.items():
        if name not in known:
            raise MatrixError(f"{where}: {name!r} is not a link field; the fields are {', '.join(known)}")
        whole = name == "seed"
        allowed = (int,) if whole else (int, float)
        if (not isinstance(value, allowed) or isinstance(value, bool)) and not (name == "rate_mbit" and value is None):
            raise MatrixError(f"{where}: link field {name} must be {'a whole number' if whole else 'a number'}, "
                              f"got {value!r}")
    try:
        return LinkSpec(**config)
    except ValueError as error:
        raise MatrixError(f"{where}: {error}") from None


def to_scenarios(cells: list[dict], seed: int, window: int | None) -> list[Scenario]:
    out = []
    for cell in cells:
        cell = dict(cell)
        cell.setdefault("seed", seed)
        if window:
            cell.setdefault("window", window)
        check_cell(cell, f"scenario {cell.get('workload')}/{cell.get('protocol', 'tcp')}")
        out.append(Scenario(**cell))
    return out


ISSUE4_LINK = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}


def parse_link(text: str) -> dict:
    """'loss=0.05,delay_ms=10' -> {'loss': 0.05, 'delay_ms': 10.0}; 'issue4' -> the issue's link."""
    if text == "issue4":
        return dict(ISSUE4_LINK)
    spec = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not FIELD=VALUE (e.g. loss=0.05,delay_ms=10), "
                                             "nor issue4 (the issue's link)")
        if key in spec:  # the last one would win without a word, and the first was meant as much
            raise argparse.ArgumentTypeError(f"{key} is given twice in {text!r}; give each field once")
        try:
            spec[key] = int(value) if key == "seed" else float(value)
        except ValueError:
            kind = "a whole number" if key == "seed" else "a number"
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not {kind}") from None
        if not math.isfinite(spec[key]):
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a finite number")
    try:
        link_spec(spec, "--link")
    except MatrixError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--link: ")) from None
    return spec


def emulated_cells(links: list[dict], protocols: list[str] | None, full: bool) -> list[dict]:
    """Across an impaired link: hello, the relay round trip and a little throughput (64 B),
    per protocol (tcp, udp, udp-raw, also with --full), and KCP's echo beside them
    (with --protocols, only the protocols it names)."""
    hellohi_protocols = [p for p in (protocols or DEFAULT_PROTOCOLS) if not p.startswith("kcp-")]
    kcp_modes = _kcp_modes(KCP_PINGPONG_MODES, protocols)
    cells = []
    for link in links:
        for protocol in hellohi_protocols:
            cells.append({"workload": "hello", "protocol": protocol, "count": 500 if full else 100})
            cells.append({"workload": "relay", "protocol": protocol, "count": 1000 if full else 200})
            cells.append({"workload": "throughput", "protocol": protocol, "count": 10000 if full else 2000})
        cells += [{"workload": "kcp-pingpong", "protocol": p, "count": 500 if full else 100} for p in kcp_modes]
        for cell in cells:
            cell.setdefault("link", "emulated")
            cell.setdefault("link_config", link)
    return cells
