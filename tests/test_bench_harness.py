"""The bench harness end to end on loopback with a tiny matrix (seconds, no timing asserts).

These tests check that the harness runs the real server and client, that its books
balance and that it writes well-formed results; they never assert on speed.
"""

import asyncio
import csv
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import statistics

import pytest

from bench import baselines, cli, cores, matrix, paired, python_floor, ratios, results, runner, workloads
from bench.baselines import parse_sockperf
from bench.kcp_peer import KcpScenario, ShuffleBag, kcp_available, loss_implied_minimum, simulate_kcp, simulate_reliable
from bench.runner import add_retransmission_ratio, run_scenario
from tests.support import next_of, refusing_port, times_logged, wait_until
from tests.test_waiting import cancel_as_it_finishes
from bench.workloads import ID_WIDTH, MAX_ID, Scenario, Window, body_id, make_body
from hellohi.client_session import StatusChanged
from hellohi.launcher import REPO_ROOT


def _balanced(figures):
    """The delivery books of a scenario: sent = delivered + lost, where a duplicate is never
    counted as delivered (so delivered can never exceed sent, nor lost go negative)."""
    d = figures["delivery"]
    assert 0 <= d["delivered"] <= d["sent"] and d["lost"] >= 0
    assert d["sent"] == d["delivered"] + d["lost"]
    return d


@pytest.mark.parametrize("workload", ["hello", "hello-raw", "relay", "throughput", "throughput-raw", "fanin", "fanout", "drain"])
def test_each_workload_against_the_real_tcp_server(workload):
    sc = Scenario(workload, "tcp", count=30, warmup=2, clients=4, payload=64, timeout=5.0)
    result = run_scenario(sc)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = _balanced(result["figures"])
    assert d["delivered"] == d["sent"] == 30  # loopback TCP loses nothing; fan-out sends all 30 to 4 clients
    assert d["duplicates"] == 0
    assert d["reordered"] == 0  # nor reorders one sender's messages (fan-in's 4 senders interleave: no matter)
    if workload == "drain":  # the age of a backlog is no latency
        assert "latency" not in result["figures"]
    else:
        lat = result["figures"]["latency"]
        expected = "round_trip" if workload in ("hello", "hello-raw", "relay") else "one_way"
        assert lat["measure"] == expected and lat["count"] == 30
        assert lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    server = result["server"]
    assert server["peak_rss_bytes"] is None or server["peak_rss_bytes"] > 0
    assert "--store" in server["argv"]


def test_throughput_raw_is_tcp_only_and_says_so():
    result = run_scenario(Scenario("throughput-raw", "udp", count=5))
    assert result["status"] == "unavailable" and "TCP client only" in result["reason"]
    args = cli.build_parser().parse_args(["--workloads", "throughput-raw", "--protocols", "tcp,udp"])
    assert [(c["workload"], c["protocol"]) for c in matrix.flag_matrix(args)] == [("throughput-raw", "tcp")]


def test_throughput_raw_counts_a_refused_send_as_an_error_not_as_loss():
    # A server that stores nothing for bob (queue limit 1): the raw client must say why it stopped.
    from bench.throughput_raw import throughput_raw
    from hellohi.launcher import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server("tcp", ["--store", f"{tmp}/s.sqlite3", "--max-waiting", "1", "--window", "1"])
        try:
            with pytest.raises(ConnectionError, match="refused a SEND: ERR 429"):
                throughput_raw(server.host, server.port, 50, 64, 256, 2.0)
        finally:
            server.stop()


def test_throughput_raw_delivers_everything_again_to_a_server_that_saw_a_run_before():
    # A server on another computer (--server) outlives one bench run: a second run's SENDs
    # must not look like resends of the first run's, or the server never delivers them.
    from bench.throughput_raw import throughput_raw
    from hellohi.launcher import start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server("tcp", ["--store", f"{tmp}/s.sqlite3"])
        try:
            for _ in range(2):
                delivery = throughput_raw(server.host, server.port, 50, 64, 256, 2.0)[0]
                assert delivery["delivered"] == delivery["sent"] == 50 and delivery["lost"] == 0
        finally:
            server.stop()


def test_large_payload_throughput_figures():
    result = run_scenario(Scenario("throughput", "tcp", count=5, payload=65536))
    assert result["status"] == "ok", result.get("traceback")
    f = result["figures"]
    assert f["delivery"]["delivered"] == 5
    assert f["goodput_MB_per_s"] > 0 and f["messages_per_s"] > 0


def test_unavailable_protocol_is_reported_not_crashed(monkeypatch):
    monkeypatch.setitem(sys.modules, "udp.client", None)  # as if udp/ had no client
    result = run_scenario(Scenario("hello", "udp", count=3))
    assert result["status"] == "unavailable"
    assert "udp" in result["reason"]


def test_body_carries_the_id_even_in_the_smallest_payload():
    for message_id in (0, 2**32 + 5, MAX_ID):
        for size in (ID_WIDTH, 64, 65536):
            body = make_body(message_id, size)
            assert len(body) == size and body_id(body) == message_id


@pytest.mark.parametrize("body", [b"12", b"7 hello", b" 000000000000012", b"+000000000000012",
                                  b"0_00000000000012", b"\xd9\xa1" * 8, b""])
def test_a_body_that_does_not_start_with_16_digits_is_foreign_not_a_message_id(body):
    # int() reads b"12", b" 12", b"+12" and b"1_2" as numbers: a stranger's short "12"
    # would have been counted as the bench's message 12, delivered.
    assert body_id(body) is None


def test_a_body_too_small_for_the_id_or_an_id_too_large_is_refused_not_cut():
    with pytest.raises(ValueError, match="no room"):
        make_body(7, ID_WIDTH - 1)
    with pytest.raises(ValueError, match="does not fit"):
        make_body(MAX_ID + 1, 64)


