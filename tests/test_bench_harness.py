"""The bench harness end to end on loopback with a tiny matrix (seconds, no timing asserts).

These tests check that the harness runs the real server and client, that its books
balance and that it writes well-formed results; they never assert on speed.
"""

import csv
import json
import sys

import pytest

from bench import cli, results
from bench.baselines import parse_sockperf
from bench.kcp_peer import KcpScenario, ShuffleBag, kcp_available, simulate_kcp
from bench.runner import run_scenario
from bench.workloads import Scenario, body_id, make_body


def _balanced(figures):
    d = figures["delivery"]
    assert d["sent"] == d["delivered"] + d["lost"]
    return d


@pytest.mark.parametrize("workload", ["hello", "hello-raw", "relay", "throughput", "fanin", "fanout", "drain"])
def test_each_workload_against_the_real_tcp_server(workload):
    sc = Scenario(workload, "tcp", count=30, warmup=2, clients=3, payload=64, timeout=5.0)
    result = run_scenario(sc)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = _balanced(result["figures"])
    assert d["delivered"] == d["sent"] == 30  # loopback TCP loses nothing
    assert d["duplicates"] == 0
    lat = result["figures"].get("latency")
    if lat is not None:
        expected = "round_trip" if workload in ("hello", "hello-raw", "relay") else "one_way"
        assert lat["measure"] == expected and lat["count"] == 30
        assert lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    server = result["server"]
    assert server["peak_rss_bytes"] is None or server["peak_rss_bytes"] > 0
    assert "--store" in server["argv"]


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


def test_body_carries_the_id():
    for size in (20, 64, 65536):
        body = make_body(2**64 + 5, size)
        assert len(body) == size and body_id(body) == 2**64 + 5


def test_cli_tiny_matrix_writes_json_and_csv(tmp_path, capsys):
    code = cli.main(["--workloads", "hello,relay", "--protocols", "tcp", "--count", "10",
                     "--no-baselines", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "hello-tcp" in out.out and "targets, as measured" in out.out
    assert "[" in out.err and "done" in out.err  # progress bar on stderr
    run = json.loads((tmp_path / "results.json").read_text())
    assert run["schema"] == results.SCHEMA
    env = run["environment"]
    for key in ("kernel", "python", "machine", "packages", "cpu_count"):
        assert key in env
    assert [s["config"]["workload"] for s in run["scenarios"]] == ["hello", "relay"]
    assert all(s["config"]["seed"] == 1 for s in run["scenarios"])
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["config.workload"] for r in rows] == ["hello", "relay"]
    assert rows[0]["figures.latency.measure"] == "round_trip"


def test_config_file_matrix(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[defaults]\ncount = 5\nseed = 7\n[matrix]\nworkloads = ["hello"]\n'
                   'protocols = ["tcp"]\npayloads = [16, 64]\n')
    cells = cli.load_config(str(cfg))
    scenarios = cli.to_scenarios(cells, seed=1, window=None)
    assert [(s.payload, s.count, s.seed) for s in scenarios] == [(16, 5, 7), (64, 5, 7)]


def test_ratios_use_measured_values_only():
    run = {"scenarios": [{"config": {"workload": "hello", "protocol": "tcp", "payload": 64},
                          "status": "ok", "figures": {"latency": {"p50": 150.0}}}],
           "baselines": [{"test": "ping-pong-tcp", "status": "ok",
                          "figures": {"latency": {"p50": 100.0}}}]}
    ratios = {r["name"].split(" round")[0]: r for r in cli.compute_ratios(run)}
    assert ratios["hello tcp"]["value"] == 1.5 and ratios["hello tcp"]["met"] is True
    assert ratios["hello udp"]["value"] is None and ratios["hello udp"]["met"] is None


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
    assert d["delivered"] >= 100 and a["datagrams_dropped"] > 0
    assert a["latency"]["measure"] == "round_trip"


@pytest.mark.skipif(kcp_available() is not None, reason="kcp package not installed")
def test_kcp_pingpong_over_real_udp():
    result = run_scenario(Scenario("kcp-pingpong", "kcp-fast", count=20, warmup=2))
    assert result["status"] == "ok", result.get("traceback")
    assert result["figures"]["delivery"]["delivered"] == 20
