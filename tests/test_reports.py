"""reports/: a bench run (results.json) -> report.md, PNG charts and the Lab 3 handout.

The input is a small synthetic run built with the bench's own code (bench.results for
the envelope, bench.stats for the figures, bench.ratios.compute_ratios for the ratios),
so it has exactly the schema a real `python -m bench` writes, without running one.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import paired, protocol_work
from bench import results as bench_results
from bench.ratios import compute_ratios
from bench.stats import ONE_WAY, ROUND_TRIP, DeliveryLedger, LatencyRecorder
from bench.workloads import Scenario
from reports import charts
from reports.cli import build_report, main
from reports.handout import handout as handout_text
from reports.load import BadResults, load_run

REPO = Path(__file__).resolve().parent.parent
ISSUE4_LINK = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}


def figures(measure: str, samples_us: list[float], sent: int, arrived: list[int], **extra) -> dict:
    """Latency and delivery figures as the bench computes them, from samples and arrivals."""
    recorder = LatencyRecorder(measure)
    for sample in samples_us:
        recorder.add(round(sample * 1000))
    ledger = DeliveryLedger()
    for _ in range(sent):
        ledger.next_id()
    for message_id in arrived:
        ledger.arrived(message_id)
    return {"latency": recorder.summary(), "delivery": ledger.summary().as_dict(), **extra}


def scenario(status: str = "ok", figures_: dict | None = None, reason: str | None = None, **config) -> dict:
    sc = Scenario(**config)
    entry = {"id": sc.id, "config": sc.as_dict(), "status": status}
    if figures_ is not None:
        entry.update(figures=figures_, server={"cpu_s": 0.25, "peak_rss_bytes": 30_000_000}, wall_s=0.5)
    if reason:
        entry["reason"] = reason
    if sc.link != "loopback":
        entry["link"] = {"kind": "emulated", "backend": "nft-tun", "counters": {
            "up": {"nft_seen": 200, "nft_dropped": 10}, "down": {"nft_seen": 180, "nft_dropped": 9}}}
    return entry


def synthetic_run(hello_p50_us: float = 123.4) -> dict:
    run = bench_results.new_run(["python", "-m", "bench", "--synthetic"], {"sockperf": "3.7", "iperf3": None})
    # This project's VM, whatever machine the test runs on.
    run["environment"]["cpu_idle"] = {"driver": "haltpoll", "governor": "haltpoll", "guest_halt_poll_ns": 0}
    run["scenarios"] = [
        scenario(workload="hello", protocol="tcp", count=5,
                 figures_=figures(ROUND_TRIP, [hello_p50_us] * 3 + [400.0, 500.0], 5, range(5))),
        scenario(workload="relay", protocol="tcp", count=4,
                 figures_=figures(ROUND_TRIP, [700.0, 810.5, 900.0, 1000.0], 4, range(4))),
        scenario(workload="throughput", protocol="tcp", payload=64, count=4,
                 figures_=figures(ONE_WAY, [50.0, 60.0, 70.0, 80.0], 4, range(4),
                                  elapsed_s=0.0001, messages_per_s=43_210.0, goodput_MB_per_s=2.77)),
        scenario(workload="drain", protocol="tcp", count=3,
                 figures_={"delivery": figures(ONE_WAY, [], 3, range(3))["delivery"], "messages_per_s": 3000.0,
                           "goodput_MB_per_s": 0.19, "stored_confirmed": 3, "drain_s": 0.001}),
        scenario(workload="hello", protocol="udp", count=5, status="unavailable",
                 reason="udp: udp.client.UdpChatClient is not available (No module named 'udp.client')"),
        # Across the issue's link: TCP delivers all 4; plain UDP loses 2 of 10, one arrives twice, one late.
        scenario(workload="relay", protocol="tcp", count=4, link="emulated", link_config=ISSUE4_LINK,
                 figures_=figures(ROUND_TRIP, [21_000.0, 22_000.0, 40_000.0, 350_000.0], 4, range(4),
                                  tcp_counters={"client": {"OutSegs": 40, "RetransSegs": 2},
                                                "server": {"OutSegs": 38, "RetransSegs": 3}})),
        scenario(workload="relay", protocol="udp-raw", count=10, link="emulated", link_config=ISSUE4_LINK,
                 figures_=figures(ROUND_TRIP, [20_000.0] * 8, 10, [0, 1, 2, 4, 3, 5, 6, 7, 7])),
        scenario(workload="kcp-test", protocol="kcp-fast", payload=8, count=3,
                 figures_={**figures(ROUND_TRIP, [110_000.0, 150_000.0, 390_000.0], 3, range(3)),
                           "avg_rtt_ms": 216.7, "max_rtt_ms": 390.0, "kcp_readme_avg_max_rtt_ms": [138, 392]}),
    ]
    run["baselines"] = [
        {"tool": "sockperf", "test": "ping-pong-tcp", "config": {"protocol": "tcp"}, "status": "ok",
         "figures": {"latency": {"measure": "round_trip", "unit": "us", "count": 1000, "min": 10.0, "mean": 15.0,
                                 "p50": 15.5, "p90": 20.0, "p99": 40.0, "p99_9": 90.0, "max": 300.0}}},
        {"tool": "sockperf", "test": "ping-pong-udp", "config": {"protocol": "udp"}, "status": "missing",
         "reason": "sockperf not installed; apt-get install sockperf"},
        {"tool": "iperf3", "test": "tcp-throughput", "config": {}, "status": "ok",
         "figures": {"goodput_MB_per_s": 2500.0, "bits_per_second": 2e10}},
        {"tool": "hellohi-paired", "test": "paired-hello-tcp", "status": "ok",
         "config": {"protocol": "tcp", "blocks": 2, "cores": {"client": 0, "server": 1}},
         "figures": {"blocks": [{"sockperf": 15.0, "hello tcp": 25.5, "hello-raw tcp": 18.0},
                                {"sockperf": 16.0, "hello tcp": 27.2, "hello-raw tcp": 19.2}],
                     "ratio_median": {"hello tcp": 1.7, "hello-raw tcp": 1.2}}},
        {"tool": "hellohi-in-process", "test": "protocol-work-udp", "config": {"protocol": "udp", "sleep_us": 50.0},
         "status": "ok", "figures": {"warm": figures(ROUND_TRIP, [31.5] * 3, 3, range(3))["latency"],
                                     "after_sleep": figures(ROUND_TRIP, [77.25] * 3, 3, range(3))["latency"]}},
    ]
    run["finished_utc"] = run["started_utc"]
    run["ratios"] = compute_ratios(run)
    return run


def write_run(folder: Path, run: dict) -> Path:
    bench_results.write(run, folder)  # results.json and results.csv, as the bench writes them
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reports", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


# --------------------------------------------------------------------- the public CLI


def test_cli_writes_report_charts_and_handout_from_the_input(tmp_path):
    run = synthetic_run()
    folder = write_run(tmp_path / "results", run)
    done = run_cli(str(folder))
    assert done.returncode == 0, done.stderr
    out = folder / "report"
    report = (out / "report.md").read_text()
    handout = (out / "handout.md").read_text()

    # Figures from the input file, formatted as the report formats them.
    assert "| hello-tcp-64B-n5 " in report and "123.4" in report        # hello p50
    assert "810.5" in report                                            # relay p50
    assert "43,210" in report and "2.77" in report                      # msg/s, MB/s
    # ...beside how many of the messages sent that rate counts: a rate counts only what arrived.
    throughput_row = next(line for line in report.splitlines() if line.startswith("| throughput-tcp-64B-n4 ") and "43,210" in line)
    assert [cell.strip() for cell in throughput_row.split("|")][4:7] == ["43,210", "2.77", "4 of 4"]
    assert "15.50" in report and "2,500" in report                      # sockperf p50, iperf3 MB/s
    assert "216.7" in report and "138" in report                        # KCP test and its README figure
    kcp_row = next(line for line in report.splitlines() if line.startswith("| kcp-test-kcp-fast"))
    assert kcp_row.split("|")[2].strip() == "simulated (KCP's test link, virtual time)"  # not "loopback"
    # The loss ledger of plain UDP: 10 sent, 8 delivered, 2 lost, 1 duplicate, 1 reordered.
    udp_raw_row = next(line for line in report.splitlines() if line.startswith("| relay-udp-raw") and "| 10 " in line)
    assert [cell.strip() for cell in udp_raw_row.split("|")[3:10]] == ["10", "8", "2", "1", "1", "0", "0"]
    # TCP on the emulated link: the segments both hosts' kernels sent again (2 + 3); loopback TCP: not counted.
    delivery = report.split("## Delivery")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in delivery.splitlines() if line.startswith("| ")}
    emulated_tcp = next(cells for name, cells in rows.items() if name.startswith("relay-tcp") and "emulated" in name)
    assert emulated_tcp[-1] == "5"
    assert rows["hello-tcp-64B-n5"][-1] == "-"
    # Scenarios that produced nothing are listed with the bench's reason.
    assert "Scenarios not measured" in report and "No module named 'udp.client'" in report
    assert "emulated: loss 5 %, delay 10 ms one way" in report

    for name in ("latency.png", "throughput.png", "delivery.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000, name
    for name in ("report.md", "handout.md", "latency.png"):
        assert f"wrote {out / name}" in done.stdout

    # The handout quotes the ratios of the run and says what was not measured.
    hello_ratio = next(r for r in run["ratios"] if r["name"].startswith("hello tcp"))  # the target: in turns
    assert f"**{hello_ratio['value']:.2f}x**" in handout and "1.70x" in f"{hello_ratio['value']:.2f}x"
    assert ("over TCP (2 turns, clients on core 0, servers on core 1): hello tcp ÷ sockperf = 1.70×; "
            "hello-raw tcp ÷ sockperf = 1.20×") in handout
    assert "over UDP: not measured in this run (baselines were skipped)" in handout
    assert "2 turns with sockperf; median ratio: hello tcp 1.70×, hello-raw tcp 1.20×" in report
    assert "median of 2 turns; per turn (µs / µs): " in report and " us" not in report  # the console's ASCII "us", as µs
    assert f"{123.4 / 15.5:.2f}×" in handout                             # the scenario over the baseline, worked out
    assert "Hello/HI over UDP with acks: not measured in this run (unavailable: udp:" in handout
    assert "8 of 10 delivered, 2 lost, 1 duplicates" in handout
    assert "38 of 760 packets dropped (5.0 %)" in handout  # the link's own counters, 2 scenarios
    assert "sockperf UDP ping-pong, p50: not measured in this run (missing: sockperf not installed" in handout
    # The protocol work without sockets, in the handout and in the baseline table, with its ratio.
    assert ("with acks 31.5 µs back to back, 77.2 µs after a 50 µs sleep; plain not measured in this run "
            "(baselines were skipped)") in handout
    assert "no sockets: p50 31.50 µs back to back, 77.25 µs after a 50 µs sleep" in report
    assert f"{77.25 / 31.5:.2f}x" in report
    # How the machine's idle CPUs sleep, which every ratio to sockperf depends on.
    assert ("- idle CPUs halt at once (cpuidle driver haltpoll, governor haltpoll; guest halt-polling 0 ns), "
            "so every wake-up goes through the hypervisor") in report
    assert "(h) This machine's idle CPUs halt at once" in handout


def test_the_machine_line_names_the_tcp_congestion_control_where_the_run_recorded_it(tmp_path):
    run = synthetic_run()
    run["environment"]["tcp_congestion_control"] = "cubic"
    build_report(copy.deepcopy(run), tmp_path / "a")
    machine = next(line for line in (tmp_path / "a" / "report.md").read_text().splitlines() if line.startswith("- machine:"))
    assert machine.endswith(", TCP congestion control cubic")
    del run["environment"]["tcp_congestion_control"]  # a run from before it was recorded
    build_report(run, tmp_path / "b")
    assert "congestion" not in (tmp_path / "b" / "report.md").read_text()


def test_a_machine_field_the_run_did_not_record_is_said_so_not_printed_as_none(tmp_path):
    run = synthetic_run()
    del run["environment"]["cpu_model"]
    run["environment"]["kernel"] = None
    build_report(run, tmp_path)
    machine = next(line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("- machine:"))
    assert machine.startswith("- machine: (not recorded) × ") and "kernel (not recorded)," in machine
    handout = (tmp_path / "handout.md").read_text()
    assert "cores (unknown CPU), kernel ?," in handout and "None" not in handout.split("\n")[2]


@pytest.mark.parametrize("cpu_idle, words", [
    ({"driver": "haltpoll", "governor": "haltpoll", "guest_halt_poll_ns": 200000},
     "idle CPUs poll up to 200 µs before they halt (cpuidle driver haltpoll, governor haltpoll)"),
    ({"driver": "intel_idle", "governor": "menu", "guest_halt_poll_ns": None},
     "idle CPUs sleep as the cpuidle driver intel_idle, governor menu choose"),
    (None, None),  # a kernel that does not say, or a run from before the bench recorded it
])
def test_the_report_says_how_idle_cpus_slept_when_the_run_recorded_it(tmp_path, cpu_idle, words):
    run = synthetic_run()
    if cpu_idle is None:
        del run["environment"]["cpu_idle"]
    else:
        run["environment"]["cpu_idle"] = cpu_idle
    build_report(run, tmp_path)
    report, handout = (tmp_path / "report.md").read_text(), (tmp_path / "handout.md").read_text()
    if words is None:
        assert "idle CPUs" not in report and "(h) " not in handout
    else:
        assert f"- {words}" in report and f"(h) This machine's {words}." in handout


def test_a_tcp_only_run_says_its_protocols_left_the_udp_baselines_out(tmp_path):
    run = synthetic_run()
    run["scenarios"] = [s for s in run["scenarios"] if s["config"]["protocol"] == "tcp"]
    run["baselines"] = [b for b in run["baselines"] if b["test"] not in ("protocol-work-udp", "paired-hello-udp")]
    # As the bench records them for `--protocols tcp` (bench/cli.py, baseline_jobs).
    run["baselines"] += [protocol_work.measure("udp", protocols={"tcp"}), paired.measure("udp", protocols={"tcp"})]
    run["ratios"] = compute_ratios(run)
    build_report(run, tmp_path)
    handout = (tmp_path / "handout.md").read_text()
    assert "over UDP: not measured in this run (skipped: udp and udp-raw are not among this run's protocols)" in handout
    assert "with acks not measured in this run (skipped: udp is not among this run's protocols)" in handout
    assert "over TCP (2 turns" in handout  # the TCP turns are still there


def test_changing_an_input_value_changes_the_output(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    build_report(synthetic_run(hello_p50_us=123.4), first)
    build_report(synthetic_run(hello_p50_us=987.6), second)
    for name in ("report.md", "handout.md"):
        before, after = (first / name).read_text(), (second / name).read_text()
        assert "123.4" in before and "987.6" not in before
        assert "987.6" in after and "123.4" not in after
    # The hello ratio follows the input too.
    assert f"{987.6 / 15.5:.2f}x" in (second / "report.md").read_text()


def loopback_run_without_plain_udp() -> dict:
    """synthetic_run() cut down to loopback and the protocols with acks: nothing in it can lose."""
    run = synthetic_run()
    run["scenarios"] = [s for s in run["scenarios"] if s["config"]["link"] == "loopback"
                        and s["config"]["protocol"] != "udp-raw"]
    return run


def test_a_run_without_loss_or_emulation_says_what_it_did_not_measure(tmp_path):
    run = loopback_run_without_plain_udp()
    run["baselines"] = []
    run["environment"]["event_loop"] = "uvloop"
    run["ratios"] = compute_ratios(run)
    written = build_report(run, tmp_path)
    report, handout = (tmp_path / "report.md").read_text(), (tmp_path / "handout.md").read_text()
    assert tmp_path / "delivery.png" not in written and not (tmp_path / "delivery.png").exists()
    assert "## Chart: delivery\n\nDelivered and lost shares of sent, where messages could be lost.\n\n" \
           "Nothing to draw: no scenario that counted delivery could lose messages here (all ran on loopback, or on " \
           "KCP's simulated link, over a transport that sends again what is lost) and none lost or duplicated one; " \
           "the Delivery table above has the counts." in report
    assert "Baselines were skipped in this run." in report
    assert "This run had no emulated link" in handout
    # Measured into a folder of its own, and the handout built from it; this one stays as it is.
    assert "`make bench BENCH_ARGS=\"--link issue4\" RESULTS=results/lossy` (about 3 minutes), then\n`make report RESULTS=results/lossy`" in handout
    assert "sockperf TCP ping-pong, p50: not measured in this run (baselines were skipped)" in handout
    assert 'uvloop event loop. Measure the asyncio loop into a folder of its own' in handout  # question (d)
    assert ("Python echo server on the uvloop event loop, no protocol at all (`bench/python_floor.py`), p50: TCP not measured in this run "
            "(baselines were skipped); UDP not measured in this run (baselines were skipped)") in handout


def test_a_run_against_another_computer_gets_a_delivery_chart_even_without_loss(tmp_path):
    # A real network can lose what loopback cannot, so --server runs are charted like emulated links.
    run = loopback_run_without_plain_udp()
    assert not any(s.get("figures", {}).get("delivery", {}).get("lost") for s in run["scenarios"])
    run["ratios"] = compute_ratios(run)
    assert tmp_path / "a" / "delivery.png" not in build_report(copy.deepcopy(run), tmp_path / "a")
    for s in run["scenarios"]:
        s["config"]["link"] = "remote"
    assert tmp_path / "b" / "delivery.png" in build_report(run, tmp_path / "b")


def test_the_loop_question_measures_into_another_folder_than_the_run_it_was_built_from(tmp_path):
    # `make bench` alone writes results/latest: the run this handout was built from, usually.
    for loop, other in (("uvloop", "asyncio"), ("asyncio", "uvloop")):
        run = synthetic_run()
        run["environment"]["event_loop"] = loop
        build_report(run, tmp_path / loop)
        handout = (tmp_path / loop / "handout.md").read_text()
        bench = f'make bench BENCH_ARGS="--loop {other}" RESULTS=results/{other}'
        assert f"`{bench}`, then `make report RESULTS=results/{other}`." in handout
        assert "make bench BENCH_ARGS=\"--loop" not in handout.replace(bench, "")  # no other, overwriting, form
    # A --full run is compared with a --full run: the quick matrix has other counts and sizes.
    run = synthetic_run()
    run["command"] = ["python", "-m", "bench", "--full", "--out", "results/latest"]
    assert 'make bench-full BENCH_ARGS="--loop asyncio" RESULTS=results/asyncio' in handout_text(run)
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # The Makefile really sends both to that folder (make -n prints the commands, runs nothing).
    for target in (["bench", 'BENCH_ARGS=--loop uvloop'], ["report"]):
        # --no-print-directory: under `make test` this make is nested, and would end its
        # output with "make[1]: Leaving directory ..." instead of the command.
        done = subprocess.run(["make", "--no-print-directory", "-n", *target, "RESULTS=results/uvloop"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        command = done.stdout.strip().splitlines()[-1]
        assert command.endswith("-m bench --no-emulation --out 'results/uvloop' --loop uvloop" if target[0] == "bench"
                                else "-m reports 'results/uvloop'"), command


@pytest.mark.parametrize("folder", ["results/my run", "results/Bob's run", "results/a  b;c"])
def test_make_bench_and_report_take_a_results_folder_with_spaces_or_quotes_as_one_word(folder):
    """`--out $(RESULTS)` unquoted split 'results/my run' into --out results/my and a stray
    argument `run`, which the bench refused, so `make bench RESULTS="..."` could not be used."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for target, before in (("bench", "--out"), ("bench-full", "--out"), ("report", "reports")):
        done = subprocess.run(["make", "--no-print-directory", "-n", target, f"RESULTS={folder}"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        words = shlex.split(done.stdout.strip().splitlines()[-1])  # as the shell make runs it with splits it
        assert words[words.index(before) + 1] == folder, words


# Unmeasured ratios as results.json files hold them: older benches wrote the missing figure
# as None; a reason in words names what was not measured.
UNMEASURED_RATIOS = [
    {"name": "hello tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured in turns", "value": None,
     "target": 1.6, "better": "lower", "met": None, "detail": "not measured (baselines skipped, or sockperf missing)"},
    {"name": "throughput-raw tcp relay alice->bob 64 B (msg/s) / 50,000", "value": None, "target": 1.0,
     "better": "higher", "met": None, "detail": "None msg/s"},
    {"name": "KCP test: udp latency preset avg_rtt_ms / KCP fast mode avg_rtt_ms", "value": None, "target": 1.0,
     "better": "lower", "met": None, "detail": "udp preset not measured / None"},
    {"name": "KCP test: udp latency preset max_rtt_ms / KCP fast mode max_rtt_ms", "value": None, "target": 1.0,
     "better": "lower", "met": None, "detail": "udp preset not measured / 390.0"},
    {"name": "emulated {}: udp relay round-trip p99 / tcp relay round-trip p99", "value": None, "target": 1.0,
     "better": "lower", "met": None, "detail": ""},
    {"name": "throughput tcp relay alice->bob 64 B (msg/s) / 50,000", "value": 0.8642, "target": 1.0,
     "better": "higher", "met": False, "detail": "43210.0 msg/s"},
]


def test_an_unmeasured_ratio_says_why_not_and_never_shows_a_missing_figure(tmp_path):
    run = synthetic_run()
    run["ratios"] = copy.deepcopy(UNMEASURED_RATIOS)
    build_report(run, tmp_path)
    report, handout = (tmp_path / "report.md").read_text(), (tmp_path / "handout.md").read_text()
    table = report.split("## Targets, as ratios measured in this run")[1].split("\n## ")[0]
    part6 = handout.split("## 6.")[1].split("\n## ")[0]
    for shown in (table, part6):
        assert "None" not in shown, shown
        # Reasons in words are shown as they are; a None or no detail at all is said in words.
        assert "not measured (baselines skipped, or sockperf missing)" in shown
        assert "udp preset not measured / 390.0" in shown
        assert shown.count("a figure it needs was not measured in this run") == 3, shown
        assert "43210.0 msg/s" in shown  # a measured ratio keeps its figures
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "ratio (same run)" not in line}
    assert rows["throughput-raw tcp relay alice->bob 64 B (msg/s) / 50,000"] == [
        "-", "≥ 1.0x", "not measured",
        "a figure it needs was not measured in this run (see the scenarios not measured and the baselines)"]
    assert ("- throughput-raw tcp relay alice->bob 64 B (msg/s) / 50,000: **-** (target ≥ 1.0x), not measured "
            "[a figure it needs was not measured in this run (see the scenarios not measured and the baselines)]") in part6
    assert "- throughput tcp relay alice->bob 64 B (msg/s) / 50,000: **0.86x** (target ≥ 1.0x), NOT met [43210.0 msg/s]" in part6


def test_the_handout_sets_the_minimal_client_throughput_beside_the_library_one(tmp_path):
    run = synthetic_run()
    build_report(run, tmp_path / "a")
    assert "from two minimal sockets instead" not in (tmp_path / "a" / "handout.md").read_text()  # not measured: no line
    run["scenarios"].append(scenario(workload="throughput-raw", protocol="tcp", payload=64, count=4,
                                     figures_=figures(ONE_WAY, [40.0, 50.0, 60.0, 70.0], 4, range(4),
                                                      elapsed_s=0.0001, messages_per_s=65_432.0, goodput_MB_per_s=4.19)))
    run["ratios"] = compute_ratios(run)
    build_report(run, tmp_path / "b")
    handout = (tmp_path / "b" / "handout.md").read_text()
    assert "- tcp, 64 B, from two minimal sockets instead of the client library (`throughput-raw`): 65,432 msg/s" in handout
    assert "(c) `throughput-raw` drives the same" in handout


def test_a_plain_udp_throughput_says_how_many_arrived(tmp_path):
    run = synthetic_run()
    run["scenarios"].append(scenario(workload="throughput", protocol="udp-raw", payload=64, count=10,
                                     figures_=figures(ONE_WAY, [40.0] * 7, 10, range(7),
                                                      elapsed_s=0.0002, messages_per_s=35_000.0, goodput_MB_per_s=2.24)))
    build_report(run, tmp_path)
    handout = (tmp_path / "handout.md").read_text()
    # A rate of what arrived would read faster than it was without the share that did.
    assert "- udp-raw, alice → bob on loopback: 64 B: 35,000 msg/s, 2.24 MB/s (delivered 7 of 10)" in handout
    assert "- tcp, alice → bob on loopback: 64 B: 43,210 msg/s, 2.77 MB/s\n" in handout  # nothing lost: no note


def test_a_real_bench_csv_beside_the_json_does_not_matter_and_a_json_path_works(tmp_path):
    folder = write_run(tmp_path / "r", synthetic_run())
    assert main([str(folder / "results.json"), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists()


# --------------------------------------------------------------------- bad inputs


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path given to the CLI, a phrase the error message must contain)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"schema": "hellohi-bench/1", "scenarios": [')
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"schema": "hellohi-bench/0", "scenarios": []}))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text("[1, 2, 3]")
    mangled = tmp_path / "mangled"
    run = synthetic_run()
    del run["scenarios"][1]["config"]["workload"]
    write_run(mangled, run)
    return {
        "missing folder": (tmp_path / "nowhere", "does not exist, so there are no bench results to report; run the bench first: `make bench RESULTS="),
        "no results.json": (empty, "has no results.json; run the bench first: `make bench RESULTS="),
        "invalid JSON": (broken, "is not valid JSON"),
        "wrong schema": (other, "has schema 'hellohi-bench/0' but this report reads 'hellohi-bench/1'; run the bench"),
        "not a bench file": (foreign, "has no \"schema\" field, so it was not written by `python -m bench`"),
        "wrong shape": (mangled, "does not follow schema hellohi-bench/1: scenarios[1].config has no \"workload\""),
    }