def test_cli_tiny_matrix_writes_json_and_csv(tmp_path, capsys):
    code = cli.main(["--workloads", "hello,relay", "--protocols", "tcp", "--count", "10",
                     "--no-baselines", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "hello-tcp" in out.out and "targets (set in issue 4), as measured in this run:" in out.out
    assert "(ratios to sockperf move with both" in out.out  # the machine they were measured on
    assert "[" in out.err and "done" in out.err  # progress bar on stderr
    run = json.loads((tmp_path / "results.json").read_text())
    assert run["schema"] == results.SCHEMA
    env = run["environment"]
    for key in ("kernel", "python", "machine", "packages", "cpu_count", "cpu_idle"):
        assert key in env
    assert env["tcp_congestion_control"] == Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    assert [s["config"]["workload"] for s in run["scenarios"]] == ["hello", "relay"]
    assert all(s["config"]["seed"] == 1 for s in run["scenarios"])
    with (tmp_path / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    scenario_rows = [r for r in rows if r["kind"] == "scenario"]
    assert [r["config.workload"] for r in scenario_rows] == ["hello", "relay"]
    assert rows[0]["figures.latency.measure"] == "round_trip"
    # The targets too, one row each, as the console printed them.
    ratio_rows = [r for r in rows if r["kind"] == "ratio"]
    assert [r["name"] for r in ratio_rows] == [r["name"] for r in run["ratios"]] and ratio_rows
    assert all(r["id"] == r["name"] for r in ratio_rows)  # something to sort and filter by
    assert all(r["met"] == "" and r["detail"] for r in ratio_rows)  # --no-baselines: none judged, each says why
    # Each row carries the run's machine and start, so rows of two runs can be told apart.
    assert columns[:2] == ["kind", "id"] and columns[-1].startswith("environment.")
    for row in rows:
        assert row["environment.kernel"] == env["kernel"] and row["environment.python"] == env["python"]
        assert row["environment.cpu_count"] == str(env["cpu_count"])
        assert row["started_utc"] == run["started_utc"] and json.loads(row["command"]) == run["command"]
    for row in scenario_rows:
        assert row["config.link_config"] == "{}"  # an empty dict keeps its column


def test_the_table_prints_whole_ids_that_differ_only_at_their_end():
    # Two emulated links' ids share their first 40 characters; cut short, they read alike.
    run = results.new_run(["python", "-m", "bench"])
    for loss in ("0.05", "0.1"):
        scenario = workloads.Scenario("relay", "udp", count=300, link="emulated",
                                      link_config={"delay_ms": 10.0, "loss": float(loss)})
        run["scenarios"].append({"id": scenario.id, "config": scenario.as_dict(), "status": "skipped", "reason": "no root"})
    out = io.StringIO()
    cli.print_table(run, out)
    lines = out.getvalue().splitlines()
    ids = [s["id"] for s in run["scenarios"]]
    assert len(ids[0]) > 34 and ids[0][:34] == ids[1][:34]
    rows = [line for line in lines if line.startswith("relay-")]
    assert [row.split()[0] for row in rows] == ids
    assert {row.index("skipped") for row in rows} == {lines[0].index("status")}  # the columns stay aligned


def test_the_environment_says_how_idle_cpus_sleep(tmp_path):
    """Read from sysfs: a KVM guest's haltpoll setting, another machine's driver, or nothing."""
    def fake_sysfs(root: Path, files: dict[str, str]) -> Path:
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text + "\n")
        return root

    guest = fake_sysfs(tmp_path / "guest", {"devices/system/cpu/cpuidle/current_driver": "haltpoll",
                                            "devices/system/cpu/cpuidle/current_governor": "haltpoll",
                                            "module/haltpoll/parameters/guest_halt_poll_ns": "0"})
    assert results.cpu_idle(guest) == {"driver": "haltpoll", "governor": "haltpoll", "guest_halt_poll_ns": 0}
    older_kernel = fake_sysfs(tmp_path / "older", {"devices/system/cpu/cpuidle/current_driver": "intel_idle",
                                                   "devices/system/cpu/cpuidle/current_governor_ro": "menu"})
    assert results.cpu_idle(older_kernel) == {"driver": "intel_idle", "governor": "menu", "guest_halt_poll_ns": None}
    assert results.cpu_idle(tmp_path / "nothing") is None


def test_the_targets_are_printed_under_the_machine_they_were_measured_on():
    guest = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2,
             "cpu_idle": {"driver": "haltpoll", "governor": "haltpoll", "guest_halt_poll_ns": 0}}
    out = io.StringIO()
    ratios.print_ratios([], guest, out=out)
    assert out.getvalue().splitlines()[2:] == [
        "  on Intel(R) Xeon(R) Processor, 2 CPUs; idle CPUs: cpuidle driver haltpoll, guest halt-polling 0 ns "
        "(ratios to sockperf move with both: docs/bench.md, \"Idle CPUs\")"]
    laptop = {"cpu_model": None, "cpu_count": 8, "cpu_idle": {"driver": "intel_idle", "governor": "menu",
                                                              "guest_halt_poll_ns": None}}
    assert ratios.machine_line(laptop).startswith("an unnamed processor, 8 CPUs; idle CPUs: cpuidle driver intel_idle (")
    assert "idle CPUs: not recorded" in ratios.machine_line({"cpu_model": "M1", "cpu_count": 8, "cpu_idle": None})


def test_config_file_matrix(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[defaults]\ncount = 5\nseed = 7\n[matrix]\nworkloads = ["hello"]\n'
                   'protocols = ["tcp"]\npayloads = [16, 64]\n')
    cells = matrix.load_config(str(cfg))
    scenarios = matrix.to_scenarios(cells, seed=1, window=None)
    assert [(s.payload, s.count, s.seed) for s in scenarios] == [(16, 5, 7), (64, 5, 7)]


def test_ratios_use_measured_values_only():
    run = {"scenarios": [{"config": {"workload": "hello", "protocol": "tcp", "payload": 64},
                          "status": "ok", "figures": {"latency": {"p50": 150.0}}}],
           "baselines": [{"test": "ping-pong-tcp", "status": "ok",
                          "figures": {"latency": {"p50": 100.0}}}]}
    by_name = {r["name"]: r for r in ratios.compute_ratios(run)}
    apart = by_name["hello tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured apart (information)"]
    assert apart["value"] == 1.5 and apart["target"] is None and apart["met"] is None
    # The target is judged on bench/paired.py's turns, which this run does not have.
    in_turns = by_name["hello tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured in turns"]
    assert in_turns["value"] is None and in_turns["met"] is None and in_turns["target"] == 1.6
    udp = by_name["hello udp round-trip p50 / sockperf udp ping-pong round-trip p50, measured in turns"]
    assert udp["value"] is None and udp["met"] is None
    assert not any(r["name"].startswith("hello udp") and "apart" in r["name"] for r in by_name.values())


def paired_baseline(blocks: list[dict], number: int = 1) -> dict:
    """A bench/paired.py result: each block's p50s (us), and the median ratio to sockperf per client."""
    labels = [key for key in blocks[0] if key != "sockperf"]
    medians = {label: statistics.median(row[label] / row["sockperf"] for row in blocks) for label in labels}
    return {"tool": "hellohi-paired", "test": "paired-hello-tcp", "status": "ok", "round": number,
            "config": {"protocol": "tcp", "cores": {"client": 0, "server": 1}},
            "figures": {"blocks": blocks, "ratio_median": medians}}


def test_the_hello_target_is_judged_on_the_turns_with_sockperf():
    blocks = [{"sockperf": 50.0, "hello tcp": 90.0, "hello-raw tcp": 60.0},
              {"sockperf": 60.0, "hello tcp": 90.0, "hello-raw tcp": 120.0},  # a slow block for hello-raw
              {"sockperf": 55.0, "hello tcp": 77.0, "hello-raw tcp": 66.0}]
    run = {"scenarios": [], "baselines": [paired_baseline(blocks)]}
    by_name = {r["name"]: r for r in ratios.compute_ratios(run)}
    library = by_name["hello tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured in turns"]
    assert library["value"] == pytest.approx(1.5) and library["met"] is True  # ratios 1.8, 1.5, 1.4: the median
    raw = by_name["hello-raw tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured in turns"]
    assert raw["value"] == pytest.approx(1.2) and raw["met"] is True  # 1.2, 2.0, 1.2: one slow block does not decide
    assert raw["detail"] == "median of 3 turns; per turn (us / us): 60.0 / 50.0, 120.0 / 60.0, 66.0 / 55.0"
    blocks = [dict(row, **{"hello tcp": row["sockperf"] * 1.7}) for row in blocks]
    slow = {r["name"]: r for r in ratios.compute_ratios({"scenarios": [], "baselines": [paired_baseline(blocks)]})}
    assert slow[library["name"]]["met"] is False


def test_parse_sockperf_output():
    text = ("sockperf: \x1b[2;35m====> avg-rtt=66.521 (std-dev=17.246)\x1b[0m\n"
            "sockperf: \x1b[2;35mTotal 8270 observations\x1b[0m; each percentile contains 82.70 observations\n"
            "sockperf: ---> <MAX> observation = 1036.207\n"
            "sockperf: ---> percentile 99.900 =  163.752\n"
            "sockperf: ---> percentile 99.000 =  117.243\n"
            "sockperf: ---> percentile 90.000 =   80.269\n"
            "sockperf: ---> percentile 50.000 =   64.645\n"
            "sockperf: ---> <MIN> observation =   19.278\n")
    lat = parse_sockperf(text)
    assert lat == {"measure": "round_trip", "unit": "us", "count": 8270, "min": 19.278, "mean": 66.521,
                   "p50": 64.645, "p90": 80.269, "p99": 117.243, "p99_9": 163.752, "max": 1036.207}


def test_shuffle_bag_loss_is_exact_per_hundred():
    import random
    bag = ShuffleBag(100, random.Random(3))
    draws = [bag.draw() for _ in range(300)]
    assert sum(d < 5 for d in draws) == 15  # exactly 5 % of every 100


@pytest.mark.skipif(kcp_available() is not None, reason="kcp package not installed")
def test_kcp_test_replay_is_deterministic_and_balanced():
    sc = KcpScenario(echoes=100, seed=5)
    a, b = simulate_kcp("fast", sc), simulate_kcp("fast", sc)
    assert a == b  # same seed, same virtual clock: packet for packet the same run
    d = _balanced(a)
    # The 100 measured echoes all come back (KCP is reliable); what the client sent after
    # them, as test.cpp does, is still in flight and counted apart, not as lost.
    assert d["sent"] == d["delivered"] == 100 and d["lost"] == 0
    assert a["sent_after_the_measured"] > 0 and a["datagrams_dropped"] > 0
    assert a["latency"]["measure"] == "round_trip"


@pytest.mark.skipif(kcp_available() is not None, reason="kcp package not installed")
def test_kcp_pingpong_over_real_udp():
    result = run_scenario(Scenario("kcp-pingpong", "kcp-fast", count=20, warmup=2))
    assert result["status"] == "ok", result.get("traceback")
    assert result["figures"]["delivery"]["delivered"] == 20


# --------------------------------------------------------------------- the UDP side


UDP_COUNTERS = ("packets_sent", "retransmitted", "duplicates_dropped", "out_of_order_buffered", "srtt_ms", "rto_ms")


@pytest.mark.parametrize("workload", ["hello", "relay", "throughput", "fanin", "fanout", "drain"])
@pytest.mark.parametrize("protocol", ["udp", "udp-turbo"])
def test_each_workload_against_the_real_udp_server(workload, protocol):
    sc = Scenario(workload, protocol, count=30, warmup=2, clients=3, payload=64, timeout=5.0)
    result = run_scenario(sc)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = _balanced(result["figures"])
    assert d["delivered"] == d["sent"] == 30 and d["duplicates"] == 0  # acks and retries: nothing lost
    counters = result["figures"]["udp_counters"]
    for key in UDP_COUNTERS:
        assert key in counters
    assert counters["packets_sent"] > 0 and counters["retransmitted"] >= 0
    assert all(v is None or v > 0 for v in counters["rto_ms"].values())
    if protocol == "udp-turbo":
        assert "turbo" in result["server"]["argv"]


@pytest.mark.parametrize("protocol", ["udp", "udp-turbo", "udp-raw"])
def test_hello_raw_over_udp_uses_the_real_datagram_layer(protocol):
    result = run_scenario(Scenario("hello-raw", protocol, count=40, warmup=2, timeout=5.0))
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    figures = result["figures"]
    assert figures["latency"]["measure"] == "round_trip" and figures["latency"]["count"] == 40
    d = _balanced(figures)
    assert d["sent"] == 40 and d["duplicates"] == 0
    if protocol == "udp-raw":
        assert "udp_counters" not in figures
    else:
        assert d["delivered"] == 40
        # Registration, warm-up and measured Hellos: one reliable message each.
        assert figures["udp_counters"]["messages_sent"] >= 1 + 2 + 40


@pytest.mark.parametrize("workload", ["hello", "relay", "throughput", "fanout", "drain"])
def test_plain_udp_runs_and_its_books_balance(workload):
    # Plain UDP may lose on loopback (socket buffers); the books must balance anyway,
    # and a lost message costs at most PLAIN_LOSS_WAIT, not the full timeout.
    sc = Scenario(workload, "udp-raw", count=30, warmup=2, clients=3, payload=64, timeout=30.0)
    result = run_scenario(sc)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = _balanced(result["figures"])
    assert d["sent"] == 30 and d["duplicates"] == 0
    assert "udp_counters" not in result["figures"]  # no reliability layer, no counters
    # A message waited for the whole timeout would alone take 30 s: none did (the run takes about 1).
    assert result["wall_s"] < sc.timeout


def test_plain_udp_with_a_body_too_big_for_one_datagram_is_not_applicable():
    result = run_scenario(Scenario("throughput", "udp-raw", count=5, payload=65536))
    assert result["status"] == "not_applicable"
    assert result["reason"].startswith("not applicable: plain UDP carries one frame per datagram")
    assert "figures" not in result
    # ...while the reliable mode splits it into fragments and delivers it.
    result = run_scenario(Scenario("throughput", "udp", count=3, payload=65536))
    assert result["status"] == "ok", result.get("traceback")
    assert result["figures"]["delivery"]["delivered"] == 3


def test_plain_udp_frame_limit_counts_the_scenarios_own_client_names(monkeypatch):
    """The check used bench-alice and bench-bob; fan-in's bench-src100 and --server's suffix
    (bench-alice-1a2b3c4d) make longer frames, so a body a few bytes under the limit was run, and
    every frame refused by the kernel (EMSGSIZE) would have read as 100 % loss."""
    ran = []

    async def runs(endpoint, sc):
        ran.append((sc.workload, sc.payload))
        return {}
    for workload in ("throughput", "fanin"):
        monkeypatch.setitem(runner.RUNNERS, workload, runs)
    fits_alice_and_bob = 65462  # the largest body whose SEND and MSG fit one datagram with those names
    elsewhere = ("127.0.0.1", 9)  # --server: no server started here; the fake workload reaches nothing
    for sc, remote in ((Scenario("fanin", "udp-raw", count=5, payload=fits_alice_and_bob, clients=101), None),
                       (Scenario("throughput", "udp-raw", count=5, payload=fits_alice_and_bob - 8), elsewhere)):
        result = run_scenario(sc, remote=remote)
        assert result["status"] == "not_applicable", (sc.id, result)
        assert "more than the 65,507 bytes one UDP datagram can carry" in result["reason"]
    assert ran == []
    # One byte less fits with the suffix, and runs.
    assert run_scenario(Scenario("throughput", "udp-raw", count=5, payload=fits_alice_and_bob - 9),
                        remote=elsewhere)["status"] == "ok"
    assert ran == [("throughput", fits_alice_and_bob - 9)]


def test_window_lets_a_plain_sender_past_losses():
    from bench.stats import DeliveryLedger
    from bench.workloads import _settled

    ledger = DeliveryLedger()
    for _ in range(10):
        ledger.next_id()
    ledger.arrived(0)
    ledger.arrived(7)  # 1..6 lost (or still coming): overtaken by 7
    assert _settled([ledger], plain=False) == 2
    assert _settled([ledger], plain=True) == 8


def test_a_server_that_does_not_start_is_an_error_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    real = runner.server_program

    def broken_udp(protocol):
        package, extra = real(protocol)
        if protocol == "udp":
            extra = [*extra, "--no-such-flag"]  # argparse refuses it: the server exits at once
        return package, extra

    monkeypatch.setattr(runner, "server_program", broken_udp)
    code = cli.main(["--workloads", "hello", "--protocols", "udp,tcp", "--count", "5",
                     "--no-baselines", "--out", str(tmp_path)])
    assert code == 1  # a scenario failed
    run = json.loads((tmp_path / "results.json").read_text())
    by_protocol = {s["config"]["protocol"]: s for s in run["scenarios"]}
    assert by_protocol["udp"]["status"] == "error"
    assert "did not start (exit status 2) and printed nothing; its stderr ends: " in by_protocol["udp"]["reason"]
    assert "no-such-flag" in by_protocol["udp"]["reason"]
    assert by_protocol["tcp"]["status"] == "ok"  # the next scenario still ran
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["status"] for r in rows if r["kind"] == "scenario"] == ["error", "ok"]


