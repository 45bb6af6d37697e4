"""Runs one scenario: a fresh server process, the workload, the server's CPU and memory.

A fresh server per scenario keeps scenarios independent (no backlog or warm cache
carried over) and makes the peak-memory figure belong to that scenario alone.
With `remote` set (--server HOST:PORT) the bench uses that server instead and the
server-side figures are None.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hellohi.launcher import REPO_ROOT, start_server

from . import procstats
from .clients import ProtocolUnavailable, client_factory, server_program
from .workloads import RUNNERS, Endpoint, Scenario

# KCP workloads: protocol is "kcp-<mode>" (mode: default, normal, fast).
#   kcp-test      KCP's own test replayed on a virtual clock (bench/kcp_peer.py)
#   kcp-pingpong  echo ping-pong over real UDP to `python -m bench.kcp_peer serve`
KCP_WORKLOADS = ("kcp-test", "kcp-pingpong")

# Bench servers accept a deep backlog so a fast sender is measured, not refused (429).
SERVER_ARGS = ["--max-waiting", "1000000"]


def run_scenario(sc: Scenario, remote: tuple[str, int] | None = None,
                 command_prefix: list[str] | None = None, host: str = "127.0.0.1") -> dict:
    result: dict = {"id": sc.id, "config": sc.as_dict(), "status": "ok"}
    if sc.workload in KCP_WORKLOADS:
        return _run_kcp(sc, result, command_prefix, host)
    try:
        client_factory(sc.protocol)
        package, extra = server_program(sc.protocol) if remote is None else (None, [])
    except ProtocolUnavailable as error:
        result.update(status="unavailable", reason=str(error))
        return result
    runner = RUNNERS[sc.workload]
    with tempfile.TemporaryDirectory(prefix="hellohi-bench-") as tmp:
        server = None
        if remote is None:
            server_args = ["--store", str(Path(tmp) / "store.sqlite3"), *SERVER_ARGS, *extra]
            log = open(Path(tmp) / "server.log", "w")
            server = start_server(package, server_args, host=host, stderr=log,
                                  command_prefix=command_prefix)
            endpoint = Endpoint(server.host, server.port)
            result["server"] = {"argv": server.args, "pid": server.process.pid}
        else:
            endpoint = Endpoint(*remote)
            result["server"] = {"remote": f"{remote[0]}:{remote[1]}"}
        cpu_before = procstats.cpu_seconds(server.process.pid) if server else None
        wall = time.perf_counter()
        try:
            result["figures"] = asyncio.run(runner(endpoint, sc))
        except Exception as error:  # a failed scenario is reported, the run goes on
            result.update(status="error", reason=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc(limit=5))
        result["wall_s"] = time.perf_counter() - wall
        if server:
            cpu_after = procstats.cpu_seconds(server.process.pid)
            result["server"]["cpu_s"] = (cpu_after - cpu_before
                                         if cpu_after is not None and cpu_before is not None else None)
            result["server"]["peak_rss_bytes"] = procstats.peak_rss_bytes(server.process.pid)
            server.stop()
            log.close()
    return result


def _run_kcp(sc: Scenario, result: dict, command_prefix, host: str) -> dict:
    from . import kcp_peer

    why = kcp_peer.kcp_available()
    mode = sc.protocol.removeprefix("kcp-")
    if why is None and mode not in kcp_peer.MODES:
        why = f"unknown KCP mode {mode!r}; protocol must be one of kcp-{', kcp-'.join(kcp_peer.MODES)}"
    if why is not None:
        result.update(status="unavailable", reason=why)
        return result
    wall = time.perf_counter()
    try:
        if sc.workload == "kcp-test":
            scenario = kcp_peer.KcpScenario(echoes=sc.count, payload=sc.payload, seed=sc.seed)
            result["config"]["kcp_scenario"] = scenario.as_dict()
            result["figures"] = kcp_peer.simulate_kcp(mode, scenario)
        else:
            argv = [sys.executable, "-m", "bench.kcp_peer", "serve", "--host", host, "--port", "0", "--mode", mode]
            server = subprocess.Popen((command_prefix or []) + argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
            try:
                banner = server.stdout.readline()
                port = int(banner.strip().rsplit(":", 1)[1])
                result["server"] = {"argv": argv, "pid": server.pid}
                cpu_before = procstats.cpu_seconds(server.pid)
                result["figures"] = asyncio.run(kcp_peer.kcp_udp_pingpong(
                    host, port, mode, sc.count, sc.payload, sc.warmup, sc.timeout))
                cpu_after = procstats.cpu_seconds(server.pid)
                result["server"]["cpu_s"] = (cpu_after - cpu_before) if None not in (cpu_after, cpu_before) else None
                result["server"]["peak_rss_bytes"] = procstats.peak_rss_bytes(server.pid)
            finally:
                server.terminate()
                server.wait(timeout=10)
    except Exception as error:
        result.update(status="error", reason=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=5))
    result["wall_s"] = time.perf_counter() - wall
    return result