def test_bad_inputs_exit_2_with_a_clear_message_and_no_traceback(tmp_path):
    for name, (path, phrase) in _bad_inputs(tmp_path).items():
        done = run_cli(str(path))
        assert done.returncode == 2, name
        assert done.stderr.startswith("error: "), (name, done.stderr)
        assert phrase in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr, name
        assert done.stdout == "", name


def test_library_raises_bad_results_for_each_bad_input(tmp_path):
    for name, (path, phrase) in _bad_inputs(tmp_path).items():
        with pytest.raises(BadResults) as caught:
            load_run(path)
        assert phrase in str(caught.value), name


def test_a_run_of_several_rounds_says_so_and_labels_each_baseline(tmp_path):
    run = synthetic_run()
    again = copy.deepcopy(run["baselines"][0])
    run["baselines"] = [dict(b, round=1) for b in run["baselines"]] + [dict(again, round=2)]
    run["rounds"] = 2
    run["ratios"] = compute_ratios(run)
    build_report(run, tmp_path)
    report, handout = (tmp_path / "report.md").read_text(), (tmp_path / "handout.md").read_text()
    assert "- rounds: 2 (`--rounds`): every scenario and baseline was measured 2 times" in report
    assert "| ping-pong-tcp (round 1) " in report and "| ping-pong-tcp (round 2) " in report
    assert "This run measured everything 2 times (`--rounds 2`). Each figure below is the median of" in handout
    assert "- sockperf TCP ping-pong, p50: 15.5 µs round trip (median of the 2 rounds: 15.5, 15.5 µs)" in handout
    # Round 2 has no hello scenario: its hello ratio is not measured, so the median is round 1's.
    hello = next(r for r in run["ratios"] if r["name"].startswith("hello tcp"))
    assert hello["per_round"] == [1.7, None]
    assert "measured in 1 of 2 rounds: 1.70x; met in 0 of 2" in handout