def test_cli_runs_tcp_udp_and_udp_raw_end_to_end(tmp_path, capsys):
    code = cli.main(["--workloads", "relay,throughput", "--protocols", "tcp,udp,udp-raw", "--count", "20",
                     "--payloads", "64,65536", "--no-baselines", "--out", str(tmp_path)])
    assert code == 0
    run = json.loads((tmp_path / "results.json").read_text())
    status = {s["id"]: s["status"] for s in run["scenarios"]}
    assert status["throughput-udp-raw-65536B-n20"] == "not_applicable"
    assert status["relay-udp-raw-64B-n20"] == "ok" and status["throughput-udp-65536B-n20"] == "ok"
    for s in run["scenarios"]:
        if s["status"] == "ok":
            _balanced(s["figures"])
            assert ("udp_counters" in s["figures"]) == (s["config"]["protocol"] == "udp")
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    udp_row = next(r for r in rows if r["id"] == "relay-udp-64B-n20")
    assert int(udp_row["figures.udp_counters.packets_sent"]) > 0
    assert udp_row["figures.udp_counters.retransmitted"] != ""
    # Per client, one JSON cell: not a column per client name.
    assert set(json.loads(udp_row["figures.udp_counters.srtt_ms"])) == {"bench-alice", "bench-bob"}
    assert not any(column.startswith(("figures.udp_counters.srtt_ms.", "figures.udp_counters.rto_ms.")) for column in udp_row)


def test_retransmission_ratio_formula():
    assert loss_implied_minimum(950, 0.05) == pytest.approx(50.0)
    figures = {"udp_counters": {"packets_sent": 950, "retransmitted": 60}}
    add_retransmission_ratio(figures, 0.05)
    assert figures["loss_implied_min_retransmissions"] == pytest.approx(50.0)
    assert figures["retransmission_ratio"] == pytest.approx(1.2)
    clean = {"udp_counters": {"packets_sent": 950, "retransmitted": 0}}
    add_retransmission_ratio(clean, 0.0)  # no loss: no minimum, no ratio
    assert "retransmission_ratio" not in clean


def test_retransmission_ratio_uses_the_loss_the_link_really_caused():
    # 5 % configured, but this run's random drops took 6 % of what entered the link:
    # the minimum is what 6 % implies, so a sender is not judged by the link's luck.
    up = {"nft_seen": 2000, "nft_dropped": 120, "fwd_seen": 1880, "fwd_dropped": 0}
    figures = {"udp_counters": {"packets_sent": 940, "retransmitted": 66}}
    add_retransmission_ratio(figures, 0.05, up)
    assert figures["loss_share"] == {"configured": 0.05, "measured": pytest.approx(0.06)}
    assert figures["loss_implied_min_retransmissions"] == pytest.approx(60.0)
    assert figures["retransmission_ratio"] == pytest.approx(1.1)
    # Loss in the seeded forwarder instead of nftables counts just the same.
    by_forwarder = {"udp_counters": {"packets_sent": 940, "retransmitted": 66}}
    add_retransmission_ratio(by_forwarder, 0.05, {"nft_seen": 2000, "nft_dropped": 0, "fwd_seen": 2000, "fwd_dropped": 120})
    assert by_forwarder["retransmission_ratio"] == pytest.approx(1.1)
    # A link that saw nothing gives no share: the configured one stands in.
    unseen = {"udp_counters": {"packets_sent": 950, "retransmitted": 60}}
    add_retransmission_ratio(unseen, 0.05, {"nft_seen": 0, "nft_dropped": 0})
    assert unseen["loss_share"]["measured"] is None and unseen["retransmission_ratio"] == pytest.approx(1.2)


@pytest.mark.parametrize("configured, up", [(1.0, None), (0.5, {"nft_seen": 40, "nft_dropped": 40})])
def test_a_link_that_dropped_everything_has_no_loss_implied_minimum(configured, up):
    """--link loss=1 (a cable pulled), or a small scenario whose every packet the link happened to
    drop: no number of retransmissions is enough, so there is no minimum and no ratio. It raised
    ValueError, and the scenario's measured figures were thrown away as an error."""
    figures = {"udp_counters": {"packets_sent": 40, "retransmitted": 300}}
    add_retransmission_ratio(figures, configured, up)
    assert figures["loss_implied_min_retransmissions"] is None and figures["retransmission_ratio"] is None
    assert figures["loss_share"]["configured"] == configured


def test_ratios_read_the_udp_figures():
    link = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}

    def scenario(workload, protocol, figures, **config):
        return {"config": dict({"workload": workload, "protocol": protocol, "payload": 64}, **config),
                "status": "ok", "figures": figures}

    relay = {"latency": {"p99": 100.0}, "delivery": {"sent": 10, "delivered": 10, "duplicates": 0}}
    run = {"baselines": [], "scenarios": [
        scenario("relay", "tcp", relay, link="emulated", link_config=link),
        scenario("relay", "udp", dict(relay, retransmission_ratio=1.1, loss_implied_min_retransmissions=60.0,
                                      udp_counters={"retransmitted": 66},
                                      loss_share={"configured": 0.05, "measured": 0.06}),
                 link="emulated", link_config=link),
        scenario("kcp-test", "kcp-fast", {"avg_rtt_ms": 140.0, "max_rtt_ms": 400.0}, payload=8),
        scenario("kcp-test", "udp-turbo", {"avg_rtt_ms": 70.0, "max_rtt_ms": 600.0}, payload=8),
    ]}
    by_name = {r["name"]: r for r in ratios.compute_ratios(run)}
    retrans = next(r for name, r in by_name.items() if "loss-implied minimum" in name)
    assert retrans["value"] == 1.1 and retrans["met"] is True
    assert retrans["detail"] == "66 retransmitted / 60.0 at the 6.00% the link dropped client -> server (5% configured)"
    assert by_name["KCP test: udp latency preset avg_rtt_ms / KCP fast mode avg_rtt_ms"]["value"] == 0.5
    assert by_name["KCP test: udp latency preset max_rtt_ms / KCP fast mode max_rtt_ms"]["met"] is False
    exactly_once = next(r for name, r in by_name.items() if "exactly once" in name)
    assert exactly_once["value"] == 1.0 and exactly_once["met"] is True

    # Every message arrived, but one of them twice: not exactly once.
    twice = dict(run["scenarios"][1], figures=dict(run["scenarios"][1]["figures"],
                                                     delivery={"sent": 10, "delivered": 10, "duplicates": 1}))
    run["scenarios"][1] = twice
    exactly_once = next(r for r in ratios.compute_ratios(run) if "exactly once" in r["name"])
    assert exactly_once["value"] == 0.9 and exactly_once["met"] is False
    assert exactly_once["detail"] == "10/10 delivered, 1 duplicates"


def test_baselines_run_hellohi_only_over_the_protocols_of_the_run():
    """--protocols tcp measures no UDP client beside sockperf; what it left out is recorded
    as skipped, with the reason, and the UDP targets repeat it."""
    every = ["sockperf tcp", "sockperf udp", "iperf3 tcp", "python echo tcp", "python echo udp",
             "python stop-and-wait udp", "protocol work udp", "protocol work udp-raw", "hello beside sockperf tcp",
             "hello beside sockperf udp"]
    assert [name for name, _ in cli.baseline_jobs(1.0, {"tcp"})] == every
    jobs = dict(cli.baseline_jobs(1.0, {"tcp"}))
    skipped = [jobs[name]() for name in ("protocol work udp", "protocol work udp-raw", "hello beside sockperf udp")]
    assert [(b["test"], b["status"], b["reason"]) for b in skipped] == [
        ("protocol-work-udp", "skipped", "udp is not among this run's protocols"),
        ("protocol-work-udp-raw", "skipped", "udp-raw is not among this run's protocols"),
        ("paired-hello-udp", "skipped", "udp and udp-raw are not among this run's protocols")]
    turns = dict(cli.baseline_jobs(1.0, {"udp-raw", "tcp"}))["hello beside sockperf udp"]
    assert turns.keywords == {"protocols": {"udp-raw", "tcp"}}  # only the clients over plain UDP are measured
    assert paired.clients_of("udp", {"udp-raw", "tcp"}) == [("hello", "udp-raw"), ("hello-raw", "udp-raw")]

    run = {"baselines": skipped, "scenarios": [{"config": {"workload": "hello", "protocol": "tcp", "payload": 64},
                                                "status": "ok", "figures": {"latency": {"p50": 80.0}}}]}
    details = {r["name"].split(" round-trip")[0]: r["detail"] for r in ratios.compute_ratios(run)
               if "measured in turns" in r["name"]}
    assert details["hello udp"] == "not measured (udp is not among this run's protocols)"
    assert details["hello-raw udp-raw"] == "not measured (udp-raw is not among this run's protocols)"
    assert details["hello tcp"] == "not measured (baselines skipped)"


def test_kcp_test_replays_udp_turbo_on_the_same_seeded_link():
    sc = KcpScenario(echoes=100, seed=5)
    a, b = simulate_reliable("turbo", sc), simulate_reliable("turbo", sc)
    assert a == b  # seeded link, virtual clock: the same run packet for packet
    d = _balanced(a)
    # The 100 measured echoes all come back (KCP is reliable); what the client sent after
    # them, as test.cpp does, is still in flight and counted apart, not as lost.
    assert d["sent"] == d["delivered"] == 100 and d["lost"] == 0
    assert a["sent_after_the_measured"] > 0 and a["datagrams_dropped"] > 0
    assert a["udp_counters"]["retransmitted"] > 0 and a["retransmission_ratio"] > 0
    assert a["messages_failed"] == 0


def test_kcp_test_matrix_has_udp_turbo_beside_kcp_fast():
    cells = matrix.default_matrix(full=False)
    kcp_test = {c["protocol"]: c for c in cells if c["workload"] == "kcp-test"}
    assert {"kcp-fast", "kcp-normal", "udp-turbo"} <= set(kcp_test)
    assert {c["payload"] for c in kcp_test.values()} == {8} and {c["count"] for c in kcp_test.values()} == {1000}
    args = cli.build_parser().parse_args(["--workloads", "kcp-test", "--protocols", "kcp-fast,udp-turbo"])
    assert [(c["protocol"], c["payload"]) for c in matrix.flag_matrix(args)] == [("kcp-fast", 8), ("udp-turbo", 8)]
    result = run_scenario(Scenario("kcp-test", "udp-turbo", count=50, payload=8))
    assert result["status"] == "ok", result.get("traceback")
    assert result["config"]["kcp_scenario"]["loss_round_trip_percent"] == 10


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_python_floor_echo_is_a_measured_round_trip(protocol):
    from bench.python_floor import echo_pingpong

    result = echo_pingpong(protocol, seconds=0.3)
    assert result["status"] == "ok", result.get("reason")
    latency = result["figures"]["latency"]
    assert latency["measure"] == "round_trip" and latency["count"] > 10
    assert 0 < latency["min"] <= latency["p50"] <= latency["max"]


def test_python_floor_ratio_is_information_next_to_sockperf():
    def baseline(test, p50):
        return {"test": test, "status": "ok", "figures": {"latency": {"p50": p50}}}

    floor = dict(baseline("python-echo-tcp", 50.0), config={"event_loop": "uvloop"})
    run = {"scenarios": [], "baselines": [baseline("ping-pong-tcp", 20.0), floor]}
    ratio = next(r for r in ratios.compute_ratios(run) if r["name"].startswith("python echo (uvloop) tcp"))
    assert ratio["value"] == 2.5 and ratio["target"] is None and ratio["met"] is None
    run["baselines"] += [baseline("ping-pong-udp", 40.0), dict(baseline("python-stop-and-wait-udp", 50.0),
                                                               config={"event_loop": "asyncio"})]
    ratio = next(r for r in ratios.compute_ratios(run) if r["name"].startswith("python stop-and-wait (asyncio) udp"))
    assert ratio["value"] == 1.25 and ratio["target"] is None and ratio["met"] is None


