"""The performance targets of issue 4, as ratios of figures measured in the same run.

Each ratio divides one of hellohi's figures by a baseline or a target measured
or set beside it (sockperf's round trip, 50,000 msg/s, TCP on the same emulated
link, KCP on the same simulated link), so a noisy machine slows both sides of
the fraction alike. Ratios marked "information" have no target: they show where
the time goes.
"""

from __future__ import annotations

import json
import statistics
import sys

from .kcp_peer import KcpScenario
from .paired import CLIENTS, client_label

TARGET_RTT_RATIO = 1.6
TARGET_MSGS_PER_S = 50_000


def _find(run, workload, protocol, payload=None, link="loopback", link_config=None):
    for r in run["scenarios"]:
        c = r["config"]
        if c["workload"] == workload and c["protocol"] == protocol and r["status"] == "ok" \
                and (payload is None or c["payload"] == payload) and c.get("link", "loopback") == link \
                and (link_config is None or c.get("link_config") == link_config):
            return r
    return None


def _baseline_entry(run, test):
    """The baseline entry for `test`, whatever its status (one per test in a round)."""
    return next((b for b in run["baselines"] if b["test"] == test), None)


def _baseline(run, test):
    """The baseline entry for `test` if it measured, else None."""
    entry = _baseline_entry(run, test)
    return entry if entry is not None and entry["status"] == "ok" else None


def _why_no_turns(entry: dict | None, label: str) -> str | None:
    """The bench's own reason why the turns' baseline `entry` measured no `label` client
    (the run's protocols left it out, sockperf missing, ...), if it recorded one."""
    if entry is None:
        return None
    left_out = entry.get("config", {}).get("left_out") or {}
    if label in left_out:
        return left_out[label]
    if entry["status"] != "ok":
        return f"{entry['status']}: {entry.get('reason', '')}"
    return None


