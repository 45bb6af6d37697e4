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
from pathlib import Path

from .clients import DEFAULT_PROTOCOLS, PROTOCOLS
from .runner import KCP_WORKLOADS, RELIABLE_ON_KCP_LINK, TCP_ONLY_WORKLOADS
from .workloads import Scenario

KCP_PROTOCOLS = ("kcp-default", "kcp-normal", "kcp-fast")


def _count_for(workload: str, payload: int, scale: int) -> int:
    base = {"hello": 1000, "hello-raw": 2000, "relay": 300, "fanin": 5000, "fanout": 5000,
            "drain": 2000, "kcp-pingpong": 500, "kcp-test": 1000}
    if workload in ("throughput", "throughput-raw"):
        # 20k messages of 64 B; bigger bodies: about 16 MB per scenario.
        return (20_000 if payload <= 64 else max(200, min(5_000, 16_000_000 // payload))) * scale
    if workload == "kcp-test":
        return 1000  # KCP's own test: always 1000 echoes
    return base[workload] * scale


def default_matrix(full: bool, protocols: list[str] | None = None) -> list[dict]:
    """The matrix of `python -m bench` (quick) and `--full`. Without --protocols, the quick
    matrix runs every workload for tcp, udp and udp-raw, and the latency preset udp-turbo
    only for hello and relay (its bulk figures are in --full), to stay under 2 minutes."""
    scale = 5 if full else 1
    payloads = [16, 64, 256, 1024, 4096, 16384, 65536] if full else [16, 64, 1024, 65536]
    widths = [10, 50] if full else [10]
    turbo_light = protocols is None and not full
    if protocols is None:
        protocols = list(PROTOCOLS) if full else list(DEFAULT_PROTOCOLS)
    cells: list[dict] = []
    for protocol in protocols:
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
    cells += [{"workload": "kcp-pingpong", "protocol": p} for p in ("kcp-normal", "kcp-fast")]
    # KCP's own test (8-byte echoes), with KCP and with hellohi's reliability layer
    # (udp: default preset, udp-turbo: latency preset) on the same simulated link.
    kcp_test_protocols = list(KCP_PROTOCOLS) + [p for p in RELIABLE_ON_KCP_LINK
                                                if p in protocols or (turbo_light and p == "udp-turbo")]
    cells += [{"workload": "kcp-test", "protocol": p, "payload": 8} for p in kcp_test_protocols]
    for cell in cells:
        cell.setdefault("count", _count_for(cell["workload"], cell.get("payload", 64), scale))
    return cells


def flag_matrix(args) -> list[dict]:
    cells = []
    for workload, protocol, payload, clients in itertools.product(
            args.workloads, args.protocols, args.payloads or [None], args.clients or [1]):
        if payload is None:
            payload = 8 if workload == "kcp-test" else 64  # KCP's test echoes 8 bytes
        on_kcp_link = workload == "kcp-test" and protocol in RELIABLE_ON_KCP_LINK
        if workload in KCP_WORKLOADS and not protocol.startswith("kcp-") and not on_kcp_link:
            continue
        if workload not in KCP_WORKLOADS and protocol.startswith("kcp-"):
            continue
        if workload in TCP_ONLY_WORKLOADS and protocol != "tcp":
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


def load_config(path: str) -> list[dict]:
    """TOML or JSON: optional [defaults] (any Scenario field), then either a list of
    [[scenario]] tables or a [matrix] of lists (workloads, protocols, payloads, clients)."""
    text = Path(path).read_text()
    data = _toml_module().loads(text) if path.endswith(".toml") else json.loads(text)
    defaults = data.get("defaults", {})
    cells = [dict(defaults, **s) for s in data.get("scenario", data.get("scenarios", []))]
    if "matrix" in data:
        m = data["matrix"]
        for workload, protocol, payload, clients in itertools.product(
                m.get("workloads", ["hello"]), m.get("protocols", ["tcp"]),
                m.get("payloads", [defaults.get("payload", 64)]), m.get("clients", [defaults.get("clients", 1)])):
            cells.append(dict(defaults, workload=workload, protocol=protocol, payload=payload, clients=clients))
    for cell in cells:
        cell.setdefault("count", _count_for(cell["workload"], cell.get("payload", 64), 1))
    return cells


def to_scenarios(cells: list[dict], seed: int, window: int | None) -> list[Scenario]:
    out = []
    for cell in cells:
        cell = dict(cell)
        cell.setdefault("seed", seed)
        if window:
            cell.setdefault("window", window)
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
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r} is not FIELD=VALUE (e.g. loss=0.05,delay_ms=10)")
        try:
            spec[key.strip()] = int(value) if key.strip() == "seed" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a number") from None
    return spec


def emulated_cells(links: list[dict], protocols: list[str], full: bool) -> list[dict]:
    """Across an impaired link: the relay round trip and a little throughput, per protocol,
    and KCP's echo beside them."""
    cells = []
    for link in links:
        for protocol in protocols:
            cells.append({"workload": "hello", "protocol": protocol, "count": 500 if full else 100})
            cells.append({"workload": "relay", "protocol": protocol, "count": 1000 if full else 200})
            cells.append({"workload": "throughput", "protocol": protocol, "count": 10000 if full else 2000})
        cells += [{"workload": "kcp-pingpong", "protocol": p, "count": 500 if full else 100}
                  for p in ("kcp-normal", "kcp-fast")]
        for cell in cells:
            cell.setdefault("link", "emulated")
            cell.setdefault("link_config", link)
    return cells
