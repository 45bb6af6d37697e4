"""python -m bench: build a scenario matrix, run it, print ratios, write results.

    python -m bench                      quick default matrix (< 2 min on 2 cores)
    python -m bench --full --out reports/bench
    python -m bench --workloads hello,relay --protocols tcp --count 2000
    python -m bench --config matrix.toml
    python -m bench --server 192.0.2.10:5000 --protocols tcp   (a server on another computer)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from hellohi import eventloop

from . import baselines, protocol_work, python_floor, results
from .clients import DEFAULT_PROTOCOLS, PROTOCOLS
from .runner import KCP_WORKLOADS, RELIABLE_ON_KCP_LINK, TCP_ONLY_WORKLOADS, run_scenario
from .workloads import WORKLOADS, Scenario

KCP_PROTOCOLS = ("kcp-default", "kcp-normal", "kcp-fast")
TARGET_RTT_RATIO = 1.6
TARGET_MSGS_PER_S = 50_000


# --------------------------------------------------------------------- matrix


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


# --------------------------------------------------------------------- output


class Progress:
    """A plain-text progress bar on stderr (one line per step when not a terminal)."""

    def __init__(self, total: int, stream=None, width: int = 30):
        stream = stream or sys.stderr
        self.total, self.stream, self.width, self.done = total, stream, width, 0
        self.started = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def step(self, label: str) -> None:
        filled = self.width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.started:5.1f}s {label}"
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def advance(self) -> None:
        self.done += 1

    def finish(self) -> None:
        self.step("done")
        if self.tty:
            self.stream.write("\n")


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _round_label(number: int, run: dict) -> str:
    return f" (round {number})" if run.get("rounds", 1) > 1 else ""


def print_table(run: dict, out=None) -> None:
    out = out or sys.stdout
    header = f"{'scenario':34s} {'status':14s} {'measure':10s} {'p50 us':>10s} {'p99 us':>10s} {'max us':>11s} {'deliv/sent':>13s} {'msg/s':>10s} {'MB/s':>8s} {'srv cpu s':>9s}"
    print(header, file=out)
    shown_round = None
    for r in run["scenarios"]:
        if run.get("rounds", 1) > 1 and r["config"].get("round", 1) != shown_round:
            shown_round = r["config"].get("round", 1)
            print(f"round {shown_round} of {run['rounds']}:", file=out)  # (long ids are cut short below)
        f = r.get("figures") or {}
        lat = f.get("latency") or {}
        d = f.get("delivery") or {}
        deliv = f"{d['delivered']}/{d['sent']}" if d else "-"
        print(f"{r['id'][:34]:34s} {r['status']:14s} {lat.get('measure') or '-':10s} {_fmt(lat.get('p50')):>10s} "
              f"{_fmt(lat.get('p99')):>10s} {_fmt(lat.get('max')):>11s} {deliv:>13s} {_fmt(f.get('messages_per_s'), 0):>10s} "
              f"{_fmt(f.get('goodput_MB_per_s'), 2):>8s} {_fmt((r.get('server') or {}).get('cpu_s'), 2):>9s}", file=out)
        if r["status"] != "ok":
            print(f"    {r.get('reason', '')}", file=out)
    for b in run["baselines"]:
        f = b.get("figures") or {}
        lat = f.get("latency") or {}
        line = f"{b['tool']} {b['test']}{_round_label(b.get('round', 1), run)}: {b['status']}"
        if lat:
            line += f"  round_trip p50 {lat['p50']} us p99 {lat['p99']} us"
        if "goodput_MB_per_s" in f:
            line += f"  {f['goodput_MB_per_s']:,.0f} MB/s"
        if "warm" in f:
            line += (f"  p50 back to back {f['warm']['p50']} us, after a {b['config']['sleep_us']:g} us sleep "
                     f"{f['after_sleep']['p50']} us")
        if b["status"] != "ok":
            line += f"  ({b.get('reason', '')[:200]})"
        print(line, file=out)


def _find(run, workload, protocol, payload=None, link="loopback", link_config=None):
    for r in run["scenarios"]:
        c = r["config"]
        if c["workload"] == workload and c["protocol"] == protocol and r["status"] == "ok" \
                and (payload is None or c["payload"] == payload) and c.get("link", "loopback") == link \
                and (link_config is None or c.get("link_config") == link_config):
            return r
    return None


def _baseline(run, test):
    for b in run["baselines"]:
        if b["test"] == test and b["status"] == "ok":
            return b
    return None


def compute_ratios(run: dict) -> list[dict]:
    """The performance targets of issue 4, as measured in this run (None: not measured).

    With several rounds (--rounds), each ratio is computed within each round, from
    figures measured minutes apart at most, and judged by the median of those values;
    `per_round` lists them (None: not measured in that round) and `met_rounds` says in
    how many rounds the target was met.
    """
    rounds = run.get("rounds", 1)
    if rounds == 1:
        return _ratios_of_one_round(run)
    by_round = []
    for number in range(1, rounds + 1):
        view = {"scenarios": [s for s in run["scenarios"] if s["config"].get("round", 1) == number],
                "baselines": [b for b in run["baselines"] if b.get("round", 1) == number]}
        by_round.append({r["name"]: r for r in _ratios_of_one_round(view)})
    names = list(dict.fromkeys(name for ratios in by_round for name in ratios))
    merged = []
    for name in names:
        entries = [ratios.get(name) for ratios in by_round]
        first = next(e for e in entries if e is not None)
        values = [e["value"] if e else None for e in entries]
        measured = [v for v in values if v is not None]
        value = statistics.median(measured) if measured else None
        met_rounds = sum(1 for e in entries if e and e["met"]) if first["target"] is not None else None
        if not measured:
            detail = f"not measured in any of {rounds} rounds"
        else:
            how = f"median of {len(measured)} rounds" if len(measured) > 1 else f"measured in 1 of {rounds} rounds"
            detail = f"{how}: " + ", ".join(f"{v:.2f}x" for v in measured)
            if met_rounds is not None:
                detail += f"; met in {met_rounds} of {rounds}"
        merged.append({**first, "value": value, "met": _met(value, first["target"], first["better"]),
                       "detail": detail, "per_round": values, "met_rounds": met_rounds})
    return merged


def _met(value, target, better) -> bool | None:
    if value is None or target is None:
        return None
    return value <= target if better == "lower" else value >= target


def _ratios_of_one_round(run: dict) -> list[dict]:
    ratios = []

    def add(name, value, target, better, detail):
        ratios.append({"name": name, "value": value, "target": target, "better": better,
                       "met": _met(value, target, better), "detail": detail})

    # hello: through the asyncio client library; hello-raw: from a blocking socket, so
    # the figure is the server's own cost (see bench/workloads.py).
    for protocol, workload in (("tcp", "hello"), ("tcp", "hello-raw"), ("udp", "hello"), ("udp", "hello-raw"),
                               ("udp-raw", "hello-raw")):
        s = _find(run, workload, protocol)
        kernel = "tcp" if protocol == "tcp" else "udp"
        b = _baseline(run, f"ping-pong-{kernel}")
        value = (s["figures"]["latency"]["p50"] / b["figures"]["latency"]["p50"]) if s and b else None
        add(f"{workload} {protocol} round-trip p50 / sockperf {kernel} ping-pong round-trip p50", value,
            TARGET_RTT_RATIO, "lower",
            f"{s['figures']['latency']['p50'] if s else None} us / {b['figures']['latency']['p50'] if b else None} us")
    # Information: what CPython and asyncio cost with no protocol at all (bench/python_floor.py).
    for kernel in ("tcp", "udp"):
        floor, b = _baseline(run, f"python-echo-{kernel}"), _baseline(run, f"ping-pong-{kernel}")
        if floor and b:
            loop = floor.get("config", {}).get("event_loop", "asyncio")
            add(f"python echo ({loop}) {kernel} round-trip p50 / sockperf {kernel} ping-pong round-trip p50 (information)",
                floor["figures"]["latency"]["p50"] / b["figures"]["latency"]["p50"], None, "lower",
                f"{floor['figures']['latency']['p50']} us / {b['figures']['latency']['p50']} us")
    # Information: the same Python protocol work, no sockets, warm and after a sleep (bench/protocol_work.py).
    for protocol in ("udp", "udp-raw"):
        work = _baseline(run, f"protocol-work-{protocol}")
        if work:
            warm, slept = work["figures"]["warm"]["p50"], work["figures"]["after_sleep"]["p50"]
            add(f"{protocol} protocol work per Hello/HI, no sockets, p50 after a "
                f"{work['config']['sleep_us']:g} us sleep / back to back (information)", slept / warm, None, "lower",
                f"{slept} us / {warm} us")
    # throughput: through the asyncio client library; throughput-raw: from two minimal
    # sockets, so the figure is what the server process alone carries (bench/throughput_raw.py).
    for workload in ("throughput", "throughput-raw"):
        s = _find(run, workload, "tcp", 64)
        mps = s["figures"]["messages_per_s"] if s else None
        add(f"{workload} tcp relay alice->bob 64 B (msg/s) / 50,000", mps / TARGET_MSGS_PER_S if mps else None,
            1.0, "higher", f"{mps} msg/s")
    big = max((r for r in run["scenarios"] if r["config"]["workload"] == "throughput"
               and r["config"]["protocol"] == "tcp" and r["status"] == "ok"),
              key=lambda r: r["config"]["payload"], default=None)
    ip = _baseline(run, "tcp-throughput")
    if big and ip:
        value = big["figures"]["goodput_MB_per_s"] / ip["figures"]["goodput_MB_per_s"]
        add(f"tcp relay goodput {big['config']['payload']} B / iperf3 goodput (information)", value, None, "higher",
            f"{big['figures']['goodput_MB_per_s']:.1f} MB/s / {ip['figures']['goodput_MB_per_s']:.1f} MB/s")
    # Across the issue's emulated link (5 % loss, 10 ms one way), tcp and udp on the same link.
    for link in sorted({json.dumps(r["config"].get("link_config"), sort_keys=True) for r in run["scenarios"]
                        if r["config"].get("link") == "emulated"}):
        config = json.loads(link)
        tcp = _find(run, "relay", "tcp", link="emulated", link_config=config)
        udp = _find(run, "relay", "udp", link="emulated", link_config=config)
        if udp:
            d = udp["figures"]["delivery"]
            exact = d["delivered"] == d["sent"] and d["duplicates"] == 0
            add(f"emulated {link}: udp relay delivered exactly once (1 = all)", 1.0 if exact else d["delivered"] / d["sent"],
                1.0, "higher", f"{d['delivered']}/{d['sent']} delivered, {d['duplicates']} duplicates")
        value = (udp["figures"]["latency"]["p99"] / tcp["figures"]["latency"]["p99"]) if tcp and udp else None
        add(f"emulated {link}: udp relay round-trip p99 / tcp relay round-trip p99", value, 1.0, "lower",
            f"{udp['figures']['latency']['p99'] if udp else 'udp not measured'} us / "
            f"{tcp['figures']['latency']['p99'] if tcp else None} us")
        retrans = (udp or {}).get("figures", {}).get("retransmission_ratio")
        add(f"emulated {link}: udp retransmissions / loss-implied minimum", retrans, 1.3, "lower",
            "from the udp client's counters" if retrans is not None else "udp counters not measured")
    kfast = _find(run, "kcp-test", "kcp-fast")
    udp_turbo = _find(run, "kcp-test", "udp-turbo")
    for stat in ("avg_rtt_ms", "max_rtt_ms"):
        value = (udp_turbo["figures"][stat] / kfast["figures"][stat]) if kfast and udp_turbo else None
        add(f"KCP test: udp latency preset {stat} / KCP fast mode {stat}", value, 1.0, "lower",
            f"{udp_turbo['figures'][stat] if udp_turbo else 'udp preset not measured'} / "
            f"{kfast['figures'][stat] if kfast else None}")
    return [r for r in ratios if r["target"] is not None or r["value"] is not None]


def print_ratios(ratios: list[dict], out=None) -> None:
    out = out or sys.stdout
    rounds = max((len(r.get("per_round", ())) for r in ratios), default=0)
    how = f" (the median of each ratio over {rounds} rounds)" if rounds > 1 else ""
    print(f"\nIssue 4 targets, as measured in this run{how}:", file=out)
    for r in ratios:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[r["met"]]
        if r["target"] is None:
            verdict = "info"
        value = "-" if r["value"] is None else f"{r['value']:.2f}x"
        target = "" if r["target"] is None else f" (target {'<=' if r['better'] == 'lower' else '>='} {r['target']}x)"
        print(f"  {value:>8s}  {r['name']}{target}: {verdict}  [{r['detail']}]", file=out)


# --------------------------------------------------------------------- main


ISSUE4_LINK = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}


def baseline_jobs(seconds: float) -> list[tuple[str, Callable[[], dict]]]:
    """(name, job) for every baseline; each job returns one baseline entry of results.json."""
    return [("sockperf tcp", lambda: baselines.sockperf_pingpong("tcp", seconds)),
            ("sockperf udp", lambda: baselines.sockperf_pingpong("udp", seconds)),
            ("iperf3 tcp", lambda: baselines.iperf3_throughput(seconds)),
            ("python echo tcp", lambda: python_floor.echo_pingpong("tcp", seconds)),
            ("python echo udp", lambda: python_floor.echo_pingpong("udp", seconds)),
            ("protocol work udp", lambda: protocol_work.measure("udp")),
            ("protocol work udp-raw", lambda: protocol_work.measure("udp-raw"))]


def run_round(run: dict, number: int, rounds: int, jobs, scenarios: list[Scenario], remote, progress: Progress) -> None:
    """One pass over the baselines and the matrix; every entry it adds to `run` says its round."""
    prefix = f"round {number}/{rounds}: " if rounds > 1 else ""
    for name, job in jobs:
        progress.step(prefix + name)
        run["baselines"].append({**job(), "round": number})
        progress.advance()
    for sc in [s for s in scenarios if s.link == "loopback"]:
        progress.step(prefix + sc.id)
        run["scenarios"].append(run_scenario(sc, remote=remote))
        progress.advance()
    # One emulated network per distinct link, shared by that link's scenarios.
    by_link: dict[str, list[Scenario]] = {}
    for sc in scenarios:
        if sc.link != "loopback":
            by_link.setdefault(json.dumps(sc.link_config, sort_keys=True), []).append(sc)
    for link_json, group in by_link.items():
        from .emulation import EmulatedNetwork, LinkSpec

        progress.step(f"{prefix}setting up emulated link {link_json}")
        with EmulatedNetwork(LinkSpec(**json.loads(link_json))) as net:
            for sc in group:
                progress.step(prefix + sc.id)
                run["scenarios"].append(run_scenario(sc, net=net))
                progress.advance()


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


def emulation_problem() -> str | None:
    """None if emulated hosts can run here, else why not and what to do instead."""
    try:
        from .emulation import check_environment
    except ImportError as error:
        return f"bench/emulation is not available ({error})"
    try:
        check_environment()
    except Exception as error:  # EmulationError: says what is missing and how to fix it
        return str(error)
    return None


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the larger matrix for the report")
    p.add_argument("--config", metavar="FILE", help="scenario matrix from a TOML or JSON file (see docs/bench.md)")
    p.add_argument("--workloads", type=lambda s: s.split(","), metavar="LIST",
                   help=f"comma-separated, from: {', '.join(WORKLOADS + KCP_WORKLOADS)}")
    p.add_argument("--protocols", type=lambda s: s.split(","), metavar="LIST",
                   help=f"comma-separated, from: {', '.join(PROTOCOLS + KCP_PROTOCOLS)} (default: tcp,udp,udp-raw, "
                        "and udp-turbo for hello, relay and kcp-test; --full: all). kcp-test also takes udp and "
                        "udp-turbo: hellohi's reliability layer on KCP's simulated link")
    p.add_argument("--payloads", type=lambda s: [int(x) for x in s.split(",")], metavar="BYTES,...")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], metavar="N,...",
                   help="fan-in/fan-out widths")
    p.add_argument("--count", type=int, help="messages or pings per scenario")
    p.add_argument("--window", type=int, help="bulk workloads: messages in flight (default 256)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=_positive_int, default=1, metavar="N",
                   help="run the whole matrix, baselines included, N times in a row, and judge each ratio by its "
                        "median over the rounds (on a shared, noisy machine one round can be lucky or unlucky)")
    p.add_argument("--server", metavar="HOST:PORT", help="use this running server instead of starting one (real computers)")
    p.add_argument("--link", action="append", type=parse_link, metavar="SPEC",
                   help="also run the matrix across emulated hosts joined by this impaired link (root, Linux), "
                        "e.g. loss=0.05,delay_ms=10,seed=1 (fields of bench.emulation.LinkSpec; repeatable). "
                        "'issue4' is loss=0.05,delay_ms=10")
    p.add_argument("--no-emulation", action="store_true",
                   help="never use emulated hosts (the default matrix adds the issue-4 link when running as root)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines: sockperf, iperf3, the Python echo and the in-process protocol work")
    p.add_argument("--baseline-seconds", type=float, default=2.0)
    p.add_argument("--out", metavar="DIR", help="write results.json and results.csv here")
    eventloop.add_loop_argument(p)  # for the servers it starts and its own clients
    p.add_argument("--list", action="store_true", help="print the scenarios and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    eventloop.apply_choice(args.loop)  # every process of the run inherits it
    remote = None
    if args.server:
        from hellohi.options import host_port
        try:
            remote = host_port(args.server)
        except argparse.ArgumentTypeError as error:
            build_parser().error(str(error))
    if args.config:
        cells = load_config(args.config)
    elif args.workloads or args.payloads or args.clients or (args.protocols and not args.full):
        args.workloads = args.workloads or list(WORKLOADS)
        args.protocols = args.protocols or list(DEFAULT_PROTOCOLS)
        cells = flag_matrix(args)
    else:
        cells = default_matrix(args.full, args.protocols)
    if args.count and not args.config:
        for cell in cells:
            cell["count"] = args.count
    links = args.link or []
    emulation_note = None
    if not links and not args.config and not remote and not args.no_emulation \
            and not (args.workloads or args.payloads or args.clients):
        # The default matrix includes the issue's impaired link when this machine can emulate it.
        emulation_note = emulation_problem()
        if emulation_note is None:
            links = [dict(ISSUE4_LINK)]
        else:
            print(f"note: emulated hosts skipped: {emulation_note}", file=sys.stderr)
    if links:
        if (problem := emulation_problem()) is not None:
            print(f"error: --link needs emulated hosts, which cannot run here: {problem}\n"
                  "Instead: run the loopback bench without --link, or run this as root on Linux.", file=sys.stderr)
            return 2
        protocols = [p for p in (args.protocols or list(DEFAULT_PROTOCOLS)) if not p.startswith("kcp-")]
        if args.workloads:
            emulated = [dict(c, link="emulated", link_config=link) for link in links for c in cells
                        if c["workload"] != "kcp-test"]
        else:
            emulated = emulated_cells(links, protocols, args.full)
        if args.count:
            for cell in emulated:
                cell["count"] = args.count
        cells = cells + emulated
    scenarios = to_scenarios(cells, args.seed, args.window)
    if remote:
        # Against a remote server only the hellohi workloads make sense.
        scenarios = [s for s in scenarios if s.workload not in KCP_WORKLOADS]
    scenarios = [replace(sc, round=number) for number in range(1, args.rounds + 1) for sc in scenarios]
    if args.list:
        for sc in scenarios:
            print(sc.id, json.dumps(sc.as_dict()))
        return 0

    missing = baselines.missing_tools()
    if not args.no_baselines and not remote:
        for tool, hint in missing.items():
            print(f"note: {tool} is not installed, so its baseline is skipped; to measure it: {hint}", file=sys.stderr)
    run = results.new_run(["python", "-m", "bench", *argv], baselines.tool_versions())
    run["rounds"] = args.rounds
    jobs = [] if args.no_baselines or remote else baseline_jobs(args.baseline_seconds)
    progress = Progress(len(scenarios) + args.rounds * len(jobs))
    for number in range(1, args.rounds + 1):
        run_round(run, number, args.rounds, jobs, [sc for sc in scenarios if sc.round == number], remote, progress)
    progress.finish()
    run["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run["ratios"] = compute_ratios(run)
    print_table(run)
    print_ratios(run["ratios"])
    if args.out:
        json_path, csv_path = results.write(run, args.out)
        print(f"\nwrote {json_path} and {csv_path}")
    failed = [r for r in run["scenarios"] if r["status"] == "error"]
    return 1 if failed else 0
