"""The report's charts, drawn with matplotlib to PNG files (no screen needed).

Each function returns the path it wrote, or None when the run has nothing to draw
(the report then says so in words instead of showing an empty chart).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files only: works over SSH, in CI and without a display
import matplotlib.pyplot as plt  # noqa: E402  (must come after use("Agg"))
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .load import describe_link, latency, link_of, measured  # noqa: E402

PROTOCOL_COLOURS = {"tcp": "tab:blue", "udp": "tab:orange", "udp-raw": "tab:red", "udp-turbo": "tab:brown",
                    "kcp-default": "tab:gray", "kcp-normal": "tab:olive", "kcp-fast": "tab:green"}

# The percentiles drawn on the latency chart, with their markers.
PERCENTILE_MARKERS = (("p50", "o", "p50"), ("p90", "^", "p90"), ("p99", "s", "p99"), ("p99_9", "D", "p99.9"))


def _colour(protocol: str) -> str:
    return PROTOCOL_COLOURS.get(protocol, "tab:purple")


def _save(figure, path: Path, room_below: float = 0.0) -> Path:
    figure.tight_layout(rect=(0, room_below, 1, 1))  # room_below: a share of the height kept for a key
    figure.savefig(path, dpi=110)
    plt.close(figure)  # free the memory: a report draws several charts in one process
    return path


def latency_chart(run: dict, path: Path) -> Path | None:
    """One row per scenario: a line from min to max, markers at p50/p90/p99/p99.9 (log scale,
    because a loopback round trip and a lossy-link round trip differ by a factor of 1000)."""
    scenarios = [s for s in measured(run) if latency(s)]
    if not scenarios:
        return None
    figure, axes = plt.subplots(figsize=(10, 0.42 * len(scenarios) + 1.8))
    for row, scenario in enumerate(scenarios):
        lat, colour = latency(scenario), _colour(scenario["config"]["protocol"])
        if lat.get("min") is not None and lat.get("max") is not None:
            axes.plot([lat["min"], lat["max"]], [row, row], color=colour, linewidth=1, alpha=0.5)
        for key, marker, _ in PERCENTILE_MARKERS:
            if lat.get(key) is not None:
                axes.plot(lat[key], row, marker=marker, color=colour, linestyle="none")
    labels = [f"{s['id']} ({latency(s)['measure'].replace('_', ' ')}"
              + (", virtual time)" if s["config"]["workload"] == "kcp-test" else ")") for s in scenarios]
    axes.set_yticks(range(len(scenarios)), labels, fontsize=8)
    axes.set_ylim(len(scenarios) - 0.5, -0.5)  # first scenario on top, no empty rows around them
    axes.set_xscale("log")
    axes.tick_params(axis="x", top=True, labeltop=True)  # a tall chart: the scale at both ends
    axes.set_xlabel("latency, µs (log scale); line: min to max")
    axes.set_title("Latency percentiles by scenario (colour: protocol)")
    # Beside the plot, not on it: inside, it hid the markers of the last rows. One key for
    # the markers (in black, as they mean the same in every colour), one for the colours.
    protocols = list(dict.fromkeys(s["config"]["protocol"] for s in scenarios))
    keys = [Line2D([], [], marker=marker, color="black", linestyle="none", label=label)
            for _, marker, label in PERCENTILE_MARKERS]
    keys += [Line2D([], [], color=_colour(protocol), linewidth=6, label=protocol) for protocol in protocols]
    axes.legend(handles=keys, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes.grid(True, axis="x", which="both", alpha=0.3)
    return _save(figure, path)


def throughput_series(run: dict) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
    """Per (protocol, link): (payload, messages/s, MB/s) by payload size, the median of the
    rounds with --rounds. A size that was in the matrix but not measured (it failed, or could
    not run) is NaN, so its line breaks there instead of running straight from one measured
    size to the next as if that size had been measured too; a measured 0 stays 0."""
    series: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = {}
    for scenario in run["scenarios"]:
        config, figures = scenario["config"], scenario.get("figures") or {}
        if config["workload"] != "throughput":
            continue
        # (msg/s, MB/s) of each round that measured this size; none: a gap in the line
        measured_rounds = series.setdefault((config["protocol"], describe_link(config)), {}).setdefault(
            config.get("payload", 0), [])
        # 0 msg/s is a measurement (nothing arrived), drawn as 0; only a missing figure is a gap.
        if scenario["status"] == "ok" and figures.get("messages_per_s") is not None:
            goodput = figures.get("goodput_MB_per_s")
            measured_rounds.append((figures["messages_per_s"], math.nan if goodput is None else goodput))
    lines = {}
    for key, by_payload in series.items():
        if any(by_payload.values()):
            lines[key] = [(payload, *_median_point(by_payload[payload])) for payload in sorted(by_payload)]
    return lines


def _median_point(rounds: list[tuple[float, float]]) -> tuple[float, float]:
    if not rounds:
        return math.nan, math.nan
    goodputs = [g for _, g in rounds if not math.isnan(g)]
    return statistics.median(r for r, _ in rounds), statistics.median(goodputs) if goodputs else math.nan


def _log_scale_that_shows_zero(axes, values: list[float]) -> None:
    """A log scale, as rates span several powers of ten; but a log scale cannot show 0 (it would
    hide a measured 0 as if it were a gap), so with a 0 on the axis the scale is linear from 0 up
    to the smallest rate measured above it, logarithmic beyond."""
    if 0 not in values:
        axes.set_yscale("log")
        return
    above_zero = [v for v in values if v > 0]
    axes.set_yscale("symlog", linthresh=min(above_zero) if above_zero else 1.0)
    axes.set_ylim(bottom=0)


def throughput_chart(run: dict, path: Path) -> Path | None:
    """Messages per second and MB/s against payload size, one line per protocol and link."""
    lines = throughput_series(run)
    if not lines:
        return None
    figure, (rate_axes, goodput_axes) = plt.subplots(1, 2, figsize=(12, 5.5))
    drawn: dict = {rate_axes: [], goodput_axes: []}  # the values on each axes, for its scale
    for (protocol, link), points in sorted(lines.items()):
        style, marker = ("-", "o") if link == "loopback" else ("--", "s")
        payloads = [p for p, _, _ in points]
        for axes, values in ((rate_axes, [r for _, r, _ in points]), (goodput_axes, [g for _, _, g in points])):
            axes.plot(payloads, values, style, marker=marker, color=_colour(protocol), label=f"{protocol} ({link})")
            drawn[axes] += [v for v in values if not math.isnan(v)]
    for axes, ylabel in ((rate_axes, "messages per second (of those that arrived)"),
                         (goodput_axes, "goodput, MB/s (bodies that arrived)")):
        axes.set_xscale("log", base=2)
        _log_scale_that_shows_zero(axes, drawn[axes])
        axes.set_xlabel("payload, bytes")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
    # One key for both panels, under them: inside, it hid points wherever "best" put it.
    figure.legend(*rate_axes.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("Relay throughput, alice → server → bob, counting the messages that arrived (how many: report.md)")
    return _save(figure, path, room_below=0.1)


def _could_lose(scenario: dict) -> bool:
    """Worth a bar on the delivery chart: any link but loopback (emulated, or a real network to a
    --server), UDP without acks, or anything that did lose."""
    d = scenario["figures"]["delivery"]
    return (link_of(scenario["config"]) != "loopback" or scenario["config"]["protocol"] == "udp-raw"
            or d["lost"] > 0 or d["duplicates"] > 0)


def delivery_chart(run: dict, path: Path) -> Path | None:
    """Delivered and lost as shares of sent (they add up to 100 %); duplicates written beside the bar."""
    scenarios = [s for s in measured(run) if s["figures"].get("delivery") and _could_lose(s)]
    if not scenarios:
        return None
    height = 0.42 * len(scenarios) + 2.2
    figure, axes = plt.subplots(figsize=(10, height))
    for row, scenario in enumerate(scenarios):
        d = scenario["figures"]["delivery"]
        sent = max(d["sent"], 1)
        delivered, lost = 100.0 * d["delivered"] / sent, 100.0 * d["lost"] / sent
        axes.barh(row, delivered, color=_colour(scenario["config"]["protocol"]))
        axes.barh(row, lost, left=delivered, color="lightgray", hatch="//")
        axes.text(101, row, f"{d['delivered']}/{d['sent']}, {d['duplicates']} dup", va="center", fontsize=7)
    # The id already names an emulated link's impairments (e.g. ...-emulated-delay_ms10-loss0.05).
    axes.set_yticks(range(len(scenarios)), [s["id"] for s in scenarios], fontsize=8)
    axes.set_ylim(len(scenarios) - 0.5, -0.5)  # first scenario on top, no empty rows around them
    axes.set_xlim(0, 130)  # room on the right for the counts written beside the bars
    axes.set_xticks(range(0, 101, 20))  # a share of sent never exceeds 100 %
    axes.set_xlabel("% of messages sent (sent = delivered + lost; duplicates counted apart)", fontsize=9)
    axes.set_title("What arrives when messages can be lost")
    # Delivered takes its protocol's colour, so the key names the colours, and lost apart.
    protocols = list(dict.fromkeys(s["config"]["protocol"] for s in scenarios))
    keys = [Patch(color=_colour(protocol), label=f"delivered, {protocol}") for protocol in protocols]
    keys.append(Patch(facecolor="lightgray", hatch="//", label="lost"))
    figure.legend(handles=keys, loc="lower center", ncol=min(len(keys), 4), fontsize=8)
    return _save(figure, path, room_below=0.7 / height)  # about two rows of keys, whatever the chart's height