def test_python_stop_and_wait_is_a_measured_round_trip():
    from bench.python_floor import stop_and_wait_pingpong

    result = stop_and_wait_pingpong(seconds=0.3)
    assert result["status"] == "ok", result.get("reason")
    assert result["test"] == "python-stop-and-wait-udp" and result["config"]["protocol"] == "udp"
    latency = result["figures"]["latency"]
    assert latency["measure"] == "round_trip" and latency["count"] > 10
    assert isinstance(result["figures"]["retransmissions"], int)


class _Transport:
    def __init__(self):
        self.sent = []

    def sendto(self, data, address):
        self.sent.append((data, address))


def test_the_stop_and_wait_server_answers_a_repeated_hello_again_without_doing_it_twice():
    from bench.python_floor import ANSWER, _UdpStopAndWait

    server, transport = _UdpStopAndWait(), _Transport()
    server.connection_made(transport)
    alice, bob = ("127.0.0.1", 1), ("127.0.0.1", 2)
    server.datagram_received(b"\0\0\0\1Hello\n", alice)
    server.datagram_received(b"\0\0\0\1Hello\n", alice)  # the answer was lost: alice sends it again
    server.datagram_received(b"\0\0\0\1Hello\n", bob)  # numbers are per client
    server.datagram_received(b"\0\0\0\2Hello\n", alice)
    assert transport.sent == [(b"\0\0\0\1" + ANSWER, alice)] * 2 + [(b"\0\0\0\1" + ANSWER, bob),
                                                                    (b"\0\0\0\2" + ANSWER, alice)]
    assert server.answered == 3


class _LossySocket:
    """recv() gives these answers in turn; None stands for a timeout (nothing came)."""

    def __init__(self, answers):
        self.answers, self.sent = list(answers), []

    def send(self, data):
        self.sent.append(data)

    def recv(self, size):
        answer = self.answers.pop(0)
        if answer is None:
            raise socket.timeout
        return answer


def test_the_stop_and_wait_client_sends_again_after_silence_and_drops_late_answers():
    from bench.python_floor import _StopAndWaitClient

    first, second = b"\0\0\0\1Hello\n", b"\0\0\0\2Hello\n"
    sock = _LossySocket([None, b"\0\0\0\1HI", b"\0\0\0\1HI", b"\0\0\0\2HI"])
    client = _StopAndWaitClient(sock)
    client.hello()  # the first answer did not come in time: sent twice
    client.hello()  # the late answer to the first copy of Hello 1 comes first: dropped
    assert sock.sent == [first, first, second] and client.retransmissions == 1
    assert sock.answers == []  # Hello 2 ended with its own answer, not with the late one


def test_the_stop_and_wait_client_gives_up_after_max_tries():
    from bench.python_floor import MAX_TRIES, _StopAndWaitClient

    sock = _LossySocket([None] * MAX_TRIES)
    with pytest.raises(TimeoutError, match=f"no answer to Hello #1 after {MAX_TRIES} sends"):
        _StopAndWaitClient(sock).hello()
    assert len(sock.sent) == MAX_TRIES


@pytest.mark.parametrize("protocol", ["udp", "udp-raw"])
def test_protocol_work_times_real_hello_hi_round_trips_without_sockets(protocol):
    from bench.protocol_work import measure

    result = measure(protocol, round_trips=40, sleep=0.0001)
    assert result["status"] == "ok", result.get("reason")
    assert result["config"]["sleep_us"] == 100 and result["config"]["round_trips"] == 40
    for timing in ("warm", "after_sleep"):
        latency = result["figures"][timing]
        assert latency["measure"] == "round_trip" and latency["count"] == 40
        assert 0 < latency["min"] <= latency["p50"] <= latency["max"]


def test_protocol_work_reports_hellos_left_unanswered(monkeypatch):
    from bench import protocol_work

    answers = iter([True] + [True, False] * 1000)  # the first Hello is answered, then every other one
    monkeypatch.setattr(protocol_work._Pair, "round_trip", lambda self, hello: next(answers))
    monkeypatch.setattr(protocol_work, "WARMUP", 0)
    result = protocol_work.measure("udp", round_trips=10, sleep=0.0)
    assert result["status"] == "error" and result["reason"] == "only 10 of 20 Hellos were answered with HI"


def test_protocol_work_ratio_is_information():
    work = {"test": "protocol-work-udp", "status": "ok", "config": {"sleep_us": 50.0},
            "figures": {"warm": {"p50": 30.0}, "after_sleep": {"p50": 75.0}}}
    ratio = next(r for r in ratios.compute_ratios({"scenarios": [], "baselines": [work]})
                 if r["name"].startswith("udp protocol work"))
    assert ratio["value"] == 2.5 and ratio["target"] is None and ratio["met"] is None
    assert ratio["name"] == ("udp protocol work per Hello/HI, no sockets, p50 after a 50 us sleep / back to back "
                             "(information)")


# --------------------------------------------------------------------- rounds


def test_a_scenario_measured_again_names_its_round():
    assert Scenario("hello", "tcp", count=5).id == "hello-tcp-64B-n5"
    assert Scenario("hello", "tcp", count=5, round=3).id == "hello-tcp-64B-n5-round3"


def _hello_round(number: int, hello_p50: float | None, sockperf_p50: float) -> tuple[list, list]:
    scenarios = []
    baselines = [{"test": "ping-pong-tcp", "status": "ok", "round": number, "figures": {"latency": {"p50": sockperf_p50}}}]
    if hello_p50 is not None:
        scenarios.append({"id": "x", "status": "ok", "config": {"workload": "hello-raw", "protocol": "tcp", "round": number},
                          "figures": {"latency": {"p50": hello_p50}}})
        baselines.append(paired_baseline([{"sockperf": sockperf_p50, "hello-raw tcp": hello_p50}], number))
    return scenarios, baselines


def test_ratios_over_rounds_are_each_rounds_ratio_then_the_median():
    run = {"rounds": 4, "scenarios": [], "baselines": []}
    # Round 4 lost its hello-raw figure: the median is of the three rounds that measured it.
    for number, hello, sockperf in ((1, 90.0, 60.0), (2, 200.0, 60.0), (3, 60.0, 50.0), (4, None, 55.0)):
        scenarios, baselines = _hello_round(number, hello, sockperf)
        run["scenarios"] += scenarios
        run["baselines"] += baselines
    ratio = next(r for r in ratios.compute_ratios(run) if r["name"].startswith("hello-raw tcp") and "in turns" in r["name"])
    assert ratio["per_round"] == [1.5, 200.0 / 60.0, 1.2, None]
    assert ratio["value"] == 1.5 and ratio["met"] is True and ratio["met_rounds"] == 2
    assert ratio["detail"] == "median of 3 rounds: 1.50x, 3.33x, 1.20x; met in 2 of 4"
    never = next(r for r in ratios.compute_ratios(run) if r["name"].startswith("hello tcp") and "in turns" in r["name"])
    assert never["value"] is None and never["met"] is None
    assert never["detail"] == "not measured (baselines skipped), in each of 4 rounds"  # the one reason, once
    for entry in run["baselines"]:  # a different reason in round 2
        if entry["test"] == "paired-hello-tcp" and entry["round"] == 2:
            entry.update(status="skipped", reason="tcp is not among this run's protocols")
    never = next(r for r in ratios.compute_ratios(run) if r["name"].startswith("hello tcp") and "in turns" in r["name"])
    assert never["detail"] == "not measured in any of 4 rounds"


