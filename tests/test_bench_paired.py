"""bench/paired.py: Hello/HI beside sockperf in turns, on pinned cores, with real servers on 127.0.0.1.

Checks what is measured and that nothing is left running, not speed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench import paired, ratios

# CI installs sockperf (.ci/run) and must run these; a student's machine without it skips them.
pytestmark = pytest.mark.skipif(shutil.which("sockperf") is None and not os.environ.get("CI"),
                                reason="sockperf not installed (apt-get install sockperf)")


def _children() -> list[str]:
    """This test process's child processes (the servers it starts): not the whole machine's,
    where another run's sockperf or hellohi server may come and go meanwhile."""
    found = subprocess.run(["pgrep", "-a", "-P", str(os.getpid())], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


@pytest.mark.parametrize("kernel", ["tcp", "udp"])
def test_turns_measure_every_client_beside_sockperf_and_clean_up(kernel, monkeypatch):
    affinity = os.sched_getaffinity(0)
    before = _children()
    # Where each program ran: the servers' and sockperf's command prefixes, and this
    # thread's cores while each client measured.
    prefixes, client_cores = [], []
    start_server, runners = paired.start_server, dict(paired.RUNNERS)
    sockperf_server, sockperf_client = paired.baselines.sockperf_server, paired.baselines.sockperf_client
    monkeypatch.setattr(paired.baselines, "sockperf_server", lambda kernel, host, prefix: prefixes.append(
        ("sockperf server", prefix)) or sockperf_server(kernel, host, prefix))
    monkeypatch.setattr(paired, "start_server", lambda *a, **kw: prefixes.append(("hellohi", kw["command_prefix"]))
                        or start_server(*a, **kw))
    monkeypatch.setattr(paired.baselines, "sockperf_client", lambda *a, **kw: prefixes.append(
        ("sockperf client", kw["command_prefix"])) or sockperf_client(*a, **kw))

    def on_which_cores(workload):
        async def run(endpoint, sc):
            client_cores.append(os.sched_getaffinity(0))
            return await runners[workload](endpoint, sc)
        return run

    monkeypatch.setattr(paired, "RUNNERS", {name: on_which_cores(name) for name in runners})
    result = paired.measure(kernel, blocks=2, round_trips=30)
    assert result["status"] == "ok", result.get("reason")
    labels = [paired.client_label(*pair) for pair in paired.CLIENTS[kernel]]
    assert result["config"]["clients"] == labels
    blocks = result["figures"]["blocks"]
    assert len(blocks) == 2
    for row in blocks:
        assert set(row) == {"sockperf", *labels} and all(p50 > 0 for p50 in row.values())
    for label in labels:  # the median of two blocks is their mean
        expected = sum(row[label] / row["sockperf"] for row in blocks) / 2
        assert result["figures"]["ratio_median"][label] == pytest.approx(expected)
    if len(affinity) >= 2 and shutil.which("taskset"):
        first, second = sorted(affinity)[:2]
        assert result["config"]["cores"] == {"client": first, "server": second}
        assert ("hellohi", ["taskset", "-c", str(second)]) in prefixes
        assert ("sockperf server", ["taskset", "-c", str(second)]) in prefixes
        assert prefixes.count(("sockperf client", ["taskset", "-c", str(first)])) == 2
        assert client_cores == [{first}] * 2 * len(labels)
    assert os.sched_getaffinity(0) == affinity  # the bench's own process is given its cores back
    assert _children() == before  # both servers stopped


def test_without_sockperf_the_turns_say_what_to_install(monkeypatch):
    monkeypatch.setattr(paired.shutil, "which", lambda program: None)
    result = paired.measure("tcp", blocks=1, round_trips=5)
    assert result["status"] == "missing" and "apt-get install sockperf" in result["reason"]
    # ... and the targets repeat it.
    details = {r["detail"] for r in ratios.compute_ratios({"baselines": [result], "scenarios": []})}
    assert f"not measured (missing: {result['reason']})" in details


def test_turns_measure_only_the_clients_of_the_protocols_asked_for():
    result = paired.measure("udp", blocks=1, round_trips=10, protocols={"udp-raw"})
    assert result["status"] == "ok", result.get("reason")
    assert result["config"]["clients"] == ["hello udp-raw", "hello-raw udp-raw"]
    assert [set(row) for row in result["figures"]["blocks"]] == [{"sockperf", "hello udp-raw", "hello-raw udp-raw"}]
    assert list(result["figures"]["ratio_median"]) == ["hello udp-raw", "hello-raw udp-raw"]
    # The clients left out are named, with the reason, for the ratios to repeat.
    assert result["config"]["left_out"] == {"hello udp": "udp is not among this run's protocols",
                                            "hello-raw udp": "udp is not among this run's protocols"}
    assert "not measured (udp is not among this run's protocols)" in {
        r["detail"] for r in ratios.compute_ratios({"baselines": [result], "scenarios": []})}
