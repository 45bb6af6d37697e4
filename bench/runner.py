"""Runs one scenario: a fresh server process, the workload, the server's CPU and memory.

A fresh server per scenario keeps scenarios independent (no backlog or warm cache
carried over) and makes the peak-memory figure belong to that scenario alone.
With `remote` set (--server HOST:PORT) the bench uses that server instead and the
server-side figures are None.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hellohi import eventloop
from hellohi.launcher import REPO_ROOT, start_server

from . import procstats
from .clients import ProtocolUnavailable, client_factory, plain_frame_problem, server_program
from .workloads import RUNNERS, Endpoint, Scenario, longest_body_names

# KCP workloads: protocol is "kcp-<mode>" (mode: default, normal, fast); kcp-test also
# takes udp and udp-turbo (hellohi's reliability layer on KCP's simulated link).
#   kcp-test      KCP's own test replayed on a virtual clock (bench/kcp_peer.py)
#   kcp-pingpong  echo ping-pong over real UDP to `python -m bench.kcp_peer serve`
KCP_WORKLOADS = ("kcp-test", "kcp-pingpong")

# Workloads whose messages carry a body of `payload` bytes (hello and the KCP ones do not
# go through a hellohi message body).
BODY_WORKLOADS = ("relay", "throughput", "throughput-raw", "fanin", "fanout", "drain")
# Workloads with a client of their own that speaks TCP only (bench/throughput_raw.py).
TCP_ONLY_WORKLOADS = ("throughput-raw",)

# Bench servers accept a deep backlog so a fast sender is measured, not refused (429).
SERVER_ARGS = ["--max-waiting", "1000000"]


def run_scenario(sc: Scenario, remote: tuple[str, int] | None = None,
                 command_prefix: list[str] | None = None, host: str = "127.0.0.1", net=None) -> dict:
    """Run one scenario and return its result; never raises for a scenario's own failure
    (a server that does not start, a workload that crashes): those become status "error"
    with the reason, so the rest of the run goes on and its results are still written."""
    result: dict = {"id": sc.id, "config": sc.as_dict(), "status": "ok"}
    if sc.workload in TCP_ONLY_WORKLOADS and sc.protocol != "tcp":
        result.update(status="unavailable", reason=f"{sc.workload} has a TCP client only; for {sc.protocol} use throughput")
        return result
    # Names of this scenario's own against --server (see Endpoint): the server keeps what earlier runs left.
    name_suffix = f"-{secrets.token_hex(4)}" if remote is not None else ""
    if (sc.workload in BODY_WORKLOADS
            and (why := plain_frame_problem(sc.protocol, sc.payload, *longest_body_names(sc, name_suffix))) is not None):
        result.update(status="not_applicable", reason=why)
        return result
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
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hellohi-bench-") as tmp:
        server = None
        cpu_before = None
        log_path = Path(tmp) / "server.log"
        # One try from the server's start to its stop, so that a Ctrl-C anywhere in
        # between (KeyboardInterrupt is not an Exception) still stops it.
        try:
            if remote is None:
                server_args = ["--store", str(Path(tmp) / "store.sqlite3"), *SERVER_ARGS, *extra]
                try:
                    with open(log_path, "w") as log:
                        server = start_server(package, server_args, host=host, stderr=log,
                                              command_prefix=command_prefix)
                except Exception as error:  # the server did not start: say why, run the next scenario
                    result.update(status="error", reason=f"server did not start: {type(error).__name__}: {error}"
                                  + _log_tail(log_path), wall_s=time.perf_counter() - wall)
                    return result
                endpoint = Endpoint(server.host, server.port)
                result["server"] = {"argv": server.args, "pid": server.process.pid}
                cpu_before = procstats.cpu_seconds(server.process.pid)
            else:
                endpoint = Endpoint(*remote, name_suffix=name_suffix)
                result["server"] = {"remote": f"{remote[0]}:{remote[1]}"}
            try:
                result["figures"] = eventloop.run(runner(endpoint, sc))
            except Exception as error:  # a failed scenario is reported, the run goes on
                result.update(status="error", reason=f"{type(error).__name__}: {error}",
                              traceback=traceback.format_exc(limit=5))
                result.pop("figures", None)
        finally:
            if server:
                cpu_after = procstats.cpu_seconds(server.process.pid)
                costs = result.setdefault("server", {})  # (not there yet after an early Ctrl-C)
                costs["cpu_s"] = (cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None)
                costs["peak_rss_bytes"] = procstats.peak_rss_bytes(server.process.pid)
                server.stop()
        result["wall_s"] = time.perf_counter() - wall
    return result


def _log_tail(path: Path, chars: int = 400) -> str:
    """The end of a server's stderr, which usually says why it stopped."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f"; its stderr ends: {text[-chars:]}" if text else ""


# kcp-test can also replay KCP's test with hellohi's own reliability layer on the same
# simulated link: protocol -> preset of hellohi.reliable (no kcp package needed).
RELIABLE_ON_KCP_LINK = {"udp": "default", "udp-turbo": "turbo"}


