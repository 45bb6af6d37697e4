"""The bench across emulated hosts (Linux namespaces through bench/emulation; needs root).

CI runs these as root. They check the bench's own readings of the link, not speed:
the configured delay shows in the measured round trip, and a lossy link still ends
with every TCP message delivered exactly once (TCP retransmits), with the link's
counters showing that about the configured share of packets really were dropped and
the hosts' TCP counters showing the retransmissions.
"""

import os
from pathlib import Path

import pytest

from bench.runner import run_scenario
from bench.workloads import Scenario

pytestmark = pytest.mark.root

emulation = pytest.importorskip("bench.emulation")


def _need_root():
    try:
        emulation.check_environment()
    except emulation.EmulationError as error:
        if os.environ.get("CI"):
            raise  # CI must run these, not skip them
        pytest.skip(str(error))


def test_emulated_delay_shows_in_hello_round_trip_and_nothing_is_left_behind():
    _need_root()
    spec = emulation.LinkSpec(delay_ms=15, seed=3)
    with emulation.EmulatedNetwork(spec) as net:
        name = net.name
        result = run_scenario(Scenario("hello", "tcp", count=20, warmup=2, link="emulated",
                                       link_config=spec.to_dict()), net=net)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    lat = result["figures"]["latency"]
    assert lat["measure"] == "round_trip"
    assert lat["min"] >= 2 * 15_000  # 15 ms each way, in microseconds
    if net.backend == "nft-tun":   # with netem the delay is a qdisc's; no forwarder counts packets
        assert result["link"]["counters"]["up"]["forwarded"] > 0
    assert emulation.find_leftovers(name) == []


def test_emulated_loss_tcp_relay_still_exact():
    _need_root()
    spec = emulation.LinkSpec(loss=0.1, seed=4)
    with emulation.EmulatedNetwork(spec) as net:
        result = run_scenario(Scenario("relay", "tcp", count=60, warmup=2, link="emulated",
                                       link_config=spec.to_dict()), net=net)
    assert result["status"] == "ok", result.get("traceback") or result.get("reason")
    d = result["figures"]["delivery"]
    assert d["sent"] == d["delivered"] + d["lost"] == 60
    assert d["delivered"] == 60 and d["duplicates"] == 0
    counters = result["link"]["counters"]
    dropped = counters["up"]["nft_dropped"] + counters["down"]["nft_dropped"]
    seen = counters["up"]["nft_seen"] + counters["down"]["nft_seen"]
    assert 0.04 < dropped / seen < 0.2  # the link really lost about 10 % of packets; TCP hid it
    # ...by sending segments again, which the kernel of each host counted.
    tcp = result["figures"]["tcp_counters"]
    retransmitted = tcp["client"]["RetransSegs"] + tcp["server"]["RetransSegs"]
    assert 0 < retransmitted < tcp["client"]["OutSegs"] + tcp["server"]["OutSegs"]
    # How TCP reacts to loss is its congestion control's: recorded for both hosts, which
    # take the machine's default when the namespaces are made.
    default = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    assert result["link"]["tcp_congestion_control"] == {"client": default, "server": default}


def test_cli_link_runs_tcp_and_udp_across_the_lossy_link_and_leaves_nothing(tmp_path, capsys):
    import json

    from bench import cli

    _need_root()
    code = cli.main(["--link", "loss=0.1,seed=2", "--workloads", "relay", "--protocols", "tcp,udp", "--count", "60",
                     "--no-baselines", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err[-2000:]
    run = json.loads((tmp_path / "results.json").read_text())
    emulated = {s["config"]["protocol"]: s for s in run["scenarios"] if s["config"]["link"] == "emulated"}
    assert set(emulated) == {"tcp", "udp"}
    for protocol, scenario in emulated.items():
        assert scenario["status"] == "ok", scenario.get("reason")
        d = scenario["figures"]["delivery"]
        assert d["delivered"] == d["sent"] == 60 and d["duplicates"] == 0  # both deliver every message once
        assert scenario["link"]["counters"]["up"]["nft_dropped"] + scenario["link"]["counters"]["down"]["nft_dropped"] > 0
    assert emulated["udp"]["figures"]["udp_counters"]["retransmitted"] > 0
    assert emulated["udp"]["figures"]["retransmission_ratio"] is not None
    assert "RetransSegs" in emulated["tcp"]["figures"]["tcp_counters"]["server"]
    # This process's runs only (hh-<pid>-...): another session's emulated run may be up meanwhile.
    assert emulation.find_leftovers(f"hh-{os.getpid()}-") == []
