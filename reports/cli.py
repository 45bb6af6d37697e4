"""python -m reports RESULTS_DIR [--out DIR]: report.md, charts and a lab handout from a bench run.

    python -m bench --out results/latest     # measure (or: make bench)
    python -m reports results/latest         # results/latest/report/{report.md, *.png, handout.md}

Exit status: 0 the report was written; 2 the input or the output folder is unusable
(the message says what is wrong and what to do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .load import BadResults, describe_cpu_idle, interrupted, links_used, load_run, measured, results_file, stopped_by
from .tables import (baseline_table, delivery_table, kcp_table, latency_table, not_measured_table, ratio_table,
                     throughput_table)

NOT_IN_RUN = "No scenario in this run measured this."


def _section(title: str, table: str | None, intro: str = "", empty: str = NOT_IN_RUN) -> list[str]:
    body = [intro, ""] if intro else []
    return [f"## {title}", "", *body, table if table else empty, ""]


def _rounds_line(run: dict) -> list[str]:
    rounds = run.get("rounds", 1)
    if rounds == 1:
        return []
    return [f"- rounds: {rounds} (`--rounds`): every scenario and baseline was measured {rounds} times, each row says "
            "its round (after round 1, ids end in `-roundN`), and each ratio is the median of its values in the rounds"]


# Why the delivery chart is absent when delivery was counted: it only draws what could lose messages
# (reports/charts.py, _could_lose), and "not measured" would contradict the Delivery table above it.
NOTHING_LOST = ("Nothing to draw: no scenario that counted delivery could lose messages here (all ran on loopback, "
                "or on KCP's simulated link, over a transport that sends again what is lost) and none lost or "
                "duplicated one; the Delivery table above has the counts.")


def _said(environment: dict, key: str) -> str:
    """A field of the machine's description, or that the run did not record it (not "None")."""
    value = environment.get(key)
    return "(not recorded)" if value is None else str(value)


def _no_chart(run: dict, title: str) -> str:
    if title == "delivery" and any(s["figures"].get("delivery") for s in measured(run)):
        return NOTHING_LOST
    return NOT_IN_RUN


def report_markdown(run: dict, charts: list[tuple[str, str, Path | None]]) -> str:
    environment = run["environment"]
    idle = describe_cpu_idle(environment)  # what a wake-up costs moves every ratio to sockperf
    parts = [
        "# hellohi bench report",
        "",
        f"- run: started {run.get('started_utc', '(not recorded)')}, finished {run.get('finished_utc', '(not recorded)')}",
        f"- command: `{' '.join(map(str, run.get('command') or ['(not recorded)']))}`",
        f"- machine: {_said(environment, 'cpu_model')} × {_said(environment, 'cpu_count')} CPUs, {_said(environment, 'os')} "
        f"kernel {_said(environment, 'kernel')}, Python {_said(environment, 'python')}, hellohi commit {_said(environment, 'git_commit')}"
        + (f", TCP congestion control {environment['tcp_congestion_control']}" if environment.get("tcp_congestion_control") else ""),
        *([f"- idle CPUs {idle}"] if idle else []),
        f"- links: {links_used(run)}",
        *_rounds_line(run),
        *([f"- **interrupted**: {stopped_by(run)} stopped this run; only the scenarios and baselines that finished before it "
            "are here"] if interrupted(run) else []),
        "",
        "Latencies are in microseconds and each says whether it is a round trip or one way; jitter is the",
        "RFC 3550 interarrival jitter of the same samples. A \"-\" means the scenario has no such figure.",
        "",
        *_section("Targets, as ratios measured in this run", ratio_table(run), empty="This run lists no ratios."),
        *_section("Latency", latency_table(run)),
        *_section("Delivery", delivery_table(run),
                  "Counted by the receiving application: sent = delivered + lost exactly; a late message is "
                  "delivered (and counted as reordered), not lost; duplicates are counted apart. `retransmitted` "
                  "is what was sent again to make up for loss: UDP data packets, counted by the clients' "
                  "reliability layer (the server's are not visible to the bench); TCP segments, counted by the "
                  "kernels of both hosts, on emulated links only (on loopback the kernel's counter is shared "
                  "with everything else on the machine); 0 for plain UDP, which never sends anything again."),
        *_section("Throughput", throughput_table(run),
                  "Goodput counts message bodies only. `seconds` is the transfer time (for a drain: from the "
                  "offline client's connect to its last message)."),
        *_section("KCP's test scenario, replayed (virtual time)", kcp_table(run),
                  "The README's default-mode figures (740 / 1,507 ms) are not what KCP's current code gives: "
                  "its own test.cpp, built from its repository, printed about 4,100-4,500 ms average there "
                  "(docs/bench.md). Normal and fast mode match the README."),
        *_section("Baselines, same run", baseline_table(run),
                  empty=f"{stopped_by(run)} stopped this run before any baseline finished, or they were skipped."
                  if interrupted(run) else "Baselines were skipped in this run."),
        *_section("Scenarios not measured", not_measured_table(run),
                  f"{stopped_by(run)} stopped this run: the scenarios it cut short or never reached are not in results.json, "
                  "so they are not listed here either." if interrupted(run) else "",
                  empty="Every scenario that ran was measured." if interrupted(run)
                  else "Every scenario of the matrix was measured."),
    ]
    for title, caption, path in charts:
        parts += [f"## Chart: {title}", "", f"{caption}", "", f"![{title}]({path.name})" if path else
                  _no_chart(run, title), ""]
    return "\n".join(parts)


def build_report(run: dict, out: Path) -> list[Path]:
    """Write report.md, handout.md and the charts into `out`; returns the files written."""
    # Imported here, not at the top: matplotlib takes half a second to load, and a bad
    # input should get its error message without that wait.
    from .charts import delivery_chart, latency_chart, throughput_chart
    from .handout import handout

    out.mkdir(parents=True, exist_ok=True)
    charts = [
        ("latency", "Percentiles p50/p90/p99/p99.9 per scenario, on a line from min to max.",
         latency_chart(run, out / "latency.png")),
        ("throughput", "Messages per second and goodput against payload size (a gap: that size was not measured)"
         + (f"; each point is the median of the rounds that measured it (of {run['rounds']})."
            if run.get("rounds", 1) > 1 else "."),
         throughput_chart(run, out / "throughput.png")),
        ("delivery", "Delivered and lost shares of sent, where messages could be lost.",
         delivery_chart(run, out / "delivery.png")),
    ]
    report_path, handout_path = out / "report.md", out / "handout.md"
    report_path.write_text(report_markdown(run, charts), encoding="utf-8")
    handout_path.write_text(handout(run), encoding="utf-8")
    return [report_path, handout_path] + [path for _, _, path in charts if path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR",
                        help="the folder the bench wrote (python -m bench --out DIR), or its results.json")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write the report (default: RESULTS_DIR/report)")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.results)
    except BadResults as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or results_file(args.results).parent / "report"
    try:
        written = build_report(run, out)
    except OSError as error:
        print(f"error: cannot write the report to {out} ({error}); choose another folder with --out DIR",
              file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        # load_run checks every field the report relies on; this catches a field of an odd
        # type that slipped past it, so the user still gets one line instead of a traceback.
        print(f"error: {results_file(args.results)} has a field this report cannot read ({type(error).__name__}: "
              f"{error}); run the bench again to get a well-formed results.json", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
