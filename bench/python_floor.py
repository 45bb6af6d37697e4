"""The CPython floor: ping-pongs with no protocol, or the least one, measured in the same run.

sockperf shows what the kernel costs for a round trip. This shows what Python
adds before hellohi does anything: an asyncio echo server (one callback per
arrival, one write back: the least any asyncio server can do) answering a
blocking Python client, over TCP and over UDP. hellohi's Hello/HI round trip
can only be as fast as this plus its own protocol work, so the distance between
this floor and sockperf's is the part of the 1.6x budget that the interpreter
has already spent.

One step up, over UDP: **stop-and-wait**, the least that makes a Hello/HI
reliable. Each Hello carries a number and its answer repeats it, which is the
acknowledgement. The client sends the same datagram again when no answer comes
in time; the server remembers its last answer to each client and sends it again
for a repeated number instead of doing the work twice. That is exactly once and
in order, for one request at a time, in a dozen lines. hellohi's UDP layer does
far more (a window of packets in flight, selective acks, RTT estimation,
congestion control, messages the server sends first, sessions that survive an
address change), so the distance from this floor to hellohi over UDP with acks
is what those features cost per round trip.

    python -m bench.python_floor serve tcp|udp|stop-and-wait 127.0.0.1 PORT   (the server)
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
import time
from typing import Callable

from hellohi import eventloop
from hellohi.launcher import REPO_ROOT

from .baselines import free_port
from .cores import on_core, pinning, running_on
from .stats import ROUND_TRIP, LatencyRecorder

ANSWER = b"HI floor hellohi/1 15000\n"  # as long as a real HI
WARMUP = 100  # round trips before the measured ones

# Stop-and-wait: a Hello starts with its number, and the answer with the same number.
REQUEST_NUMBER = struct.Struct("!I")
RETRANSMIT_AFTER = 0.2  # seconds without an answer before the client sends the Hello again
MAX_TRIES = 10  # sends of one Hello before the client gives up


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


class _UdpStopAndWait(asyncio.DatagramProtocol):
    """Answers each numbered Hello once; a repeat (the client did not hear the answer) gets the same answer again."""

    def __init__(self) -> None:
        # address -> the last answer sent there, which starts with the number it answers.
        # One entry per client: the bench's clients are few and the server lives seconds.
        self.last_answer: dict = {}
        self.answered = 0  # Hellos answered for the first time: the work done, once each

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, address) -> None:
        number = data[:REQUEST_NUMBER.size]
        answer = self.last_answer.get(address)
        if answer is None or answer[:REQUEST_NUMBER.size] != number:
            answer = self.last_answer[address] = number + ANSWER
            self.answered += 1
        self.transport.sendto(answer, address)


SERVERS = {"tcp": _TcpEcho, "udp": _UdpEcho, "stop-and-wait": _UdpStopAndWait}


async def _serve(kind: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    if kind == "tcp":
        await loop.create_server(_TcpEcho, host, port)
    else:
        await loop.create_datagram_endpoint(SERVERS[kind], local_addr=(host, port))
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


class _StopAndWaitClient:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.number = 0
        self.retransmissions = 0

    def hello(self) -> None:
        """Say Hello and wait for its answer, sending it again after each RETRANSMIT_AFTER of silence."""
        self.number = (self.number + 1) % 2**32
        request = REQUEST_NUMBER.pack(self.number) + b"Hello\n"
        for attempt in range(MAX_TRIES):
            if attempt:
                self.retransmissions += 1
            self.sock.send(request)
            try:
                # An answer with another number answers an earlier copy of an earlier
                # Hello that came late: it was counted then, so it is dropped here.
                while self.sock.recv(4096)[:REQUEST_NUMBER.size] != request[:REQUEST_NUMBER.size]:
                    pass
                return
            except socket.timeout:
                continue
        raise TimeoutError(f"no answer to Hello #{self.number} after {MAX_TRIES} sends")


def echo_pingpong(protocol: str, seconds: float = 2.0, host: str = "127.0.0.1") -> dict:
    """Round trips of a 6-byte request ("Hello\\n") for `seconds`, as a baseline result."""
    def round_trip(sock: socket.socket) -> Callable[[], None]:
        def echo() -> None:
            sock.send(b"Hello\n")
            if not sock.recv(4096):
                raise ConnectionError("the echo server closed the connection")
        return echo

    return _pingpong(protocol, protocol, f"python-echo-{protocol}", seconds, host, round_trip)


def stop_and_wait_pingpong(seconds: float = 2.0, host: str = "127.0.0.1") -> dict:
    """Numbered Hellos, each answered exactly once and sent again if unanswered, for `seconds` (UDP)."""
    clients: list[_StopAndWaitClient] = []

    def round_trip(sock: socket.socket) -> Callable[[], None]:
        sock.settimeout(RETRANSMIT_AFTER)
        clients.append(_StopAndWaitClient(sock))
        return clients[-1].hello

    result = _pingpong("stop-and-wait", "udp", "python-stop-and-wait-udp", seconds, host, round_trip)
    if result["status"] == "ok":
        result["config"].update(retransmit_after_s=RETRANSMIT_AFTER, max_tries=MAX_TRIES)
        result["figures"]["retransmissions"] = clients[0].retransmissions
    return result


def _pingpong(kind: str, protocol: str, test: str, seconds: float, host: str,
              round_trip: Callable[[socket.socket], Callable[[], None]]) -> dict:
    """Start the `kind` server and time `round_trip(sock)()`, one round trip, again and again for `seconds`:
    the client (this thread) on one core, the server on another, as sockperf's (bench/cores.py)."""
    pin = pinning()
    result = {"tool": "python-asyncio-echo", "test": test,
              "config": {"protocol": protocol, "seconds": seconds, "host": host, "python": sys.version.split()[0],
                         "event_loop": eventloop.resolve(),
                         "cores": pin.config}}
    port = free_port(socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM, host)
    # A session of its own: a Ctrl-C in the terminal (sent to the bench's process group)
    # does not reach it, where it would only print a traceback amid the bench's output.
    # The bench ends it by closing its stdin, also when it is interrupted.
    server = subprocess.Popen([*on_core(pin.server), sys.executable, "-m", "bench.python_floor", "serve", kind, host,
                               str(port)],
                              cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    rtt = LatencyRecorder(ROUND_TRIP)
    try:
        if server.stdout.readline().strip() != b"ready":
            return {**result, "status": "error", "reason": f"the {kind} server did not start"}
        with _connect(protocol, host, port) as sock, running_on(pin.client):
            one_round_trip = round_trip(sock)
            end = time.monotonic() + seconds
            warmup = WARMUP
            while time.monotonic() < end:
                start = time.perf_counter_ns()
                one_round_trip()
                if warmup:
                    warmup -= 1
                else:
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
    if len(argv) != 4 or argv[0] != "serve" or argv[1] not in SERVERS:
        raise SystemExit(f"usage: python -m bench.python_floor serve {'|'.join(SERVERS)} HOST PORT")
    eventloop.run(_serve(argv[1], argv[2], int(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