def test_cli_rounds_measure_the_matrix_again_and_say_which_round(tmp_path, capsys):
    code = cli.main(["--workloads", "hello-raw", "--protocols", "tcp", "--count", "10", "--rounds", "2",
                     "--no-baselines", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "round 2/2: hello-raw-tcp-64B-n10-round2" in out.err
    assert "(the median of each ratio over 2 rounds)" in out.out
    assert "round 1 of 2:\nhello-raw-tcp-64B-n10 " in out.out and "round 2 of 2:\nhello-raw-tcp-64B-n10-round2 " in out.out
    run = json.loads((tmp_path / "results.json").read_text())
    assert run["rounds"] == 2
    assert [(s["id"], s["config"]["round"], s["status"]) for s in run["scenarios"]] == [
        ("hello-raw-tcp-64B-n10", 1, "ok"), ("hello-raw-tcp-64B-n10-round2", 2, "ok")]
    ratio = next(r for r in run["ratios"] if r["name"].startswith("hello-raw tcp"))
    assert ratio["per_round"] == [None, None]  # no sockperf: --no-baselines


def test_cli_rounds_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--rounds", "0", "--list"])
    assert stop.value.code == 2
    assert "--rounds: '0' is not a whole number of at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--payloads", "15", "--workloads", "relay"], "--payloads 15: relay takes payloads from 16 to 65536 bytes"),
    (["--payloads", "70000", "--workloads", "throughput"], "--payloads 70000: throughput takes payloads from 16 to 65536"),
    (["--payloads", "7", "--workloads", "kcp-test", "--protocols", "kcp-fast"], "kcp-test takes payloads from 8 to"),
    (["--seed", "-1"], "--seed: '-1' is not a whole number of at least 0"),
    (["--link", "seed=1.5"], "'seed=1.5': '1.5' is not a whole number"),
    (["--link", "issue5"], "'issue5' is not FIELD=VALUE (e.g. loss=0.05,delay_ms=10), nor issue4"),
    (["--server", "127.0.0.1:5000", "--link", "issue4"], "--server measures a server on another computer and --link"),
    (["--server", "127.0.0.1:99999"], "'127.0.0.1:99999': port 99999 is not from 1 to 65535"),
    (["--server", "localhost"], "'localhost' is not HOST:PORT, e.g. 127.0.0.1:5000"),
    (["--payloads", "0"], "--payloads: '0' is not a whole number of at least 1"),
    (["--count", "0"], "--count: '0' is not a whole number of at least 1"),
    (["--window", "-1"], "--window: '-1' is not a whole number of at least 1"),
    (["--clients", "0"], "--clients: '0' is not a whole number of at least 1"),
    # 1000 receivers and their sender would be 1001 clients, one more than the server takes.
    (["--clients", "1000", "--workloads", "fanout"], "clients must be a whole number from 1 to 999, got 1000"),
    (["--baseline-seconds", "nan"], "--baseline-seconds: 'nan' is not a number of seconds above 0"),
    (["--workloads", "hello,bogus"], "'bogus' is not a workload; choose from hello,"),
    (["--protocols", "tcp,quic"], "'quic' is not a protocol; choose from tcp,"),
    (["--workloads", "throughput-raw", "--protocols", "udp"], "no scenario to run"),
    (["--link", "loss=2"], "--link: LinkSpec.loss is a share between 0.0 and 1.0, got 2.0"),
    (["--link", "foo=1"], "'foo' is not a link field; the fields are loss,"),
    (["--link", "rate_mbit=0.000001"], "--link: LinkSpec.rate_mbit must be from 0.001 (1 kbit/s) to 100000"),
    (["--link", "rate_mbit=1e12"], "--link: LinkSpec.rate_mbit must be from 0.001 (1 kbit/s) to 100000"),
    (["--link", "seed=-1"], "--link: LinkSpec.seed must be a whole number >= 0, got -1"),
    (["--link", "loss=0.1,loss=0.2"], "loss is given twice in 'loss=0.1,loss=0.2'; give each field once"),
])
def test_cli_refuses_a_bad_matrix_with_one_line_that_names_it(argv, message, capsys):
    try:
        code = cli.main([*argv, "--list"])
    except SystemExit as stop:  # argparse: usage, then the error
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ('[defaults]\nsede = 3\n[matrix]\nworkloads = ["hello"]\n', "[defaults]: unknown field 'sede'; the fields are"),
    ('[defaults]\ncount = 0\n[matrix]\nworkloads = ["hello"]\n',
     "scenario 1 (its fields include [defaults]): count must be a whole number of at least 1, got 0"),
    ('[[scenario]]\nprotocol = "tcp"\n', "scenario 1 has no workload; add one"),
    ('[matrix]\nworkloads = "hello"\n', "[matrix] workloads must be a non-empty list"),
    ('[matrix]\nworkload = ["relay"]\n', "[matrix] has no field 'workload'"),
    ('[defaults]\ncount = "many"\n[matrix]\nworkloads = ["hello"]\n', "count must be a whole number of at least 1, got 'many'"),
    ('[defaults]\ncount = 5\n', "describes no scenario"),
    ('[matrix\n', "is not valid TOML"),
    ('[[scenario]]\nworkload = "relay"\nlink = "emulated"\nlink_config = {loss = 5}\n', "LinkSpec.loss is a share"),
    ('[[scenario]]\nworkload = "relay"\nlink = "emulated"\nlink_config = {loss = "x"}\n',
     "link field loss must be a number, got 'x'"),
    # TOML and JSON both have nan and inf; nan once ended up in results.json, which is then not JSON
    ('[[scenario]]\nworkload = "relay"\nlink = "emulated"\nlink_config = {delay_ms = nan}\n',
     "LinkSpec.delay_ms must be a finite number, got nan"),
    ('[[scenario]]\nworkload = "relay"\nlink = "emulated"\nlink_config = {jitter_ms = inf}\n',
     "LinkSpec.jitter_ms must be a finite number, got inf"),
    # on loopback the impairment would be ignored without a word
    ('[[scenario]]\nworkload = "relay"\nlink_config = {loss = 0.1}\n',
     'scenario 1: link_config only applies to an emulated link; add link = "emulated"'),
    ('[defaults]\nlink_config = {loss = 0.1}\n[matrix]\nworkloads = ["hello"]\n',
     'scenario 1 (its fields include [defaults]): link_config only applies to an emulated link; add link = "emulated"'),
    ('[[scenario]]\nworkload = "relay"\nlink = "emulated"\nlink_config = {seed = -1}\n',
     "LinkSpec.seed must be a whole number >= 0, got -1"),
    # Pairs that cannot run are refused as the same flags are, not run as "unavailable".
    ('[[scenario]]\nworkload = "hello"\nprotocol = "kcp-fast"\n', "kcp-fast runs only kcp-test and kcp-pingpong"),
    ('[[scenario]]\nworkload = "kcp-test"\nprotocol = "udp-raw"\n', "kcp-test needs a kcp-* protocol (or udp,"),
    ('[[scenario]]\nworkload = "throughput-raw"\nprotocol = "udp-raw"\n', "throughput-raw runs over tcp only"),
    ('[[scenario]]\nworkload = "kcp-pingpong"\nprotocol = "udp"\n', "kcp-pingpong needs a kcp-* protocol"),
    ('[[scenario]]\nworkload = "hello"\npayload = "big"\n', "payload must be a whole number from 1 to 65536"),
    ('[[scenario]]\nworkload = "hello"\n[[scenarios]]\nworkload = "relay"\n', "has both [[scenario]] and [[scenarios]]"),
    ('[matrix]\nworkloads = ["throughput-raw"]\nprotocols = ["udp"]\n',
     "no workload in [matrix] can run over its protocols: throughput-raw runs over tcp only"),
    # --rounds sets it: a file's round was silently replaced by 1
    ('[[scenario]]\nworkload = "hello"\nround = 2\n', "scenario 1: round is not set in a file; measure the matrix again with --rounds N"),
    # two rows of one id in results.csv and the report, which nobody could tell apart
    ('[[scenario]]\nworkload = "hello"\nwindow = 8\n[[scenario]]\nworkload = "hello"\nwindow = 16\n',
     "scenarios 1 and 2 would both be 'hello-tcp-64B-n1000': the id names workload, protocol, payload, count"),
])
def test_a_config_file_with_a_mistake_gets_one_line_that_names_it(text, message, tmp_path, capsys):
    config = tmp_path / "matrix.toml"
    config.write_text(text)
    assert cli.main(["--config", str(config), "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --config ") and message in err and "Traceback" not in err


def test_a_config_file_that_is_not_utf8_gets_one_line_that_says_so(tmp_path, capsys):
    config = tmp_path / "matrix.toml"
    config.write_text('[[scenario]]\nworkload = "hello"\n', encoding="utf-16")  # as some editors save it
    assert cli.main(["--config", str(config), "--list"]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text; save it as UTF-8" in err and "Traceback" not in err


def test_a_config_file_asking_for_emulated_hosts_is_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    config = tmp_path / "matrix.toml"
    config.write_text('[[scenario]]\nworkload = "hello"\n[[scenario]]\nworkload = "hello"\nlink = "emulated"\n')
    monkeypatch.setattr(cli, "emulation_problem", lambda: "emulated hosts need root")
    assert cli.main(["--config", str(config), "--no-baselines", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert 'has scenarios with link = "emulated", which cannot run here: emulated hosts need root' in err
    assert "hello-tcp" not in err  # refused before the loopback scenario ran
    assert not (tmp_path / "out").exists()


def _listed_ids(capsys, *argv: str) -> list[str]:
    """The scenario ids `python -m bench ARGV --list` prints, in order."""
    assert cli.main([*argv, "--list"]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()]


def test_protocols_alone_cut_the_default_matrix_down_to_them(capsys, monkeypatch):
    listed = partial(_listed_ids, capsys)
    monkeypatch.setattr(cli, "emulation_problem", lambda: None)  # as root: the issue-4 link is added too
    everything = listed()
    assert listed("--protocols", "tcp") == [name for name in everything if "-tcp-" in name]
    assert any("-emulated" in name for name in listed("--protocols", "tcp"))
    assert {name.split("-64B")[0].split("-8B")[0] for name in listed("--protocols", "udp-turbo,kcp-fast")
            if name.startswith("kcp-")} == {"kcp-pingpong-kcp-fast", "kcp-test-kcp-fast", "kcp-test-udp-turbo"}
    assert {name.split("-64B")[0] for name in listed("--protocols", "kcp-fast") if "-emulated" in name} == {
        "kcp-pingpong-kcp-fast"}


def test_a_matrix_of_flags_runs_the_three_default_protocols_and_udp_turbo_only_when_named(capsys):
    # What --help says of --protocols: the default matrix adds udp-turbo; --workloads does not.
    listed = partial(_listed_ids, capsys, "--no-emulation")
    assert "hello-udp-turbo-64B-n1000" in listed()
    assert listed("--workloads", "hello") == ["hello-tcp-64B-n1000", "hello-udp-64B-n1000", "hello-udp-raw-64B-n1000"]
    assert "hello-udp-turbo-64B-n1000" in listed("--workloads", "hello", "--protocols", "udp,udp-turbo")
    assert "with no --workloads, --payloads or --clients, adds udp-turbo for hello" in " ".join(cli.build_parser().format_help().split())


def test_two_links_apart_only_in_reorder_ms_without_reorder_are_refused_as_the_same_link(capsys, monkeypatch):
    """The id leaves reorder_ms out when nothing is reordered; the refusal said to give one of the
    scenarios another count or payload, which is not what sets them apart."""
    monkeypatch.setattr(cli, "emulation_problem", lambda: None)
    assert cli.main(["--workloads", "hello", "--protocols", "tcp", "--count", "3", "--link", "loss=0.05,reorder_ms=5",
                     "--link", "loss=0.05,reorder_ms=10", "--list"]) == 2
    err = capsys.readouterr().err
    assert ("would both be 'hello-tcp-64B-n3-emulated-loss0.05': their links (loss=0.05,reorder_ms=5.0 and "
            "loss=0.05,reorder_ms=10.0) differ only in reorder_ms, how long a reordered packet is held back, which does "
            "nothing without reorder above 0: they are the same link; give it once, or add reorder=SHARE") in err
    assert "count or payload" not in err and err.count("\n") == 1


@pytest.mark.parametrize("one, other", [("loss=0.05", "loss=0.050000001"), ("seed=1234567", "seed=1234568"),
                                        ("rate_mbit=12.3456789", "rate_mbit=12.3456788")])
def test_two_links_the_ids_old_six_digits_could_not_tell_apart_get_ids_of_their_own(one, other, capsys, monkeypatch):
    # {:g} wrote both as loss0.05, seed1.23457e+06: one id for two links, refused as if they were one.
    monkeypatch.setattr(cli, "emulation_problem", lambda: None)
    ids = [name for name in _listed_ids(capsys, "--workloads", "hello", "--protocols", "tcp", "--link", one,
                                        "--link", other) if "-emulated" in name]
    assert ids == [f"hello-tcp-64B-n1000-emulated-{one.replace('=', '')}",
                   f"hello-tcp-64B-n1000-emulated-{other.replace('=', '')}"]


def test_a_name_given_twice_in_a_flag_runs_once(capsys):
    assert cli.main(["--workloads", "hello,hello", "--protocols", "tcp,tcp", "--list"]) == 0
    assert capsys.readouterr().out.count("hello-tcp-64B") == 1


def test_a_config_file_that_cannot_be_read_or_is_not_an_object(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "missing.toml"), "--list"]) == 2
    assert "cannot read --config" in capsys.readouterr().err
    listed = tmp_path / "matrix.json"
    listed.write_text("[1, 2]")
    assert cli.main(["--config", str(listed), "--list"]) == 2
    assert "the top level must be a table (TOML) or an object (JSON)" in capsys.readouterr().err


def test_flags_that_would_be_ignored_beside_a_config_file_are_refused(tmp_path, capsys):
    config = tmp_path / "matrix.toml"
    config.write_text('[matrix]\nworkloads = ["hello"]\n')
    assert cli.main(["--config", str(config), "--count", "3", "--list"]) == 2
    assert "so --count cannot be added to it; put it in the file's [defaults]" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "--full", "--list"]) == 2  # --full has no place in a file
    assert "so --full cannot be added to it; run the file's matrix without --full, or --full without --config" in capsys.readouterr().err
    # --full with another flag: still told --full has no place in the file (it was told to put it there)
    assert cli.main(["--config", str(config), "--full", "--count", "3", "--list"]) == 2
    assert "so --full cannot be added to it; run the file's matrix without --full" in capsys.readouterr().err


def test_a_scenario_asked_for_twice_runs_once(tmp_path, capsys, monkeypatch):
    # A file mixing loopback and emulated scenarios, run with --link naming the file's own link:
    # --link carries both of the file's hello scenarios across that link, one copy each, and
    # the matrix was refused as "two scenarios of one id". A number or a link given twice too.
    monkeypatch.setattr(cli, "emulation_problem", lambda: None)
    config = tmp_path / "matrix.toml"
    config.write_text('[[scenario]]\nworkload = "hello"\n[[scenario]]\nworkload = "hello"\nlink = "emulated"\n'
                      'link_config = {loss = 0.05, delay_ms = 10}\n')
    assert _listed_ids(capsys, "--config", str(config), "--link", "issue4") == [
        "hello-tcp-64B-n1000", "hello-tcp-64B-n1000-emulated-delay_ms10-loss0.05"]
    assert _listed_ids(capsys, "--config", str(config), "--link", "loss=0.1") == [
        "hello-tcp-64B-n1000", "hello-tcp-64B-n1000-emulated-delay_ms10-loss0.05", "hello-tcp-64B-n1000-emulated-loss0.1"]
    assert _listed_ids(capsys, "--workloads", "hello", "--protocols", "tcp", "--payloads", "64,64") == ["hello-tcp-64B-n1000"]
    once = _listed_ids(capsys, "--link", "issue4")
    assert _listed_ids(capsys, "--link", "issue4", "--link", "issue4") == once
    # Two that differ in what the id leaves out are still refused.
    config.write_text('[[scenario]]\nworkload = "hello"\n[[scenario]]\nworkload = "hello"\nwarmup = 5\n')
    assert cli.main(["--config", str(config), "--list"]) == 2
    assert "scenarios 1 and 2 would both be 'hello-tcp-64B-n1000'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["NaN", "Infinity", "-Infinity"])
