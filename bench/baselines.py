"""Kernel floors measured in the same run: sockperf ping-pong and iperf3 on loopback.

These tools talk to the kernel with almost nothing on top, so their figures are the
best any program on this machine can do; the bench reports hellohi's figures as
ratios to them. When a tool is missing, the baseline says so (and what to install)
instead of failing the run.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager

from .cores import on_core, pinning

INSTALL_HINT = {
    "sockperf": "apt-get install sockperf   (Debian/Ubuntu; or build it from github.com/Mellanox/sockperf)",
    "iperf3": "apt-get install iperf3   (Debian/Ubuntu; brew install iperf3 on macOS)",
}

# sockperf refuses a smaller message ("Invalid message size: 5 (min: 14)"): its own
# header (sequence number and flags) travels in every message.
SOCKPERF_MIN_MESSAGE = 14

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PERCENTILE = re.compile(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)")
_MINMAX = re.compile(r"<(MIN|MAX)> observation\s*=\s*([\d.]+)")
_AVG = re.compile(r"avg-rtt=([\d.]+)")


def missing_tools() -> dict[str, str]:
    """{tool: how to install it} for each baseline tool that is not installed."""
    return {tool: hint for tool, hint in INSTALL_HINT.items() if shutil.which(tool) is None}


def tool_versions() -> dict:
    versions = {}
    for tool, flag in (("sockperf", "--version"), ("iperf3", "--version")):
        if shutil.which(tool) is None:
            versions[tool] = None
            continue
        out = subprocess.run([tool, flag], capture_output=True, text=True, timeout=10)
        first = _ANSI.sub("", (out.stdout or out.stderr)).strip().splitlines()
        versions[tool] = first[0] if first else "unknown"
    return versions


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_listening(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)


def parse_sockperf(text: str) -> dict:
    """Figures from `sockperf ping-pong --full-rtt` output, in microseconds."""
    text = _ANSI.sub("", text)
    percentiles = {float(p): float(v) for p, v in _PERCENTILE.findall(text)}
    minmax = dict(_MINMAX.findall(text))
    avg = _AVG.search(text)

    def at(p):
        return percentiles.get(p)

    return {
        "measure": "round_trip",  # --full-rtt: sockperf otherwise reports RTT/2
        "unit": "us",
        "count": int(m.group(1)) if (m := re.search(r"Total (\d+) observations", text)) else None,
        "min": float(minmax["MIN"]) if "MIN" in minmax else None,
        "mean": float(avg.group(1)) if avg else None,
        "p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "p99_9": at(99.9),
        "max": float(minmax["MAX"]) if "MAX" in minmax else None,
    }


@contextmanager
def sockperf_server(protocol: str, host: str = "127.0.0.1", command_prefix: list[str] | None = None):
    """A `sockperf server` on a free port for as long as the block runs; yields the port.

    `command_prefix` runs it through another command, e.g. `taskset -c 1` (bench/paired.py)."""
    tcp = ["--tcp"] if protocol == "tcp" else []
    port = free_port(socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM, host)
    server = subprocess.Popen([*(command_prefix or []), "sockperf", "server", "-i", host, "-p", str(port), *tcp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if tcp:
            _wait_listening(host, port)
        else:
            time.sleep(0.3)  # UDP has no handshake to wait for
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def whole_seconds(seconds: float) -> int:
    """What sockperf's and iperf3's -t take: whole seconds, at least one."""
    return max(1, round(seconds))


def sockperf_client(protocol: str, port: int, seconds: float = 2.0, payload: int = 64,
                    host: str = "127.0.0.1", command_prefix: list[str] | None = None) -> tuple[list[str], dict, str]:
    """One `sockperf ping-pong` run: (its argv, its latency figures, its output)."""
    tcp = ["--tcp"] if protocol == "tcp" else []
    argv = [*(command_prefix or []), "sockperf", "ping-pong", "-i", host, "-p", str(port), *tcp,
            "-t", str(whole_seconds(seconds)), "-m", str(max(payload, SOCKPERF_MIN_MESSAGE)), "--full-rtt"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    return argv, parse_sockperf(out.stdout + out.stderr), out.stdout + out.stderr


def sockperf_pingpong(protocol: str, seconds: float = 2.0, payload: int = 64,
                      host: str = "127.0.0.1") -> dict:
    """sockperf's ping-pong, its client on one core and its server on another, as in the turns
    (bench/cores.py): `config.cores` says where (null: not pinned)."""
    pin = pinning()
    result = {"tool": "sockperf", "test": f"ping-pong-{protocol}", "config": {
        "protocol": protocol, "seconds": whole_seconds(seconds), "payload": payload, "host": host,
        "cores": pin.config}}
    if shutil.which("sockperf") is None:
        return {**result, "status": "missing", "reason": "sockperf not installed; " + INSTALL_HINT["sockperf"]}
    with sockperf_server(protocol, host, on_core(pin.server)) as port:
        argv, latency, output = sockperf_client(protocol, port, seconds, payload, host, on_core(pin.client))
    result["config"]["argv"] = argv
    if latency["p50"] is None:
        return {**result, "status": "error", "reason": output[-500:]}
    return {**result, "status": "ok", "figures": {"latency": latency}}


def iperf3_throughput(seconds: float = 2.0, host: str = "127.0.0.1") -> dict:
    result = {"tool": "iperf3", "test": "tcp-throughput", "config": {"seconds": whole_seconds(seconds), "host": host}}
    if shutil.which("iperf3") is None:
        return {**result, "status": "missing", "reason": "iperf3 not installed; " + INSTALL_HINT["iperf3"]}
    port = free_port(host=host)
    # No "-1" (one client only): our readiness probe counts as a client to iperf3.
    server = subprocess.Popen(["iperf3", "-s", "-B", host, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(host, port)
        time.sleep(0.2)  # let it shrug off the probe connection
        argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(whole_seconds(seconds)), "-J"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    finally:
        server.terminate()
        server.wait(timeout=10)
    result["config"]["argv"] = argv
    try:
        received = json.loads(out.stdout)["end"]["sum_received"]
    except (ValueError, KeyError):
        return {**result, "status": "error", "reason": (out.stdout + out.stderr)[-500:]}
    if out.returncode != 0 or not received.get("bytes") or not received.get("seconds"):
        # Stopped early (a signal to iperf3 alone), its report is still JSON, of a run that carried nothing.
        return {**result, "status": "error", "reason": f"iperf3 exited with status {out.returncode} after "
                                                       f"{received.get('bytes', 0)} bytes: {out.stderr.strip()[-300:]}"}
    return {**result, "status": "ok", "figures": {
        "goodput_MB_per_s": received["bytes"] / received["seconds"] / 1e6,
        "bits_per_second": received["bits_per_second"],
    }}
