"""The CPython floor: a ping-pong with no protocol at all, measured in the same run.

sockperf shows what the kernel costs for a round trip. This shows what Python
adds before hellohi does anything: an asyncio echo server (one callback per
arrival, one write back: the least any asyncio server can do) answering a
blocking Python client, over TCP and over UDP. hellohi's Hello/HI round trip
can only be as fast as this plus its own protocol work, so the distance between
this floor and sockperf's is the part of the 1.6x budget that the interpreter
has already spent.

    python -m bench.python_floor serve tcp 127.0.0.1 PORT     (the echo server)
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

from hellohi import eventloop
from hellohi.launcher import REPO_ROOT

from .baselines import free_port
from .stats import ROUND_TRIP, LatencyRecorder

ANSWER = b"HI floor hellohi/1 15000\n"  # as long as a real HI


class _TcpEcho(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(ANSWER)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, address) -> None:
        self.transport.sendto(ANSWER, address)


async def _serve(protocol: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if protocol == "tcp":
        await loop.create_server(_TcpEcho, host, port)
    else:
        await loop.create_datagram_endpoint(_UdpEcho, local_addr=(host, port))
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin


def _connect(protocol: str, host: str, port: int, timeout: float = 5.0) -> socket.socket:
    if protocol == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, port))
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    return sock


def echo_pingpong(protocol: str, seconds: float = 2.0, host: str = "127.0.0.1") -> dict:
    """Round trips of a 6-byte request ("Hello\\n") for `seconds`, as a baseline result."""
    result = {"tool": "python-asyncio-echo", "test": f"python-echo-{protocol}",
              "config": {"protocol": protocol, "seconds": seconds, "host": host, "python": sys.version.split()[0],
                         "event_loop": eventloop.resolve()}}
    port = free_port(socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM, host)
    # A session of its own: a Ctrl-C in the terminal (sent to the bench's process group)
    # does not reach it, where it would only print a traceback amid the bench's output.
    # The bench ends it by closing its stdin, also when it is interrupted.
    server = subprocess.Popen([sys.executable, "-m", "bench.python_floor", "serve", protocol, host, str(port)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    rtt = LatencyRecorder(ROUND_TRIP)
    try:
        if server.stdout.readline().strip() != b"ready":
            return {**result, "status": "error", "reason": "the echo server did not start"}
        with _connect(protocol, host, port) as sock:
            end = time.monotonic() + seconds
            warmup = 100
            while time.monotonic() < end:
                start = time.perf_counter_ns()
                sock.send(b"Hello\n")
                answer = sock.recv(4096)
                if warmup:
                    warmup -= 1
                elif answer:
                    rtt.add(time.perf_counter_ns() - start)
    except OSError as error:
        return {**result, "status": "error", "reason": f"{type(error).__name__}: {error}"}
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {**result, "status": "ok", "figures": {"latency": rtt.summary()}}


def main(argv: list[str]) -> None:
    if len(argv) != 4 or argv[0] != "serve" or argv[1] not in ("tcp", "udp"):
        raise SystemExit("usage: python -m bench.python_floor serve tcp|udp HOST PORT")
    eventloop.run(_serve(argv[1], argv[2], int(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