def _run_kcp(sc: Scenario, result: dict, command_prefix, host: str) -> dict:
    from . import kcp_peer

    if sc.protocol in RELIABLE_ON_KCP_LINK:
        if sc.workload != "kcp-test":
            result.update(status="unavailable",
                          reason=f"{sc.workload} is KCP's own echo server; measure {sc.protocol} with hello or relay")
            return result
        wall = time.perf_counter()
        try:
            scenario = kcp_peer.KcpScenario(echoes=sc.count, payload=sc.payload, seed=sc.seed)
            result["config"]["kcp_scenario"] = scenario.as_dict()
            result["figures"] = kcp_peer.simulate_reliable(RELIABLE_ON_KCP_LINK[sc.protocol], scenario)
        except Exception as error:
            result.update(status="error", reason=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc(limit=5))
        result["wall_s"] = time.perf_counter() - wall
        return result
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
                result["figures"] = eventloop.run(kcp_peer.kcp_udp_pingpong(
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
                      "up": net.up.to_dict(), "down": net.down.to_dict(),
                      "tcp_congestion_control": {host: net.tcp_congestion_control(host) for host in ("client", "server")}}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hellohi-bench-") as tmp:
        if server_argv is None:
            server_argv = [sys.executable, "-m", f"{package}.server", "--host", net.server_addr, "--port", "0",
                           "--store", str(Path(tmp) / "store.sqlite3"), *SERVER_ARGS, *extra]
        log = open(Path(tmp) / "server.log", "w")
        try:
            server = net.popen(net.server_ns, server_argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=log, text=True)
        except Exception as error:  # could not even start it: report, go on with the run
            log.close()
            result.update(status="error", reason=f"server did not start: {type(error).__name__}: {error}",
                          wall_s=time.perf_counter() - wall)
            return result
        try:
            banner = server.stdout.readline()
            match = LISTENING.search(banner)
            if not match:
                server.wait(timeout=5)  # it exited (or is about to): its stderr says why
                log.flush()
                raise RuntimeError(f"server did not start: {banner.strip()!r}"
                                   + _log_tail(Path(tmp) / "server.log"))
            port = int(match.group(2))
            result["server"] = {"argv": server_argv, "pid": server.pid}
            cpu_before = procstats.cpu_seconds(server.pid)
            counters_before = net.counters()
            tcp_before = {host: net.tcp_counters(host) for host in ("client", "server")}
            done = net.run(net.client_ns[0], [sys.executable, "-m", "bench.worker", net.server_addr, str(port),
                                               json.dumps(sc.as_dict())],
                           cwd=REPO_ROOT, check=False, timeout=max(60, sc.count * sc.timeout))
            result["link"]["counters"] = _delta(counters_before, net.counters())
            if done.returncode != 0:
                raise RuntimeError(f"worker failed ({done.returncode}): {done.stderr[-800:]}")
            result["figures"] = json.loads(done.stdout.strip().splitlines()[-1])
            if sc.protocol == "tcp":
                result["figures"]["tcp_counters"] = {host: _delta(tcp_before[host], net.tcp_counters(host))
                                                     for host in ("client", "server")}
            add_retransmission_ratio(result["figures"], net.up.loss, result["link"]["counters"]["up"])
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


def add_retransmission_ratio(figures: dict, loss: float, up_counters: dict | None = None) -> None:
    """figures.retransmission_ratio = retransmissions / the loss-implied minimum, where the
    link's loss share is known (emulated links: the client -> server direction's loss).

    The clients' data packets all cross the client -> server link, which drops a share
    `p` of them, so together they need at least
        minimum = sum over senders of packets_sent * p / (1 - p)
    retransmissions (bench.kcp_peer.loss_implied_minimum). 1.0 is the ideal sender;
    above it are spurious retransmissions (or lost acks). Nothing is added without UDP
    counters (tcp, plain UDP) or without configured loss.

    `p` is the share the link really dropped in this scenario when its counters are
    given (`up_counters`, from EmulatedNetwork.counters()), else the configured `loss`.
    The link draws its drops at random, so in a scenario of a thousand packets it may
    drop 4 % or 6 % where 5 % is configured; judged against the configured share, the
    same sender would read 1.0 on one run and 1.3 on the next by the link's luck."""
    from .kcp_peer import loss_implied_minimum

    counters = figures.get("udp_counters")
    if not counters or not loss:
        return
    measured = measured_loss_share(up_counters) if up_counters else None
    share = loss if measured is None else measured
    # A link that dropped every packet needs endless retransmissions: there is no minimum.
    minimum = loss_implied_minimum(counters["packets_sent"], share) if share < 1 else None
    figures["loss_share"] = {"configured": loss, "measured": measured}
    figures["loss_implied_min_retransmissions"] = minimum
    figures["retransmission_ratio"] = counters["retransmitted"] / minimum if minimum else None


def measured_loss_share(direction: dict) -> float | None:
    """The share of packets one direction of an emulated link dropped (nftables or the
    forwarder), out of every packet that entered it; None if none entered."""
    seen = direction.get("nft_seen", 0)
    if not seen:
        return None
    return (direction.get("nft_dropped", 0) + direction.get("fwd_dropped", 0)) / seen