def _figure(entry: dict | None, *path: str):
    """entry["figures"][path...], or None where a scenario or baseline measured nothing."""
    value = (entry or {}).get("figures")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ratio(numerator, denominator) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


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
                "baselines": [b for b in run["baselines"] if b.get("round", 1) == number],
                "interrupted": run.get("interrupted"), "stopped_by": run.get("stopped_by")}
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
        reasons = {e["detail"] for e in entries if e is not None}
        if not measured and len(reasons) == 1:  # the same reason every time (a protocol the run left out)
            detail = f"{reasons.pop()}, in each of {rounds} rounds"
        elif not measured:
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
    # the figure is the server's own cost (see bench/workloads.py). The target is judged
    # on bench/paired.py's figures: hellohi and sockperf measured in turns, seconds
    # apart, on the same two cores. The scenarios' own p50s, taken half a minute after
    # sockperf's baseline and wherever the scheduler put the processes, are shown as
    # information beside them.
    # Without an entry for the turns (an entry says why it measured nothing, sockperf
    # missing among the reasons), the run had no baselines, or was stopped before them.
    remote = any(r["config"].get("link") == "remote" for r in run["scenarios"])
    if remote:  # bench/cli.py runs no baselines against --server: they would measure this computer
        unmeasured_turns = "a run against --server measures no baselines; the targets are judged on loopback"
    elif run.get("interrupted"):
        unmeasured_turns = f"baselines skipped, or {run.get('stopped_by') or 'Ctrl-C or SIGTERM'} before them"
    else:
        unmeasured_turns = "baselines skipped"
    for kernel, clients in CLIENTS.items():
        turns = _baseline_entry(run, f"paired-hello-{kernel}")  # an entry that measured nothing has no figures
        blocks = _figure(turns, "blocks") or []
        for workload, protocol in clients:
            label = client_label(workload, protocol)
            value = _figure(turns, "ratio_median", label)
            why_not = _why_no_turns(turns, label) or unmeasured_turns
            add(f"{label} round-trip p50 / sockperf {kernel} ping-pong round-trip p50, measured in turns",
                value, TARGET_RTT_RATIO, "lower",
                f"median of {len(blocks)} turns; per turn (us / us): "
                + ", ".join(f"{row.get(label)} / {row['sockperf']}" for row in blocks)
                if value is not None else f"not measured ({why_not})")
            ours = _figure(_find(run, workload, protocol), "latency", "p50")
            floor = _figure(_baseline(run, f"ping-pong-{kernel}"), "latency", "p50")
            add(f"{label} round-trip p50 / sockperf {kernel} ping-pong round-trip p50, measured apart (information)",
                _ratio(ours, floor), None, "lower", f"{ours} us / {floor} us")
    # Information: what CPython and asyncio cost with no protocol at all, and with the
    # least protocol that makes a Hello/HI reliable (bench/python_floor.py).
    for test, what, kernel in (("python-echo-tcp", "python echo", "tcp"), ("python-echo-udp", "python echo", "udp"),
                               ("python-stop-and-wait-udp", "python stop-and-wait", "udp")):
        floor_run = _baseline(run, test)
        python, kernel_floor = _figure(floor_run, "latency", "p50"), _figure(_baseline(run, f"ping-pong-{kernel}"), "latency", "p50")
        if python is not None and kernel_floor is not None:
            loop = floor_run.get("config", {}).get("event_loop", "asyncio")
            add(f"{what} ({loop}) {kernel} round-trip p50 / sockperf {kernel} ping-pong round-trip p50 (information)",
                _ratio(python, kernel_floor), None, "lower", f"{python} us / {kernel_floor} us")
    # Information: the same Python protocol work, no sockets, warm and after a sleep (bench/protocol_work.py).
    for protocol in ("udp", "udp-raw"):
        work = _baseline(run, f"protocol-work-{protocol}")
        warm, slept = _figure(work, "warm", "p50"), _figure(work, "after_sleep", "p50")
        if warm is not None and slept is not None:
            add(f"{protocol} protocol work per Hello/HI, no sockets, p50 after a "
                f"{work['config']['sleep_us']:g} us sleep / back to back (information)", _ratio(slept, warm), None, "lower",
                f"{slept} us / {warm} us")
    # throughput: through the asyncio client library; throughput-raw: from two minimal
    # sockets, so the figure is what the server process alone carries (bench/throughput_raw.py).
    for workload in ("throughput", "throughput-raw"):
        s = _find(run, workload, "tcp", 64)
        mps = _figure(s, "messages_per_s")
        missing = f"{workload} tcp 64 B not measured" + (" on loopback, where it is judged (this run was against --server)"
                                                          if remote else "")
        add(f"{workload} tcp relay alice->bob 64 B (msg/s) / 50,000", _ratio(mps, TARGET_MSGS_PER_S),
            1.0, "higher", f"{mps:,.0f} msg/s" if mps is not None else missing)
    # The throughput target names no transport; it is judged on TCP (docs/bench.md,
    # "Ratios and their targets"), and the UDP relay's figures stand beside it, so neither is hidden.
    for protocol in ("udp", "udp-raw"):
        mps = _figure(_find(run, "throughput", protocol, 64), "messages_per_s")
        if mps is not None:
            add(f"throughput {protocol} relay alice->bob 64 B (msg/s) / 50,000 (information)",
                _ratio(mps, TARGET_MSGS_PER_S), None, "higher", f"{mps:,.0f} msg/s")
    big = max((r for r in run["scenarios"] if r["config"]["workload"] == "throughput"
               and r["config"]["protocol"] == "tcp" and r["status"] == "ok"),
              key=lambda r: r["config"]["payload"], default=None)
    ours, iperf = _figure(big, "goodput_MB_per_s"), _figure(_baseline(run, "tcp-throughput"), "goodput_MB_per_s")
    if (value := _ratio(ours, iperf)) is not None:
        add(f"tcp relay goodput {big['config']['payload']} B / iperf3 goodput (information)", value, None, "higher",
            f"{ours:.1f} MB/s / {iperf:.1f} MB/s")
    # For each emulated link of the run (the issue's: 5 % loss, 10 ms one way), tcp and udp on the same link.
    for link in sorted({json.dumps(r["config"].get("link_config"), sort_keys=True) for r in run["scenarios"]
                        if r["config"].get("link") == "emulated"}):
        config = json.loads(link)
        tcp = _find(run, "relay", "tcp", link="emulated", link_config=config)
        udp = _find(run, "relay", "udp", link="emulated", link_config=config)
        if udp:
            d = udp["figures"]["delivery"]
            # A duplicate takes its copy's share off: all delivered but one twice is not
            # "exactly once", so it must not reach 1.
            once = d["delivered"] - d["duplicates"]
            add(f"emulated {link}: udp relay delivered exactly once (1 = all, none twice)", _ratio(once, d["sent"]),
                1.0, "higher", f"{d['delivered']}/{d['sent']} delivered, {d['duplicates']} duplicates")
        udp_p99, tcp_p99 = _figure(udp, "latency", "p99"), _figure(tcp, "latency", "p99")
        add(f"emulated {link}: udp relay round-trip p99 / tcp relay round-trip p99", _ratio(udp_p99, tcp_p99), 1.0,
            "lower", f"{_shown(udp_p99, 'udp', ' us')} / {_shown(tcp_p99, 'tcp', ' us')}")
        retrans = _figure(udp, "retransmission_ratio")
        if retrans is not None:
            why = _retransmission_detail(udp["figures"])
        elif udp is None:
            why = "udp relay not measured on this link"
        elif not config.get("loss"):
            why = "this link loses nothing: there is no loss-implied minimum to compare with"
        else:
            why = "udp counters not measured"
        add(f"emulated {link}: udp retransmissions / loss-implied minimum", retrans, 1.3, "lower", why)
    # Judged on KCP's own scenario only: 8-byte echoes, as in the README figures it is read beside.
    kfast = _find(run, "kcp-test", "kcp-fast", payload=KcpScenario.payload)
    udp_turbo = _find(run, "kcp-test", "udp-turbo", payload=KcpScenario.payload)
    other_payloads = sorted({r["config"]["payload"] for r in run["scenarios"]
                             if r["config"]["workload"] == "kcp-test"} - {KcpScenario.payload})
    for stat in ("avg_rtt_ms", "max_rtt_ms"):
        ours, theirs = _figure(udp_turbo, stat), _figure(kfast, stat)
        detail = f"{_shown(ours, 'udp preset')} / {_shown(theirs, 'KCP fast mode')}"
        if (ours is None or theirs is None) and other_payloads:
            detail = (f"judged on KCP's own {KcpScenario.payload}-byte echoes only; this run's kcp-test sent "
                      f"{', '.join(map(str, other_payloads))} B")
        add(f"KCP test: udp latency preset {stat} / KCP fast mode {stat}", _ratio(ours, theirs), 1.0, "lower", detail)
    return [r for r in ratios if r["target"] is not None or r["value"] is not None]


