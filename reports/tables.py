"""The report's tables, as Markdown (tabulate's GitHub format).

One table per question a reader asks (how fast, how much arrived, how much per
second), rather than one table with every column: a student comparing p99 of TCP
and UDP should not have to scan past goodput and CPU time to find it.
A "-" in a cell means the scenario does not have that figure (a drain has no
latency, a ping-pong has no throughput) or that nobody counted it (TCP's retransmissions
on loopback); it is never a stand-in for a number.
"""

from __future__ import annotations

import re

from tabulate import tabulate

from .load import describe_link, latency, measured, not_measured


def number(value, digits: int = 1) -> str:
    """1234.5 -> '1,234.5'; None -> '-' (the figure does not exist for this scenario)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _markdown(rows: list[list], headers: list[str]) -> str:
    # disable_numparse: keep our own formatting ("1,234.5"), tabulate must not re-parse it.
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def latency_table(run: dict) -> str | None:
    rows = []
    for scenario in measured(run):
        lat = latency(scenario)
        if not lat:
            continue
        rows.append([
            scenario["id"], describe_link(scenario["config"]), lat["measure"].replace("_", " "), number(lat.get("count")),
            number(lat.get("min")), number(lat.get("p50")), number(lat.get("p90")), number(lat.get("p99")),
            number(lat.get("p99_9")), number(lat.get("max")), number(lat.get("jitter_rfc3550")),
        ])
    if not rows:
        return None
    return _markdown(rows, ["scenario", "link", "latency is", "samples", "min µs", "p50 µs", "p90 µs", "p99 µs",
                            "p99.9 µs", "max µs", "jitter µs (RFC 3550)"])


def retransmitted(scenario: dict) -> int | None:
    """What was sent again to make up for loss, where someone counted it: the UDP clients'
    reliability layer (data packets), or, for TCP on an emulated link, both hosts' kernels
    (segments). Plain UDP never sends anything again."""
    figures = scenario["figures"]  # their shape was checked on loading (reports/load.py)
    if scenario["config"]["protocol"] == "udp-raw":
        return 0
    if "udp_counters" in figures:
        return figures["udp_counters"]["retransmitted"]
    if "tcp_counters" in figures:
        return sum(host["RetransSegs"] for host in figures["tcp_counters"].values())
    return None  # not counted: shown as "-"


def delivery_table(run: dict) -> str | None:
    rows = []
    for scenario in measured(run):
        d = scenario["figures"].get("delivery")
        if not d:
            continue
        rows.append([
            scenario["id"], describe_link(scenario["config"]), number(d["sent"]), number(d["delivered"]),
            number(d["lost"]), number(d["duplicates"]), number(d["reordered"]), number(d.get("foreign")),
            number(retransmitted(scenario)),
        ])
    if not rows:
        return None
    return _markdown(rows, ["scenario", "link", "sent", "delivered", "lost", "duplicates", "reordered", "foreign",
                            "retransmitted"])


def throughput_table(run: dict) -> str | None:
    rows = []
    for scenario in measured(run):
        f = scenario["figures"]
        if f.get("messages_per_s") is None and f.get("goodput_MB_per_s") is None:
            continue
        server = scenario.get("server") or {}
        rss = server.get("peak_rss_bytes")
        delivery = f.get("delivery") or {}
        # Beside the rate: a rate counts what arrived, so plain UDP losing most of its
        # messages would otherwise read as fast as (or faster than) a transport that lost none.
        delivered = (f"{number(delivery['delivered'])} of {number(delivery['sent'])}"
                     if "delivered" in delivery and "sent" in delivery else "-")
        rows.append([
            scenario["id"], describe_link(scenario["config"]), number(scenario["config"].get("payload")),
            number(f.get("messages_per_s"), 0), number(f.get("goodput_MB_per_s"), 2), delivered,
            number(f.get("elapsed_s", f.get("drain_s")), 3), number(server.get("cpu_s"), 2),
            number(rss / 1e6 if rss is not None else None, 1),
        ])
    if not rows:
        return None
    return _markdown(rows, ["scenario", "link", "payload B", "msg/s", "goodput MB/s", "delivered", "seconds",
                            "server CPU s", "server peak RSS MB"])


def kcp_table(run: dict) -> str | None:
    """KCP's own test replayed: average and maximum RTT next to the figures KCP's README reports."""
    rows = []
    for scenario in measured(run):
        f = scenario["figures"]
        if scenario["config"]["workload"] != "kcp-test":
            continue
        readme = f.get("kcp_readme_avg_max_rtt_ms") or [None, None]
        # With --rounds each round has its rows: say which, as the baseline table does.
        round_ = f" (round {scenario['config'].get('round', 1)})" if run.get("rounds", 1) > 1 else ""
        rows.append([scenario["config"]["protocol"] + round_, number(f.get("avg_rtt_ms")), number(f.get("max_rtt_ms")),
                     number(readme[0]), number(readme[1])])
    if not rows:
        return None
    return _markdown(rows, ["protocol", "avg RTT ms", "max RTT ms", "KCP README avg ms", "KCP README max ms"])


def not_measured_table(run: dict) -> str | None:
    rows = [[s["id"], s["status"], s.get("reason", "")] for s in not_measured(run)]
    if not rows:
        return None
    return _markdown(rows, ["scenario", "status", "why"])


def _baseline_note(entry: dict) -> str:
    if entry["status"] != "ok":
        return entry.get("reason", "")
    figures = entry["figures"]
    if "ratio_median" in figures:  # bench/paired.py: hellohi beside sockperf, in turns
        return f"{len(figures['blocks'])} turns with sockperf; median ratio: " + ", ".join(
            f"{name} {number(value, 2)}×" for name, value in figures["ratio_median"].items())
    if "warm" in figures:  # bench/protocol_work.py: no round trip over a socket, two timings of the work
        return (f"no sockets: p50 {number(figures['warm']['p50'], 2)} µs back to back, "
                f"{number(figures['after_sleep']['p50'], 2)} µs after a {entry['config']['sleep_us']:g} µs sleep")
    return ""


def baseline_table(run: dict) -> str | None:
    rows = []
    for entry in run["baselines"]:
        figures = entry.get("figures") or {}
        lat = figures.get("latency") or {}
        rows.append([
            entry["tool"], entry["test"] + (f" (round {entry.get('round', 1)})" if run.get("rounds", 1) > 1 else ""),
            entry["status"],
            number(lat.get("p50"), 2), number(lat.get("p99"), 2), number(figures.get("goodput_MB_per_s"), 0),
            _baseline_note(entry),
        ])
    if not rows:
        return None
    return _markdown(rows, ["tool", "test", "status", "RTT p50 µs", "RTT p99 µs", "MB/s", "note"])


def verdict(ratio: dict) -> str:
    if ratio.get("value") is None:
        return "not measured"
    if ratio.get("target") is None:
        return "information"
    return {True: "met", False: "NOT met", None: "not measured"}[ratio.get("met")]


def ratio_value(ratio: dict) -> str:
    return "-" if ratio.get("value") is None else f"{ratio['value']:.2f}x"


def ratio_target(ratio: dict) -> str:
    if ratio.get("target") is None:
        return "-"
    return f"{'≤' if ratio.get('better') == 'lower' else '≥'} {ratio['target']}x"


# Said of a ratio that was not measured when the bench's detail gives no reason in words.
MISSING_FIGURE = "a figure it needs was not measured in this run (see the scenarios not measured and the baselines)"

_MICROSECONDS = re.compile(r"(?<=[0-9( ])us\b")

# A figure the bench did not have, as older benches wrote it into a ratio's detail ("None msg/s").
_NONE_FIGURE = re.compile(r"\bNone\b")

# The turns of bench/paired.py, as older benches named them in a ratio's detail ("median of 5 blocks;
# per block"): the handout's part 1 and the docs say turns, and a student should not look for blocks.
_OLD_TURNS = ((re.compile(r"\bmedian of (\d+) blocks; per block\b"), r"median of \1 turns; per turn"),)


def ratio_name(ratio: dict) -> str:
    return _MICROSECONDS.sub("µs", ratio["name"])


def ratio_detail(ratio: dict) -> str:
    """Where a ratio came from: the bench's detail (its two figures), or, if it was not
    measured, why not. The bench says why in words ("not measured (baselines skipped)",
    "udp preset not measured / 216.7"); results.json files of older
    benches may instead hold the formula with the missing figure printed as None
    ("None msg/s"), which a student cannot read as a reason: the report says it in words."""
    detail = ratio.get("detail") or ""
    if ratio.get("value") is None and (not detail or _NONE_FIGURE.search(detail)):
        return MISSING_FIGURE
    for old_words, words in _OLD_TURNS:
        detail = old_words.sub(words, detail)
    return _MICROSECONDS.sub("µs", detail)  # the bench's console writes ASCII "us"; the report, µs


def ratio_table(run: dict) -> str | None:
    rows = [[ratio_name(r), ratio_value(r), ratio_target(r), verdict(r), ratio_detail(r)] for r in run.get("ratios", [])]
    if not rows:
        return None
    return _markdown(rows, ["ratio (same run)", "measured", "target", "verdict", "from"])