def test_a_figure_json_cannot_hold_is_refused_by_the_writer_naming_it(tmp_path, bad):
    """The report refuses NaN and Infinity in results.json; json.dumps wrote them without a word,
    so a run could end with a file nobody could report on."""
    run = {"schema": results.SCHEMA, "environment": {}, "baselines": [], "ratios": [],
           "scenarios": [{"id": "hello-tcp-64B-n10", "status": "ok", "figures": {"latency": {"p50": 12.5, "p99": bad}}}]}
    with pytest.raises(results.NotAJsonNumber) as raised:
        results.write(run, tmp_path)
    assert f"scenario hello-tcp-64B-n10: figures.latency.p99 = {bad}" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # neither file written, so an older results.json is kept
    run["scenarios"][0]["figures"]["latency"]["p99"] = 30.0
    run["ratios"] = [{"name": "hello tcp / sockperf", "value": bad}]
    with pytest.raises(results.NotAJsonNumber, match=r"ratio hello tcp / sockperf: value = "):
        results.write(run, tmp_path)
    run["ratios"] = []
    assert results.write(run, tmp_path)[0].is_file()


def test_the_bench_says_which_figure_it_could_not_write_in_one_line(tmp_path, capsys, monkeypatch):
    def a_round_measuring_nan(run, number, *args, **kwargs):
        run["scenarios"].append({"id": "relay-tcp-64B-n3", "config": {"workload": "relay", "protocol": "tcp"},
                                 "status": "ok", "figures": {"messages_per_s": math.nan}})
    monkeypatch.setattr(cli, "run_round", a_round_measuring_nan)
    code = cli.main(["--workloads", "relay", "--protocols", "tcp", "--count", "3", "--no-baselines",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "error: not writing results: scenario relay-tcp-64B-n3: figures.messages_per_s = nan" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_empty_out_name_or_a_directory_in_the_way_is_refused_before_the_run(tmp_path, capsys):
    assert cli.main(["--workloads", "hello", "--protocols", "tcp", "--count", "3", "--no-baselines", "--out", ""]) == 2
    assert "cannot write results to --out : the name is empty" in capsys.readouterr().err
    (tmp_path / "results.json").mkdir()
    assert cli.main(["--workloads", "hello", "--protocols", "tcp", "--count", "3", "--no-baselines",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results.json there is a directory" in err and "hello-tcp" not in err


def _bench_interrupted(tmp_path, config: str, progress: str, interrupt, *args: str):
    """`python -m bench --config` in a process group of its own, as a terminal runs a job; once a
    progress line holds `progress`, interrupt(bench). Returns (bench, stdout, stderr)."""
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(config)
    bench = subprocess.Popen([sys.executable, "-m", "bench", "--config", str(matrix), "--no-baselines", *args],
                             cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in bench.stderr:  # one progress line per step (stderr is not a terminal)
            if progress in line:
                break
        interrupt(bench)
        stdout, stderr = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
    return bench, stdout, stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="looks for leftover processes in /proc")
def test_ctrl_c_stops_the_run_keeps_what_finished_and_leaves_no_server(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group: the bench and its servers."""
    def ctrl_c(bench):
        _wait_for_hellos_in_server_log(bench.pid, b"udp.server", 1)  # the second scenario's thread is running
        os.killpg(bench.pid, signal.SIGINT)

    out = tmp_path / "out"
    # A short scenario, then one that would take hours: it is the one interrupted.
    bench, stdout, stderr = _bench_interrupted(
        tmp_path, '[[scenario]]\nworkload = "hello-raw"\nprotocol = "tcp"\ncount = 20\n'
                  '[[scenario]]\nworkload = "hello-raw"\nprotocol = "udp-raw"\ncount = 100000000\n',
        "1/2", ctrl_c, "--out", str(out))
    assert bench.returncode == 130
    assert f"interrupted (Ctrl-C): 1 of 2 steps finished; what they measured is below and in {out}\n" in stderr
    assert "Traceback" not in stderr
    assert "not measured (baselines skipped, or Ctrl-C before them)" in stdout
    assert "hello-raw-tcp-64B-n20 " in stdout
    run = json.loads((out / "results.json").read_text())
    assert run["interrupted"] is True and run["stopped_by"] == "Ctrl-C"
    assert [s["id"] for s in run["scenarios"]] == ["hello-raw-tcp-64B-n20"]
    assert run["scenarios"][0]["figures"]["delivery"]["delivered"] == 20
    assert _processes_in_group(bench.pid) == [], "a server of the bench outlived it"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="looks for leftover processes in /proc")
def test_sigint_to_the_bench_alone_stops_a_bulk_transfer_from_its_thread(tmp_path):
    """kill -INT of the bench's pid only: its server is still there, so the thread would go on for ever."""
    def sigint_to_the_bench(bench):
        # "0/1" came as its server was starting; once alice and bob have said Hello, the transfer is under way.
        _wait_for_hellos_in_server_log(bench.pid, b"tcp.server", 2)
        bench.send_signal(signal.SIGINT)

    bench, stdout, stderr = _bench_interrupted(
        tmp_path, '[[scenario]]\nworkload = "throughput-raw"\nprotocol = "tcp"\ncount = 100000000\n',
        "0/1", sigint_to_the_bench)
    assert bench.returncode == 130 and "Traceback" not in stderr
    assert "interrupted (Ctrl-C): 0 of 1 steps finished; what they measured is below\n" in stderr  # no --out to name
    assert _processes_in_group(bench.pid) == [], "its server outlived the bench"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="looks for leftover processes in /proc")
def test_sigterm_stops_the_run_like_ctrl_c_and_leaves_no_server(tmp_path):
    """`kill PID` (SIGTERM) of the bench alone: by default it would die on the spot, its server orphaned."""
    def sigterm_to_the_bench(bench):
        _wait_for_hellos_in_server_log(bench.pid, b"udp.server", 1)  # the second scenario's thread is running
        bench.send_signal(signal.SIGTERM)

    out = tmp_path / "out"
    bench, stdout, stderr = _bench_interrupted(
        tmp_path, '[[scenario]]\nworkload = "hello-raw"\nprotocol = "tcp"\ncount = 20\n'
                  '[[scenario]]\nworkload = "hello-raw"\nprotocol = "udp-raw"\ncount = 100000000\n',
        "1/2", sigterm_to_the_bench, "--out", str(out))
    assert bench.returncode == 143 and "Traceback" not in stderr
    assert f"interrupted (SIGTERM): 1 of 2 steps finished; what they measured is below and in {out}\n" in stderr
    run = json.loads((out / "results.json").read_text())
    assert run["interrupted"] is True and [s["id"] for s in run["scenarios"]] == ["hello-raw-tcp-64B-n20"]
    assert run["stopped_by"] == "SIGTERM"
    assert "not measured (baselines skipped, or SIGTERM before them)" in stdout
    assert _processes_in_group(bench.pid) == [], "its server outlived the bench"


def _wait_for_hellos_in_server_log(group: int, program: bytes, hellos: int) -> None:
    """Until the server `program` the bench started in `group` has logged `hellos` clients' Hellos:
    then the scenario's client thread is running. (The log is the file the bench gave the
    server as its stderr, in a temporary directory of the bench's own.)"""
    server = _wait_for_process_in_group(group, program)
    log = Path(os.readlink(f"/proc/{server}/fd/2"))
    wait_until(lambda: times_logged(log, "said Hello from") >= hellos, f"{hellos} Hello(s) in {log}", timeout=30)


def _wait_for_process_in_group(group: int, text: bytes, seconds: float = 30.0) -> int:
    """The pid of a process in `group` with `text` in its command line, once one has started."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in _processes_in_group(group):
            try:
                if text in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue  # it ended while we looked
        time.sleep(0.05)
    raise AssertionError(f"no process with {text!r} in its command line started in group {group}")


def _processes_in_group(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)"
        except OSError:
            continue  # it ended while we looked
        if int(fields[2]) == group:  # the process group id
            pids.append(int(stat.parent.name))
    return pids


def test_an_unwritable_out_directory_is_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["--workloads", "hello", "--protocols", "tcp", "--count", "3", "--no-baselines",
                     "--out", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write results to --out {blocker / 'results'}" in err
    assert "hello-tcp" not in err  # nothing ran


def test_ratios_skip_figures_a_scenario_or_baseline_did_not_measure():
    run = {"scenarios": [{"config": {"workload": "hello", "protocol": "tcp", "payload": 64},
                          "status": "ok", "figures": {"latency": {"p50": None}}}],
           "baselines": [{"test": "ping-pong-tcp", "status": "ok", "figures": {"latency": {"p50": 50.0}}},
                         {"test": "python-echo-tcp", "status": "ok", "figures": {"latency": {"p50": None}}}]}
    by_name = {r["name"].split(" round")[0]: r for r in ratios.compute_ratios(run)}
    assert by_name["hello tcp"]["value"] is None and by_name["hello tcp"]["met"] is None
    assert not any(name.startswith("python echo") for name in by_name)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_cli_against_a_running_server_as_on_real_computers(transport, tmp_path, capsys):
    from hellohi.launcher import start_server

    server = start_server(transport, ["--store", str(tmp_path / "store.sqlite3")])
    try:
        code = cli.main(["--server", f"127.0.0.1:{server.port}", "--workloads", "hello,relay,throughput",
                         "--payloads", "64", "--protocols", transport, "--count", "5", "--out", str(tmp_path / "out")])
    finally:
        server.stop()
    assert code == 0
    run = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["status"] for s in run["scenarios"]] == ["ok", "ok", "ok"]
    assert all(s["server"] == {"remote": f"127.0.0.1:{server.port}"} for s in run["scenarios"])
    assert all(s["figures"]["delivery"]["delivered"] == 5 for s in run["scenarios"])
    assert run["baselines"] == []  # they measure this computer, not the server's
    # Labelled as measured across a network to another computer, not as loopback.
    assert [s["id"] for s in run["scenarios"]] == [f"{w}-{transport}-64B-n5-remote" for w in ("hello", "relay", "throughput")]
    assert all(s["config"]["link"] == "remote" for s in run["scenarios"])
    # No target can be judged here: the reasons are said once each, not target after target.
    out = capsys.readouterr().out
    assert "  none measured in this run:\n" in out and out.count("a run against --server measures no baselines") == 1
    from reports.cli import main as report_main
    assert report_main([str(tmp_path / "out"), "--out", str(tmp_path / "report")]) == 0
    report, handout = (tmp_path / "report" / "report.md").read_text(), (tmp_path / "report" / "handout.md").read_text()
    assert "- links: remote server (--server: the network to another computer)\n" in report
    assert f"A real network: against the server at 127.0.0.1:{server.port} (`--server`), from this computer:" in handout
    title = {"tcp": "TCP", "udp": "UDP with ack/retry"}[transport]
    assert f"- {title} Hello/HI round trip: 5 of 5 delivered" in handout
    # The throughput measured there is in part 3; part 4 and part 6 know what kind of run this was.
    assert f"- {transport}, alice → bob through the server on another computer (`--server`): 64 B: " in handout
    other = "udp" if transport == "tcp" else "tcp"
    assert f"- {other}: not measured in this run (not in its scenario matrix)" in handout  # no "see part 4"
    assert "This run had no emulated link (it measured a real network instead, below)." in handout
    assert "No target was judged in this run, so this part has no question." in handout


def test_a_ratio_that_was_not_measured_says_so_instead_of_printing_none():
    run = results.new_run(["python", "-m", "bench"])
    run["scenarios"] = [{"id": "relay-tcp", "status": "ok", "figures": {"latency": {"p99": 5000.0}},
                         "config": {"workload": "relay", "protocol": "tcp", "payload": 64, "link": "emulated",
                                    "link_config": {"loss": 0.05}}}]
    shown = {r["name"]: r["detail"] for r in ratios.compute_ratios(run)}
    assert all("None" not in detail for detail in shown.values()), shown
    assert shown["throughput tcp relay alice->bob 64 B (msg/s) / 50,000"] == "throughput tcp 64 B not measured"
    p99 = next(detail for name, detail in shown.items() if "round-trip p99" in name)
    assert p99 == "udp not measured / 5000.0 us"


def test_a_target_not_measured_says_why():
    def relay(protocol: str, link: str, link_config=None, **figures) -> dict:
        return {"id": f"relay-{protocol}", "status": "ok", "figures": {"latency": {"p99": 5000.0}, **figures},
                "config": {"workload": "relay", "protocol": protocol, "payload": 64, "link": link, "link_config": link_config}}

    run = results.new_run(["python", "-m", "bench"])
    # A link with reordering and no loss: no loss-implied minimum.
    run["scenarios"] = [relay("tcp", "emulated", {"reorder": 0.1}), relay("udp", "emulated", {"reorder": 0.1},
                                                                          delivery={"delivered": 5, "sent": 5, "duplicates": 0})]
    shown = {r["name"]: r["detail"] for r in ratios.compute_ratios(run)}
    assert shown['emulated {"reorder": 0.1}: udp retransmissions / loss-implied minimum'] == \
        "this link loses nothing: there is no loss-implied minimum to compare with"
    # kcp-test with another payload: the target is judged on KCP's own 8-byte echoes.
    run["scenarios"] = [{"id": f"kcp-test-{p}", "status": "ok", "figures": {"avg_rtt_ms": 1.0, "max_rtt_ms": 2.0},
                         "config": {"workload": "kcp-test", "protocol": p, "payload": 16, "link": "loopback"}}
                        for p in ("kcp-fast", "udp-turbo")]
    kcp = [r["detail"] for r in ratios.compute_ratios(run) if r["name"].startswith("KCP test")]
    assert kcp == ["judged on KCP's own 8-byte echoes only; this run's kcp-test sent 16 B"] * 2
    # Against --server: no baselines and no loopback figures, and the targets say so.
    run["scenarios"] = [relay("tcp", "remote")]
    shown = {r["name"]: r["detail"] for r in ratios.compute_ratios(run)}
    assert shown["hello tcp round-trip p50 / sockperf tcp ping-pong round-trip p50, measured in turns"] == \
        "not measured (a run against --server measures no baselines; the targets are judged on loopback)"
    assert shown["throughput tcp relay alice->bob 64 B (msg/s) / 50,000"] == \
        "throughput tcp 64 B not measured on loopback, where it is judged (this run was against --server)"


def test_the_udp_relays_throughput_stands_beside_the_target_as_information():
    def throughput(protocol: str, mps: float) -> dict:
        return {"id": f"throughput-{protocol}-64B", "status": "ok", "figures": {"messages_per_s": mps},
                "config": {"workload": "throughput", "protocol": protocol, "payload": 64, "link": "loopback"}}

    run = results.new_run(["python", "-m", "bench"])
    run["scenarios"] = [throughput("tcp", 70000.0), throughput("udp", 39000.0)]
    shown = {r["name"]: r for r in ratios.compute_ratios(run)}
    udp = shown["throughput udp relay alice->bob 64 B (msg/s) / 50,000 (information)"]
    assert (udp["value"], udp["target"], udp["met"], udp["detail"]) == (0.78, None, None, "39,000 msg/s")
    assert shown["throughput tcp relay alice->bob 64 B (msg/s) / 50,000"]["met"] is True
    assert not any("throughput udp-raw" in name for name in shown)  # not measured: no line


def test_the_kcp_target_is_judged_on_kcps_own_8_byte_echoes_only():
    def kcp_test(protocol: str, payload: int, avg: float) -> dict:
        return {"id": f"kcp-test-{protocol}-{payload}B", "status": "ok", "figures": {"avg_rtt_ms": avg, "max_rtt_ms": avg},
                "config": {"workload": "kcp-test", "protocol": protocol, "payload": payload, "link": "loopback"}}

    run = results.new_run(["python", "-m", "bench"])
    # Run with --payloads 65536: KCP's README figures are for 8-byte echoes, so no verdict.
    run["scenarios"] = [kcp_test("kcp-fast", 65536, 100.0), kcp_test("udp-turbo", 65536, 50.0)]
    kcp = [r for r in ratios.compute_ratios(run) if r["name"].startswith("KCP test")]
    assert [r["met"] for r in kcp] == [None, None]
    run["scenarios"] += [kcp_test("kcp-fast", 8, 100.0), kcp_test("udp-turbo", 8, 120.0)]
    kcp = [r for r in ratios.compute_ratios(run) if r["name"].startswith("KCP test")]
    assert [r["value"] for r in kcp] == [1.2, 1.2] and [r["met"] for r in kcp] == [False, False]


def test_the_floors_and_sockperf_run_pinned_like_the_turns(monkeypatch):
    pin = cores.pinning()
    if pin.config is None:
        pytest.skip("needs two cores and taskset")
    client, server = pin.client, pin.server
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv) or real_popen(argv, **kwargs))
    affinity = os.sched_getaffinity(0)
    echo = python_floor.echo_pingpong("udp", 0.3)
    assert echo["status"] == "ok" and echo["config"]["cores"] == {"client": client, "server": server}
    assert started[0][:3] == ["taskset", "-c", str(server)]
    assert os.sched_getaffinity(0) == affinity  # the bench's own process gets its cores back
    if shutil.which("sockperf") is None and not os.environ.get("CI"):  # CI installs it: run it there
        pytest.skip("the Python floor ran pinned; the sockperf half needs sockperf (apt-get install sockperf)")
    started.clear()
    sockperf = baselines.sockperf_pingpong("udp", 0.4)
    assert sockperf["status"] == "ok" and sockperf["config"]["cores"] == {"client": client, "server": server}
    assert started[0][:4] == ["taskset", "-c", str(server), "sockperf"]
    assert sockperf["config"]["argv"][:4] == ["taskset", "-c", str(client), "sockperf"]


def test_sockperf_and_iperf3_record_the_whole_seconds_they_ran():
    assert baselines.whole_seconds(0.4) == 1 and baselines.whole_seconds(2.6) == 3
    missing = [tool for tool in ("sockperf", "iperf3") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (.ci/run installs them)")
    sockperf = baselines.sockperf_pingpong("udp", 0.4)
    assert sockperf["config"]["seconds"] == 1 and sockperf["config"]["argv"][sockperf["config"]["argv"].index("-t") + 1] == "1"
    iperf3 = baselines.iperf3_throughput(0.4)
    assert iperf3["config"]["seconds"] == 1 and iperf3["config"]["argv"][-2:] == ["1", "-J"]


def test_a_reader_that_went_away_stops_the_bench_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `python -m bench --list | head -1` once head has exited
    try:
        listed = subprocess.run([sys.executable, "-m", "bench", "--list"], cwd=REPO_ROOT, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr


def test_an_iperf3_stopped_early_is_an_error_not_zero_throughput(monkeypatch):
    if shutil.which("iperf3") is None:
        pytest.skip("not installed: iperf3 (.ci/run installs it)")
    # What iperf3 -J prints when a signal stops the client alone: still JSON, of nothing carried.
    report = {"end": {"sum_received": {"bytes": 0, "seconds": 0.3, "bits_per_second": 0.0}}}
    stopped = subprocess.CompletedProcess([], 1, stdout=json.dumps(report), stderr="iperf3: interrupt - the client has terminated")
    monkeypatch.setattr(baselines.subprocess, "run", lambda *args, **kwargs: stopped)
    result = baselines.iperf3_throughput(1)
    assert result["status"] == "error" and "figures" not in result
    assert result["reason"].startswith("iperf3 exited with status 1 after 0 bytes: iperf3: interrupt")


def test_a_cancel_that_comes_as_the_window_moves_is_never_lost():
    async def window_wait(event):
        window = Window(size=1, timeout=5.0)
        window.progress = event
        await window.wait(sent=1, settled=lambda: 0)  # one in flight: full, so it waits

    assert asyncio.run(cancel_as_it_finishes(window_wait)) == "cancelled"


def test_a_window_that_nothing_settles_costs_one_timeout_per_window_not_per_message(monkeypatch):
    """Plain UDP over a lossy link: nothing arrives, yet the sender goes on, a window at a time."""
    waited_before = []
    real_wait = workloads.event_set_within

    async def send(count: int) -> None:
        async def counted(event, timeout):
            waited_before.append(sent)  # the message the sender is about to send
            return await real_wait(event, timeout)

        monkeypatch.setattr(workloads, "event_set_within", counted)
        window = Window(size=4, timeout=0.001)
        for sent in range(count):
            await window.wait(sent, settled=lambda: 0)  # not one message ever arrives

    asyncio.run(send(12))
    assert waited_before == [4, 8]  # the sender waited when each window was full, and only then


def test_a_matrix_table_skips_the_pairs_that_cannot_run_as_the_flags_do(tmp_path, capsys):
    config = tmp_path / "matrix.toml"
    config.write_text('[matrix]\nworkloads = ["hello", "throughput-raw", "kcp-test"]\nprotocols = ["tcp", "udp"]\n')
    assert cli.main(["--config", str(config), "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    # throughput-raw is TCP only; kcp-test takes udp (hellohi's layer on KCP's link) but not tcp.
    assert listed == ["hello-tcp-64B-n1000", "hello-udp-64B-n1000", "throughput-raw-tcp-64B-n20000",
                      "kcp-test-udp-8B-n1000"]


def test_kcp_test_from_a_config_file_echoes_8_bytes_like_kcps_own_test(tmp_path, capsys):
    config = tmp_path / "matrix.toml"
    config.write_text('[[scenario]]\nworkload = "kcp-test"\nprotocol = "kcp-fast"\n'
                      '[[scenario]]\nworkload = "kcp-test"\nprotocol = "udp-turbo"\npayload = 64\n')
    assert cli.main(["--config", str(config), "--list"]) == 0
    assert [json.loads(line.split(" ", 1)[1])["payload"] for line in capsys.readouterr().out.splitlines()] == [8, 64]


def test_payloads_are_checked_only_for_the_workloads_that_will_run(capsys):
    # relay cannot run over kcp-fast, so --payloads 8 (too small for relay) concerns only kcp-test.
    assert cli.main(["--workloads", "relay,kcp-test", "--protocols", "kcp-fast", "--payloads", "8", "--list"]) == 0
    assert capsys.readouterr().out.split()[0] == "kcp-test-kcp-fast-8B-n1000"


@pytest.mark.skipif(not hasattr(os, "getpgid"), reason="process groups are POSIX")
def test_the_python_echo_server_is_out_of_reach_of_the_terminals_ctrl_c(monkeypatch):
    from bench import python_floor

    groups = []

    class Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            groups.append(os.getpgid(self.pid))

    monkeypatch.setattr(python_floor.subprocess, "Popen", Popen)
    entry = python_floor.echo_pingpong("udp", seconds=0.1)
    assert entry["status"] == "ok"  # ended by its stdin, as before
    # A Ctrl-C goes to the terminal's foreground group, which is ours: not the echo server's.
    assert len(groups) == 1 and groups[0] != os.getpgid(0)


def test_a_server_being_started_when_ctrl_c_comes_does_not_outlive_its_starter(monkeypatch):
    from hellohi import launcher

    started = []

    class InterruptedWhileReading:  # the banner read, cut short by Ctrl-C
        def readline(self):
            raise KeyboardInterrupt

    class Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
            self.banner_pipe, self.stdout = self.stdout, InterruptedWhileReading()  # the pipe stays open

    monkeypatch.setattr(launcher.subprocess, "Popen", Popen)
    try:
        with pytest.raises(KeyboardInterrupt):
            launcher.start_server("tcp", ["--store", ":memory:"])
        assert len(started) == 1
        assert started[0].poll() is not None  # killed and reaped, not left running
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.banner_pipe.close()


def test_a_workload_that_none_of_the_protocols_can_run_is_named_not_dropped_silently(capsys):
    assert cli.main(["--workloads", "relay,kcp-test", "--protocols", "tcp", "--list"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[0] for line in captured.out.splitlines()] == ["relay-tcp-64B-n300"]
    assert "note: kcp-test left out: kcp-test needs a kcp-* protocol" in captured.err
    assert "and --protocols tcp names none" in captured.err
    # Without --protocols the note speaks of the defaults, not of a flag nobody gave.
    assert cli.main(["--workloads", "hello,kcp-pingpong", "--list"]) == 0
    assert ("note: kcp-pingpong left out: kcp-pingpong needs a kcp-* protocol, and none of the default protocols "
            "(tcp,udp,udp-raw) is one; name one with --protocols") in capsys.readouterr().err


def test_a_server_that_does_not_answer_stops_the_run_at_once_with_one_line(tmp_path, capsys):
    # Without the check, every scenario failed on its own after its timeout, with the same error.
    for protocol, transport, kind in (("tcp", "TCP", socket.SOCK_STREAM), ("udp-raw", "UDP", socket.SOCK_DGRAM)):
        with refusing_port(kind) as port:
            code = cli.main(["--server", f"127.0.0.1:{port}", "--protocols", protocol, "--out", str(tmp_path / "out")])
        assert code == 2  # before any scenario: no results.json below
        err = capsys.readouterr().err
        assert err == (f"error: no hellohi server answers at 127.0.0.1:{port} over {transport}: nothing listens on "
                       f"that port ({'connection refused' if transport == 'TCP' else 'port unreachable'}). Start one on "
                       f"that computer (make server-{transport.lower()} HOST=0.0.0.0 PORT={port}), let {transport} port "
                       f"{port} through its firewall, or correct --server\n")
        assert not (tmp_path / "out" / "results.json").exists()


def test_the_server_check_tells_a_silent_port_and_a_stranger_from_a_hellohi_server():
    from bench.reachable import server_problem

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # takes datagrams, answers none
        silent.bind(("127.0.0.1", 0))
        why = server_problem("127.0.0.1", silent.getsockname()[1], ["udp"], wait=0.3)
    assert "over UDP: no answer to 3 Hellos within 0.3 s (a firewall dropping packets, or no such host)" in why
    with socket.create_server(("127.0.0.1", 0)) as stranger:  # an SSH server, say
        def greet():
            connection, _ = stranger.accept()
            with connection:
                connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        greeter = threading.Thread(target=greet)
        greeter.start()
        why = server_problem("127.0.0.1", stranger.getsockname()[1], ["tcp"], wait=2)
        greeter.join()
    assert "over TCP: it answered 'SSH-2.0-OpenSSH_9.2', which is not a hellohi server's HI" in why
    # The port is another program's: starting a hellohi server there, or a firewall, is no fix.
    assert why.endswith("; another program listens on that port. Correct --server: the hellohi server prints "
                        "the address and port it listens on when it starts")
    assert "Start one" not in why and "firewall" not in why


def test_udp_turbo_against_a_running_server_says_whose_side_is_turbo(capsys):
    assert cli.main(["--server", "127.0.0.1:5000", "--protocols", "udp-turbo", "--workloads", "hello", "--list"]) == 0
    captured = capsys.readouterr()
    assert "note: against --server, udp-turbo is turbo on this side only;" in captured.err
    assert captured.out.split()[0] == "hello-udp-turbo-64B-n1000-remote"


def test_an_empty_server_address_is_refused_not_ignored(capsys):
    # `--server "$SERVER"` with SERVER unset: running the local bench instead (as root, with
    # emulated hosts) is not what was asked for.
    with pytest.raises(SystemExit) as exit:
        cli.main(["--server", "", "--protocols", "tcp"])
    assert exit.value.code == 2 and "'' is not HOST:PORT, e.g. 127.0.0.1:5000" in capsys.readouterr().err


def unbuildable_links(monkeypatch, reason: str) -> None:
    """Every EmulatedNetwork fails to build, with EmulationError(reason)."""
    from bench import emulation

    class Unbuildable:
        def __init__(self, spec):
            pass

        def __enter__(self):
            raise emulation.EmulationError(reason)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(emulation, "EmulatedNetwork", Unbuildable)


def test_a_link_that_cannot_be_built_fails_its_scenarios_not_the_run(monkeypatch, capsys):
    import io

    unbuildable_links(monkeypatch, "command failed: tc qdisc add ... tbf: the \"rate\" parameter is mandatory")
    monkeypatch.setattr(cli, "leftover_runs", lambda: ["hh-4242-beef"])
    link = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}
    scenarios = [Scenario("hello", "tcp", count=5, link="emulated", link_config=link),
                 Scenario("relay", "udp", count=5, link="emulated", link_config=link)]
    run = results.new_run(["python", "-m", "bench"])
    cli.run_round(run, 1, 1, [], scenarios, None, cli.Progress(2, stream=io.StringIO()))
    assert [(s["id"], s["status"]) for s in run["scenarios"]] == [(sc.id, "error") for sc in scenarios]
    assert run["scenarios"][0]["reason"].startswith("the emulated link could not be built: command failed: tc qdisc")
    err = capsys.readouterr().err
    assert "note: 1 emulated network(s) left by killed runs (hh-4242-beef); remove them with: " in err
    assert err.rstrip().endswith("-m bench.emulation cleanup")


def test_with_rounds_each_leftover_network_is_named_once(monkeypatch, capsys):
    import io

    unbuildable_links(monkeypatch, "no link today")
    leftovers = [["hh-4242-beef"], ["hh-4242-beef"], ["hh-4242-beef", "hh-77-cafe"]]
    monkeypatch.setattr(cli, "leftover_runs", lambda: leftovers.pop(0))
    scenario = Scenario("hello", "tcp", count=5, link="emulated", link_config={"loss": 0.05})
    noted: set[str] = set()
    notes = []
    for number in (1, 2, 3):
        run = results.new_run(["python", "-m", "bench"])
        cli.run_round(run, number, 3, [], [scenario], None, cli.Progress(3, stream=io.StringIO()), noted)
        notes.append([line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")])
    assert [len(round_notes) for round_notes in notes] == [1, 0, 1]
    assert "(hh-4242-beef)" in notes[0][0] and "1 emulated network(s) left by killed runs (hh-77-cafe)" in notes[2][0]


def test_two_emulated_links_that_differ_only_in_seed_or_reorder_time_get_different_ids():
    def scenario_id(**link):
        return Scenario("hello", "udp", count=5, link="emulated", link_config=link).id

    issue4 = {"loss": 0.05, "delay_ms": 10.0, "seed": 1}
    assert scenario_id(**issue4) == "hello-udp-64B-n5-emulated-delay_ms10-loss0.05"  # as before: seed 1 is the default
    assert scenario_id(**dict(issue4, seed=7)) == "hello-udp-64B-n5-emulated-delay_ms10-loss0.05-seed7"
    reordered = dict(issue4, reorder=0.2, reorder_ms=10.0)
    assert scenario_id(**reordered) == "hello-udp-64B-n5-emulated-delay_ms10-loss0.05-reorder0.2-reorder_ms10"
    assert scenario_id(**dict(issue4, reorder_ms=10.0)) == scenario_id(**issue4)  # nothing reordered: no matter


async def _leave_stored_for(port: int, recipient: str, ids: range) -> None:
    """What a drain cut short in an earlier run leaves on a server that outlives runs:
    messages with bench ids stored for an offline `recipient`."""
    from bench.clients import client_factory

    client_class = client_factory("tcp")
    recipient_client = client_class("127.0.0.1", port, recipient)
    await recipient_client.connect(timeout=5.0)  # the server learns the name, as drain's carol does
    await recipient_client.close()  # (over TCP, once the server has closed its end: carol is offline)
    sender = client_class("127.0.0.1", port, "an-earlier-run")
    await sender.connect(timeout=5.0)
    unstored = {sender.send(recipient, make_body(message_id, 64)) for message_id in ids}
    while unstored:  # all stored before the sender leaves
        unstored.discard((await next_of(sender, StatusChanged)).ref)
    await sender.close()


def test_a_server_that_outlives_runs_passes_no_earlier_runs_messages_into_the_books(tmp_path):
    # Against --server, a drain over plain UDP left 124 of 200 messages stored for
    # bench-carol; the next run's drain got them first, counted them as its own ids
    # 76-199, its own 0-75 as "reordered", stopped at 200 and left its real 76-199
    # behind for the run after. Each scenario's clients there must have names of their own.
    from hellohi.launcher import start_server

    server = start_server("tcp", ["--store", str(tmp_path / "store.sqlite3")])
    try:
        asyncio.run(_leave_stored_for(server.port, "bench-carol", range(10, 20)))
        result = run_scenario(Scenario("drain", "tcp", count=20, timeout=2.0), remote=("127.0.0.1", server.port))
    finally:
        server.stop()
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = _balanced(result["figures"])
    assert (d["delivered"], d["reordered"], d["duplicates"]) == (20, 0, 0)


class _SlowHiServer:
    """A TCP server for one client that answers each Hello with HI `service` seconds after
    reading it, and the `slow`-th Hello (the first is the one that registers) `slow_delay`
    seconds after. TCP answers late, never not at all: a HI that missed its wait still comes."""

    def __init__(self, service: float, slow: int, slow_delay: float):
        self.service, self.slow, self.slow_delay = service, slow, slow_delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection, connection.makefile("rb") as lines:
            hellos = 0
            for line in lines:
                if line[:5].upper() == b"HELLO":
                    hellos += 1
                    time.sleep(self.slow_delay if hellos == self.slow else self.service)
                    connection.sendall(b"HI bench hellohi/1 15000\n")

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.mark.parametrize("workload", ["hello", "hello-raw"])
def test_a_late_hi_over_tcp_counts_one_hello_lost_and_answers_no_later_hello(workload):
    """The second measured Hello's HI comes after loss_wait (0.3 s): that Hello is lost, and its
    HI, when it comes, is not the next Hello's answer (hello-raw used to end the scenario instead:
    a file object that once timed out refuses every later read)."""
    service = 0.1
    server = _SlowHiServer(service=service, slow=3, slow_delay=0.35)
    try:
        sc = Scenario(workload, "tcp", count=5, warmup=0, timeout=0.3)
        endpoint = workloads.Endpoint("127.0.0.1", server.port)
        if workload == "hello":
            figures = asyncio.run(workloads.hello(endpoint, sc))
        else:
            figures = workloads.hello_raw_blocking(endpoint, sc)
    finally:
        server.close()
    d = _balanced(figures)
    assert (d["sent"], d["delivered"], d["lost"]) == (5, 4, 1)
    # Every HI leaves the server at least `service` after the Hello it answers. The Hello after
    # the lost one was sent at 0.3 s, and the late HI came at 0.35 s: taken as its answer, it
    # would read 0.05 s.
    assert figures["latency"]["min"] >= service * 1e6  # microseconds
