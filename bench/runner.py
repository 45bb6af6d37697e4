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
                 command_prefix: list[str] | None = None, host: str = "127.0.0.1", net=None) -> dict:
    result: dict = {"id": sc.id, "config": sc.as_dict(), "status": "ok"}
    if net is not None:
        return run_emulated(sc, net, result)
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


# --------------------------------------------------------------------- emulated hosts


def _delta(before: dict, after: dict) -> dict:
    """Counter differences, nested by direction (counters only grow)."""
    out = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out[key] = _delta(before.get(key, {}), value)
        elif isinstance(value, (int, float)):
            out[key] = value - before.get(key, 0)
    return out


def run_emulated(sc: Scenario, net, result: dict) -> dict:
    """Server in the server host's namespace, the workload in a client host's namespace
    (python -m bench.worker), joined by the impaired link of bench/emulation."""
    import json

    from hellohi.launcher import LISTENING

    if sc.workload == "kcp-test":
        result.update(status="unavailable", reason="kcp-test runs on its own simulated link, not an emulated one")
        return result
    if sc.workload == "kcp-pingpong":
        from . import kcp_peer

        if (why := kcp_peer.kcp_available()) is not None:
            result.update(status="unavailable", reason=why)
            return result
        server_argv = [sys.executable, "-m", "bench.kcp_peer", "serve", "--host", net.server_addr,
                       "--port", "0", "--mode", sc.protocol.removeprefix("kcp-")]
    else:
        try:
            client_factory(sc.protocol)
            package, extra = server_program(sc.protocol)
        except ProtocolUnavailable as error:
            result.update(status="unavailable", reason=str(error))
            return result
        server_argv = None
    result["link"] = {"kind": "emulated", "backend": net.backend,
                      "up": net.up.to_dict(), "down": net.down.to_dict()}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hellohi-bench-") as tmp:
        if server_argv is None:
            server_argv = [sys.executable, "-m", f"{package}.server", "--host", net.server_addr, "--port", "0",
                           "--store", str(Path(tmp) / "store.sqlite3"), *SERVER_ARGS, *extra]
        log = open(Path(tmp) / "server.log", "w")
        server = net.popen(net.server_ns, server_argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                           stderr=log, text=True)
        try:
            banner = server.stdout.readline()
            match = LISTENING.search(banner)
            if not match:
                raise RuntimeError(f"server did not start: {banner.strip()!r}")
            port = int(match.group(2))
            result["server"] = {"argv": server_argv, "pid": server.pid}
            cpu_before = procstats.cpu_seconds(server.pid)
            counters_before = net.counters()
            done = net.run(net.client_ns[0], [sys.executable, "-m", "bench.worker", net.server_addr, str(port),
                                               json.dumps(sc.as_dict())],
                           cwd=REPO_ROOT, check=False, timeout=max(60, sc.count * sc.timeout))
            result["link"]["counters"] = _delta(counters_before, net.counters())
            if done.returncode != 0:
                raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-800:]}")
            result["figures"] = json.loads(done.stdout.strip().splitlines()[-1])
            cpu_after = procstats.cpu_seconds(server.pid)
            result["server"]["cpu_s"] = (cpu_after - cpu_before) if None not in (cpu_after, cpu_before) else None
            result["server"]["peak_rss_bytes"] = procstats.peak_rss_bytes(server.pid)
        except Exception as error:
            result.update(status="error", reason=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc(limit=5))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    result["wall_s"] = time.perf_counter() - wall
    return result