def test_every_wrongly_typed_figure_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    cases = {
        "scenarios[0].figures.latency.p50 is not a number": lambda r: r["scenarios"][0]["figures"]["latency"].update(p50="fast"),
        "scenarios[0].figures.delivery.sent is missing or not a whole number":
            lambda r: r["scenarios"][0]["figures"]["delivery"].pop("sent"),
        "\"scenarios\" is missing or not a list": lambda r: r.update(scenarios={}),
        "baselines[0] has no \"tool\", \"test\" and \"status\"": lambda r: r["baselines"][0].pop("tool"),
        "ratios[0].value is not a number": lambda r: r["ratios"][0].update(value="9x"),
        "baselines[3].figures.after_sleep has no p50": lambda r: r["baselines"][3]["figures"].update(after_sleep=None),
        "\"rounds\" is not a whole number of at least 1": lambda r: r.update(rounds="two"),
        "scenarios[5].figures.tcp_counters has a host without a whole-number RetransSegs":
            lambda r: r["scenarios"][5]["figures"]["tcp_counters"]["server"].pop("RetransSegs"),
        "scenarios[0].figures.udp_counters.retransmitted is missing or not a whole number":
            lambda r: r["scenarios"][0]["figures"].update(udp_counters={"retransmitted": "some"}),
    }
    base = synthetic_run()
    for i, (phrase, spoil) in enumerate(cases.items()):
        run = copy.deepcopy(base)
        spoil(run)
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(run))  # JSON only: the CSV writer needs a sound run
        assert main([str(folder)]) == 2, phrase
        err = capsys.readouterr().err
        assert phrase in err, (phrase, err)


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path, capsys):
    folder = write_run(tmp_path / "r", synthetic_run())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main([str(folder), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the report to {blocker / 'report'}") and "--out DIR" in err


def test_an_interrupted_run_says_so_at_the_top_of_the_report(tmp_path):
    run = synthetic_run()
    assert run["interrupted"] is False  # what the bench writes for a run that ended by itself
    folder = write_run(tmp_path / "whole", run)
    assert main([str(folder), "--out", str(tmp_path / "whole-report")]) == 0
    assert "**interrupted**" not in (tmp_path / "whole-report" / "report.md").read_text()
    assert run["stopped_by"] is None
    run["interrupted"], run["stopped_by"] = True, "Ctrl-C"
    run["baselines"] = []  # stopped before the first baseline had finished
    folder = write_run(tmp_path / "cut", run)
    assert main([str(folder), "--out", str(tmp_path / "cut-report")]) == 0
    report = (tmp_path / "cut-report" / "report.md").read_text()
    assert ("- **interrupted**: Ctrl-C stopped this run; only the scenarios and baselines that finished before it "
            "are here") in report
    assert "Ctrl-C stopped this run before any baseline finished, or they were skipped." in report
    handout = (tmp_path / "cut-report" / "handout.md").read_text()
    assert "**Ctrl-C stopped this run**: only what finished before it was measured." in handout
    assert "not measured in this run (baselines were skipped, or Ctrl-C stopped the run before them)" in handout
    assert "baselines were skipped)" not in handout  # no reason that leaves the interruption out
    assert "Every scenario of the matrix was measured." not in report
    assert ("Ctrl-C stopped this run: the scenarios it cut short or never reached are not in results.json, "
            "so they are not listed here either.") in report
    # A scenario the handout asks about, cut off by the Ctrl-C (so absent from results.json):
    run["scenarios"] = [s for s in run["scenarios"] if s["config"]["workload"] != "drain"]
    folder = write_run(tmp_path / "cut-earlier", run)
    assert main([str(folder), "--out", str(tmp_path / "cut-earlier-report")]) == 0
    handout = (tmp_path / "cut-earlier-report" / "handout.md").read_text()
    assert "not measured in this run (not in its scenario matrix, or Ctrl-C stopped the run before it)" in handout


@pytest.mark.parametrize("stopper, words", [("SIGTERM", "SIGTERM"), (None, "Ctrl-C or SIGTERM")])
def test_the_report_names_what_stopped_the_run(tmp_path, stopper, words):
    """`kill PID` stops a run as Ctrl-C does, and the report says which; results written
    before the bench recorded it (no "stopped_by") say it was one of the two."""
    run = synthetic_run()
    run["interrupted"], run["baselines"] = True, []
    if stopper is None:
        del run["stopped_by"]
    else:
        run["stopped_by"] = stopper
    folder = write_run(tmp_path / "cut", run)
    assert main([str(folder), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    handout = (tmp_path / "report" / "handout.md").read_text()
    assert f"- **interrupted**: {words} stopped this run; only the scenarios" in report
    assert f"{words} stopped this run before any baseline finished, or they were skipped." in report
    assert f"**{words} stopped this run**: only what finished before it was measured." in handout
    if stopper == "SIGTERM":
        assert "Ctrl-C stopped" not in report + handout


def test_every_protocol_the_bench_knows_has_its_own_colour_on_the_charts():
    from bench.matrix import ALL_PROTOCOLS
    from reports.charts import PROTOCOL_COLOURS

    assert set(ALL_PROTOCOLS) <= set(PROTOCOL_COLOURS)
    assert len(set(PROTOCOL_COLOURS.values())) == len(PROTOCOL_COLOURS)


def test_the_throughput_line_breaks_at_a_size_that_was_not_measured():
    """A failed size in the middle of the matrix is a gap in the line, not a straight stretch
    that looks measured; with --rounds each size is the median of its rounds."""
    def throughput(payload: int, rate: float | None, round_: int = 1) -> dict:
        if rate is None:
            return scenario(workload="throughput", protocol="udp", payload=payload, count=4, round=round_,
                            status="error", reason="the server died")
        return scenario(workload="throughput", protocol="udp", payload=payload, count=4, round=round_,
                        figures_=figures(ONE_WAY, [50.0] * 4, 4, range(4), elapsed_s=0.001,
                                         messages_per_s=rate, goodput_MB_per_s=rate / 1000))
    run = synthetic_run()
    run["scenarios"] = [throughput(64, 40_000.0), throughput(1024, None), throughput(16384, 9_000.0),
                        throughput(64, 44_000.0, round_=2), throughput(1024, None, round_=2),
                        throughput(16384, 5_000.0, round_=2)]
    [(key, points)] = charts.throughput_series(run).items()
    assert key == ("udp", "loopback")
    assert [p for p, _, _ in points] == [64, 1024, 16384]
    assert points[0][1:] == (42_000.0, 42.0) and points[2][1] == 7_000.0  # medians of two rounds
    assert math.isnan(points[1][1]) and math.isnan(points[1][2])
    # Nothing measured at all: no line (and no chart), rather than a line of gaps.
    run["scenarios"] = [throughput(64, None)]
    assert charts.throughput_series(run) == {}


def test_part_4_lists_every_protocol_measured_against_a_server_elsewhere():
    run = synthetic_run()
    run["scenarios"] = [
        scenario(workload="hello", protocol=protocol, count=3, link="remote",
                 figures_=figures(ROUND_TRIP, [300.0, 310.0, 320.0], 3, range(3)))
        for protocol in ("tcp", "udp-turbo")]
    for entry in run["scenarios"]:
        entry["server"] = {"remote": "198.18.2.2:5000"}
    text = handout_text(run)
    assert "A real network: against the server at 198.18.2.2:5000 (`--server`), from this computer:" in text
    assert "- TCP Hello/HI round trip: 3 of 3 delivered" in text
    assert "- UDP with ack/retry, turbo preset Hello/HI round trip: 3 of 3 delivered" in text


def _three_rounds_of(run: dict) -> dict:
    """`run` measured three times over (--rounds 3): round N's rates N times round 1's."""
    scenarios = []
    for number in (1, 2, 3):
        for entry in copy.deepcopy(run["scenarios"]):
            entry["config"]["round"] = number
            if number > 1:
                entry["id"] += f"-round{number}"
            figures_ = entry.get("figures") or {}
            for key in ("messages_per_s", "avg_rtt_ms"):
                if key in figures_:
                    figures_[key] *= number
            scenarios.append(entry)
    run["scenarios"], run["rounds"] = scenarios, 3
    run["baselines"] = [dict(b, round=1) for b in run["baselines"]]
    run["ratios"] = compute_ratios(run)
    return run


def test_with_rounds_the_handout_gives_one_throughput_per_size_the_median_of_the_rounds_that_measured_it():
    run = synthetic_run()
    run["scenarios"] += [
        scenario(workload="throughput", protocol="tcp", payload=1024, count=4, status="error", reason="server died"),
        scenario(workload="throughput", protocol="udp-raw", payload=65536, count=4, status="not_applicable",
                 reason="too big for one datagram")]
    run = _three_rounds_of(run)
    # Round 1 of tcp 1024 B failed, round 2 measured it.
    round2 = next(s for s in run["scenarios"] if s["id"].startswith("throughput-tcp-1024B") and s["config"]["round"] == 2)
    round2.update(status="ok", figures=figures(ONE_WAY, [50.0], 1, [0], messages_per_s=9_000.0,
                                               goodput_MB_per_s=9.2))
    del round2["reason"]
    text = handout_text(run)
    line = next(line for line in text.splitlines() if line.startswith("- tcp, alice → bob on loopback"))
    # The median of the rounds, as the throughput chart draws it, with each round's figure; a size only one
    # round measured says which. (Round 1's figure alone was quoted before, as if there were one round.)
    assert line == ("- tcp, alice → bob on loopback: 64 B: 86,420 msg/s, 2.77 MB/s (median of the 3 rounds: "
                    "43,210, 86,420, 129,630 msg/s); 1024 B: 9,000 msg/s, 9.20 MB/s (round 2 of 3 only, "
                    "rounds 1 and 3 did not measure it (error: server died))")
    [(_, points)] = [item for item in charts.throughput_series(run).items() if item[0][0] == "tcp"]
    assert [(payload, rate) for payload, rate, _ in points] == [(64, 86_420.0), (1024, 9_000.0)]
    # Round 1's hello failed, rounds 2 and 3 measured it: the line says which rounds its median is of.
    hello = [s for s in run["scenarios"] if s["config"]["workload"] == "hello" and s["config"]["protocol"] == "tcp"]
    hello[0].update(status="error", reason="server died")
    assert ("- hellohi Hello/HI over TCP (client library): p50 123.4 µs, p99 500.0 µs (round trip, 5 samples each; "
            "median of rounds 2 and 3 of 3, round 1 did not measure it (error: server died): p50 123.4, 123.4 µs, "
            "p99 500.0, 500.0 µs)") in handout_text(run)
    # A protocol no round measured keeps the bench's reason, once when every round gave the same.
    assert "- udp-raw: not measured in this run (not_applicable: too big for one datagram)" in text


def test_with_rounds_a_figure_no_round_measured_gives_each_rounds_reason_when_they_differ():
    """Round 1's reason alone was given, as if every round had failed the same way."""
    run = _three_rounds_of(synthetic_run())
    relays = [s for s in run["scenarios"] if s["config"]["workload"] == "relay" and s["config"]["protocol"] == "tcp"
              and s["config"].get("link", "loopback") == "loopback"]
    assert [s["config"]["round"] for s in relays] == [1, 2, 3]
    for entry, reason in zip(relays, ("server died", "worker timed out", "worker timed out")):
        entry.update(status="error", reason=reason)
        entry.pop("figures", None)
    assert ("- alice → server → bob → server → alice over TCP: not measured in this run "
            "(round 1: error: server died; rounds 2 and 3: error: worker timed out)") in handout_text(run)
    relays[0]["reason"] = "worker timed out"
    assert ("- alice → server → bob → server → alice over TCP: not measured in this run "
            "(error: worker timed out)") in handout_text(run)


def test_with_rounds_a_baseline_gives_each_rounds_reason_and_the_turns_each_rounds_cores():
    run = synthetic_run()
    paired_entry = next(b for b in run["baselines"] if b["test"] == "paired-hello-tcp")
    moved = copy.deepcopy(paired_entry)
    moved["config"]["cores"] = {"client": 2, "server": 3}  # the bench's affinity changed between rounds
    failed = dict(copy.deepcopy(paired_entry), status="error", reason="RuntimeError: sockperf died")
    del failed["figures"]
    run["baselines"] = ([dict(b, round=1) for b in run["baselines"]]
                        + [dict(moved, round=2), dict(failed, round=3)])
    run["rounds"] = 3
    run["ratios"] = compute_ratios(run)
    handout = handout_text(run)
    assert ("over TCP (2 turns per round, round 1: clients on core 0, servers on core 1; "
            "round 2: clients on core 2, servers on core 3): hello tcp ÷ sockperf = 1.70× "
            "(median of rounds 1 and 2 of 3, round 3 did not measure it (error: RuntimeError: sockperf died): "
            "1.70×, 1.70×)") in handout
    # Rounds pinned alike are named once, as before.
    moved["config"]["cores"] = {"client": 0, "server": 1}
    run["baselines"][-2] = dict(moved, round=2)
    assert "over TCP (2 turns per round, clients on core 0, servers on core 1): " in handout_text(run)


def test_a_size_of_the_matrix_that_was_not_measured_is_named_in_part_3():
    run = synthetic_run()
    run["scenarios"].append(scenario(workload="throughput", protocol="tcp", payload=65536, count=4,
                                     status="error", reason="server died"))
    text = handout_text(run)
    assert ("- tcp, alice → bob on loopback: 64 B: 43,210 msg/s, 2.77 MB/s; "
            "65536 B: not measured (error; why: report.md, \"Scenarios not measured\")") in text


def test_with_rounds_each_kcp_row_and_the_throughput_chart_say_which_round(tmp_path):
    run = _three_rounds_of(synthetic_run())
    build_report(run, tmp_path)
    report = (tmp_path / "report.md").read_text()
    for number, avg in ((1, "216.7"), (2, "433.4"), (3, "650.1")):
        assert f"| kcp-fast (round {number}) | {avg} " in report.replace("  ", " ").replace("  ", " ")
    assert "each point is the median of the rounds that measured it (of 3)." in report


def test_a_measured_rate_of_0_is_drawn_at_0_and_only_a_size_not_measured_is_a_gap(tmp_path, monkeypatch):
    """0 msg/s (nothing arrived in time) is a measurement; the chart must not draw it as the gap
    that means "not measured", which a log scale would do to any 0."""
    def throughput(payload: int, rate: float | None) -> dict:
        if rate is None:
            return scenario(workload="throughput", protocol="udp-raw", payload=payload, count=4,
                            status="error", reason="the server died")
        return scenario(workload="throughput", protocol="udp-raw", payload=payload, count=4,
                        figures_=figures(ONE_WAY, [50.0] * 4, 4, range(4), elapsed_s=0.001,
                                         messages_per_s=rate, goodput_MB_per_s=rate / 1000))
    run = synthetic_run()
    run["scenarios"] = [throughput(64, 40_000.0), throughput(1024, 0.0), throughput(4096, None),
                        throughput(16384, 9_000.0)]
    [points] = charts.throughput_series(run).values()
    assert points[1] == (1024, 0.0, 0.0)
    assert math.isnan(points[2][1]) and math.isnan(points[2][2])
    drawn = []
    monkeypatch.setattr(charts, "_save", lambda figure, path, room_below=0.0: drawn.append(figure) or path)
    charts.throughput_chart(run, tmp_path / "throughput.png")
    [figure] = drawn
    rate_axes, goodput_axes = figure.axes[:2]
    for axes in (rate_axes, goodput_axes):
        [line] = axes.get_lines()
        # Where each point lands on the canvas: 0 at a finite place on the axis, at its bottom.
        x, y = axes.transData.transform((1024, 0.0))
        assert math.isfinite(x) and math.isfinite(y), axes.get_yscale()
        assert axes.get_ylim()[0] == 0.0
        assert list(line.get_ydata())[1] == 0.0 and math.isnan(list(line.get_ydata())[2])
    charts.plt.close(figure)


def test_the_links_line_names_kcps_simulated_link_when_the_run_replayed_its_test(tmp_path):
    run = synthetic_run()  # relay over the issue's emulated link, and kcp-test on KCP's simulated one
    build_report(copy.deepcopy(run), tmp_path / "a")
    links = ("loopback, emulated: loss 5 %, delay 10 ms one way, "
             "simulated (KCP's test link, virtual time)")
    assert f"- links: {links}\n" in (tmp_path / "a" / "report.md").read_text()
    assert f"Links in this run: {links}.\n" in (tmp_path / "a" / "handout.md").read_text()
    run["scenarios"] = [s for s in run["scenarios"] if s["config"]["workload"] != "kcp-test"]
    build_report(run, tmp_path / "b")
    assert "simulated" not in (tmp_path / "b" / "report.md").read_text().split("- links: ")[1].splitlines()[0]
    assert "Links in this run: loopback, emulated: loss 5 %, delay 10 ms one way.\n" in (
        tmp_path / "b" / "handout.md").read_text()


def test_with_rounds_part_1_quotes_the_median_of_the_rounds_as_part_6_does():
    """Round 1's figures alone contradicted part 6, whose ratios are medians over the rounds."""
    run = _three_rounds_of(synthetic_run())
    hello_p50s = {1: 300.0, 2: 100.0, 3: 200.0}
    sockperf_p50s = {1: 20.0, 2: 10.0, 3: 25.0}
    for entry in run["scenarios"]:
        if (entry["config"]["workload"], entry["config"]["protocol"], entry["config"]["link"]) == ("hello", "tcp", "loopback"):
            entry["figures"] = figures(ROUND_TRIP, [hello_p50s[entry["config"]["round"]]] * 5, 5, range(5))
    sockperf = next(b for b in run["baselines"] if b["test"] == "ping-pong-tcp")
    run["baselines"] = [b for b in run["baselines"] if b["test"] != "ping-pong-tcp"] + [
        copy.deepcopy(dict(sockperf, round=n)) for n in (1, 2, 3)]
    for entry in run["baselines"]:
        if entry["test"] == "ping-pong-tcp":
            entry["figures"]["latency"]["p50"] = sockperf_p50s[entry["round"]]
    run["ratios"] = compute_ratios(run)
    text = handout_text(run)
    assert ("- hellohi Hello/HI over TCP (client library): p50 200.0 µs, p99 200.0 µs (round trip, 5 samples each; "
            "median of the 3 rounds: p50 300.0, 100.0, 200.0 µs, p99 300.0, 100.0, 200.0 µs)") in text
    assert "- sockperf TCP ping-pong, p50: 20.0 µs round trip (median of the 3 rounds: 20.0, 10.0, 25.0 µs)" in text
    apart = next(r for r in run["ratios"] if r["name"].startswith("hello tcp") and "measured apart" in r["name"])
    assert f"{apart['value']:.2f}" == "10.00"  # the median of 15, 10 and 8
    assert ("  - Hello/HI over TCP ÷ sockperf TCP: 10.00× (median of the 3 rounds: 300.0 ÷ 20.0 = 15.00×; "
            "100.0 ÷ 10.0 = 10.00×; 200.0 ÷ 25.0 = 8.00×)") in text
    assert f"**{apart['value']:.2f}x**" in text.split("## 6.")[1]


def test_part_4_quotes_every_figure_measured_across_the_emulated_link():
    """Hello/HI and throughput across the link were in results.json (bench/matrix.py, emulated_cells)
    but not in the handout, which quoted the relay only."""
    run = synthetic_run()
    across = {"link": "emulated", "link_config": ISSUE4_LINK}
    run["scenarios"] += [
        scenario(workload="hello", protocol="tcp", count=3, **across,
                 figures_=figures(ROUND_TRIP, [20_500.0, 21_000.0, 300_000.0], 3, range(3),
                                  tcp_counters={"client": {"OutSegs": 9, "RetransSegs": 1},
                                                "server": {"OutSegs": 9, "RetransSegs": 1}})),
        scenario(workload="hello", protocol="udp", count=3, status="error", reason="the server died", **across),
        scenario(workload="throughput", protocol="udp-raw", payload=64, count=10, **across,
                 figures_=figures(ONE_WAY, [10_000.0] * 7, 10, range(7), elapsed_s=0.01,
                                  messages_per_s=9_354.0, goodput_MB_per_s=0.6)),
        scenario(workload="throughput", protocol="udp", payload=64, count=10, **across,
                 figures_=figures(ONE_WAY, [10_000.0] * 10, 10, range(10), elapsed_s=0.01,
                                  messages_per_s=2_064.0, goodput_MB_per_s=0.13, udp_counters={"retransmitted": 4})),
    ]
    part4 = handout_text(run).split("## 4.")[1].split("\n## ")[0]
    assert ("- TCP Hello/HI round trip: 3 of 3 delivered, 0 lost, 0 duplicates, 0 reordered; the two hosts' kernels "
            "sent 2 TCP segments again; p50 21,000.0 µs, p99 300,000.0 µs (round trip, 3 samples)") in part4
    assert "- UDP with ack/retry Hello/HI round trip: not measured in this run (error: the server died)" in part4
    assert "- plain UDP, no acks Hello/HI round trip: not measured in this run (not in its scenario matrix)" in part4
    assert "- TCP relay round trip: 4 of 4 delivered, 0 lost, 0 duplicates, 0 reordered; the two hosts' kernels sent 5 TCP segments again; p50 " in part4
    assert "- plain UDP, no acks throughput, alice → bob: 64 B: 9,354 msg/s, 0.60 MB/s (delivered 7 of 10)" in part4
    assert "- UDP with ack/retry throughput, alice → bob: 64 B: 2,064 msg/s, 0.13 MB/s" in part4
    assert "- TCP throughput, alice → bob: not measured in this run (not in its scenario matrix)" in part4
    # Part 3 stays the loopback's (and a --server's): the link's rates are not mixed in there.
    assert "9,354" not in handout_text(run).split("## 3.")[1].split("\n## ")[0]


def test_the_turns_are_called_turns_in_part_6_even_from_a_run_that_called_them_blocks(tmp_path):
    """Part 1 and question 1(c) send the student to part 6's turns; older benches wrote 'blocks' there."""
    run = synthetic_run()
    turns = next(r for r in run["ratios"] if r["name"].endswith("measured in turns"))
    turns["detail"] = "median of 2 blocks; per block (us / us): 25.5 / 15.0, 27.2 / 16.0"
    build_report(run, tmp_path)
    for name in ("report.md", "handout.md"):
        text = (tmp_path / name).read_text()
        assert "median of 2 turns; per turn (µs / µs): 25.5 / 15.0, 27.2 / 16.0" in text, name
        assert "blocks" not in text and "per block" not in text, name  # ("blocking socket" stays)
