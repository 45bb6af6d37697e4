"""bench/paired.py: Hello/HI beside sockperf in turns, on pinned cores, with real servers on 127.0.0.1.

Checks what is measured and that nothing is left running, not speed.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench import paired

# CI installs sockperf (.ci/run) and must run these; a student's machine without it skips them.
pytestmark = pytest.mark.skipif(shutil.which("sockperf") is None and not os.environ.get("CI"),
                                reason="sockperf not installed (apt-get install sockperf)")


def _running(program: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", program], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "pgrep" not in line]


@pytest.mark.parametrize("kernel", ["tcp", "udp"])
def test_turns_measure_every_client_beside_sockperf_and_clean_up(kernel):
    affinity = os.sched_getaffinity(0)
    before = _running("sockperf") + _running(f"{kernel}.server")
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
    assert os.sched_getaffinity(0) == affinity  # the bench's own process is given its cores back
    assert _running("sockperf") + _running(f"{kernel}.server") == before  # both servers stopped


def test_without_sockperf_the_turns_say_what_to_install(monkeypatch):
    monkeypatch.setattr(paired.shutil, "which", lambda program: None)
    result = paired.measure("tcp", blocks=1, round_trips=5)
    assert result["status"] == "missing" and "apt-get install sockperf" in result["reason"]