def _retransmission_detail(figures: dict) -> str:
    """How many retransmissions, against what minimum, from which loss share (bench/runner.py)."""
    retransmitted = (figures.get("udp_counters") or {}).get("retransmitted")
    minimum = figures.get("loss_implied_min_retransmissions")
    if retransmitted is None or minimum is None:
        return "from the udp clients' counters"
    share = figures.get("loss_share") or {}  # results.json written before loss_share have none
    if share.get("measured") is None:
        return f"{retransmitted} retransmitted / {minimum:.1f} at the configured client -> server loss"
    return (f"{retransmitted} retransmitted / {minimum:.1f} at the {share['measured']:.2%} the link dropped "
            f"client -> server ({share['configured']:.0%} configured)")


def _shown(value, what: str, unit: str = "") -> str:
    """A figure for a ratio's detail, or that `what` was not measured (never "None")."""
    return f"{value}{unit}" if value is not None else f"{what} not measured"


def print_ratios(ratios: list[dict], environment: dict | None = None, out=None) -> None:
    out = out or sys.stdout
    rounds = max((len(r.get("per_round", ())) for r in ratios), default=0)
    how = f" (the median of each ratio over {rounds} rounds)" if rounds > 1 else ""
    print(f"\nThe project's targets (set in issue 4), as measured in this run{how}:", file=out)
    if environment:
        print(f"  on {machine_line(environment)}", file=out)
    if ratios and all(r["value"] is None for r in ratios):
        # (a run against --server, for one): a few reasons, said once each rather than target after target
        names_by_reason: dict[str, list[str]] = {}
        for r in ratios:
            names_by_reason.setdefault(r["detail"], []).append(r["name"].split(" / ")[0])
        print("  none measured in this run:", file=out)
        for reason, names in names_by_reason.items():
            print(f"    {'; '.join(names)}: {reason}", file=out)
        return
    for r in ratios:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[r["met"]]
        if r["target"] is None:
            verdict = "info"
        value = "-" if r["value"] is None else f"{r['value']:.2f}x"
        target = "" if r["target"] is None else f" (target {'<=' if r['better'] == 'lower' else '>='} {r['target']}x)"
        print(f"  {value:>8s}  {r['name']}{target}: {verdict}  [{r['detail']}]", file=out)


def machine_line(environment: dict) -> str:
    """The processor and how its idle CPUs sleep: a ratio to sockperf is a property of both
    (docs/bench.md, "Idle CPUs"), so two runs' ratios compare only beside this line."""
    idle = environment.get("cpu_idle") or {}
    poll = idle.get("guest_halt_poll_ns")
    sleeping = (f"idle CPUs: cpuidle driver {idle.get('driver') or '?'}"
                + (f", guest halt-polling {poll} ns" if poll is not None else "")) if idle else "idle CPUs: not recorded"
    return (f"{environment.get('cpu_model') or 'an unnamed processor'}, {environment.get('cpu_count') or '?'} CPUs; "
            f"{sleeping} (ratios to sockperf move with both: docs/bench.md, \"Idle CPUs\")")
