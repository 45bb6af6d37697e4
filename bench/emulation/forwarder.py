"""The TUN forwarder: delay, jitter, reordering and duplication in user space.

It runs inside the router namespace (``python -m bench.emulation.forwarder ...``, started by
:class:`~bench.emulation.network.EmulatedNetwork`).  Policy routing in the router sends every
packet arriving from the client side or the server side into the TUN device this process opens.
Each packet read from the TUN is given a :class:`~bench.emulation.impair.Fate`, parked in a timer
heap, and at its release time written back into the same TUN device; the kernel then sees it
arrive *from* the TUN and routes it on by its destination (the main table) to the other side::

    client --veth--> router --(policy route)--> tun --> [this process] --> tun --> router --veth--> server

Which direction a packet travels is told by its IPv4 destination: inside the server subnet means
``up`` (client -> server), anything else ``down``.

Control: one line ``stats`` on stdin is answered by one JSON line of counters on stdout; end of
stdin (the parent went away) stops the process, so a crashed parent never leaves a forwarder
running; SIGINT (a Ctrl-C meant for the parent) is ignored.  With ``--detached`` (``python -m
bench.emulation up``) stdin is not read; SIGUSR1 writes the counters to ``--stats-file`` instead.
SIGTERM (and, detached, SIGINT) stops it.

When nothing is delayed the packet is written back in the same loop iteration it was read in,
so the forwarder adds only two system calls' worth of latency (tens of microseconds).
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import ipaddress
import json
import os
import select
import signal
import struct
import sys
import time

from .impair import Impairer
from .spec import LinkSpec

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
READ_BATCH = 64   # packets read per wake-up before due packets are written out


def open_tun(name: str) -> int:
    """Create (or attach to) the TUN device ``name``; returns a non-blocking file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def packet_direction(packet: bytes, server_net: ipaddress.IPv4Network) -> str | None:
    """``up`` / ``down`` for an IPv4 packet, None for anything else (passed through untouched)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    dst = ipaddress.IPv4Address(packet[16:20])
    return "up" if dst in server_net else "down"


class Forwarder:
    def __init__(self, tun_fd: int, up: LinkSpec, down: LinkSpec, server_net: str, loss_here: bool):
        self.tun_fd = tun_fd
        self.server_net = ipaddress.IPv4Network(server_net)
        self.impairers = {
            "up": Impairer(up, "up", apply_loss=loss_here),
            "down": Impairer(down, "down", apply_loss=loss_here),
        }
        self.heap: list[tuple[float, int, bytes]] = []
        self.sequence = 0            # tie-breaker: equal release times leave in arrival order
        self.passed_through = 0      # non-IPv4 packets
        self.write_errors = 0

    def counters(self) -> dict:
        out = {d: imp.counters.as_dict() for d, imp in self.impairers.items()}
        out["passed_through"] = self.passed_through
        out["write_errors"] = self.write_errors
        out["queued"] = len(self.heap)
        return out

    def read_packets(self, now: float) -> None:
        for _ in range(READ_BATCH):
            try:
                packet = os.read(self.tun_fd, MAX_PACKET)
            except BlockingIOError:
                return
            direction = packet_direction(packet, self.server_net)
            if direction is None:
                self.passed_through += 1
                self.write(packet)
                continue
            for release_at in self.impairers[direction].decide(now).release_at:
                heapq.heappush(self.heap, (release_at, self.sequence, packet))
                self.sequence += 1

    def write_due(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            _, _, packet = heapq.heappop(self.heap)
            self.write(packet)

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.tun_fd, packet)
        except OSError:
            # e.g. no route back for a packet: count it, never crash the link
            self.write_errors += 1

    def timeout(self, now: float) -> float | None:
        return max(0.0, self.heap[0][0] - now) if self.heap else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tun", required=True)
    p.add_argument("--up", required=True, help="LinkSpec of client->server as JSON")
    p.add_argument("--down", required=True, help="LinkSpec of server->client as JSON")
    p.add_argument("--server-net", required=True)
    p.add_argument("--loss-here", action="store_true", help="drop packets here (seeded) instead of in nftables")
    p.add_argument("--detached", action="store_true", help="do not read stdin; SIGUSR1 writes --stats-file")
    p.add_argument("--stats-file")
    p.add_argument("--tag", default="", help="the run's name prefix, so leftovers can be found")
    args = p.parse_args(argv)

    fd = open_tun(args.tun)
    fwd = Forwarder(fd, LinkSpec.from_dict(json.loads(args.up)), LinkSpec.from_dict(json.loads(args.down)),
                    args.server_net, args.loss_here)

    def write_stats_file() -> None:
        if args.stats_file:
            tmp = args.stats_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(fwd.counters(), f)
            os.replace(tmp, args.stats_file)

    stopping = False

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    if args.detached:
        signal.signal(signal.SIGINT, on_term)
    else:
        # Ctrl-C in a terminal reaches the whole process group, us included.  Our parent decides
        # when the link goes away (it closes our stdin): a program that catches the Ctrl-C and
        # carries on must not find its link dead.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda s, f: write_stats_file())

    # select() is restarted after a signal handler returns (PEP 475), so a SIGTERM alone would not
    # end a select() that waits without a timeout.  The wake-up pipe makes the signal readable.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)

    watch = [fd, wake_read] if args.detached else [fd, wake_read, sys.stdin.fileno()]
    control = b""
    print("ready", flush=True)
    while not stopping:
        # select() takes a microsecond timeout (epoll only milliseconds): delays stay accurate.
        readable, _, _ = select.select(watch, [], [], fwd.timeout(time.monotonic()))
        now = time.monotonic()
        if fd in readable:
            fwd.read_packets(now)
        fwd.write_due(now)
        if wake_read in readable:
            os.read(wake_read, 512)         # the signal's handler has run already
        if len(watch) > 2 and watch[2] in readable:
            # os.read, not sys.stdin: a buffered reader could swallow a line select() never reports
            chunk = os.read(watch[2], 4096)
            if not chunk:
                break                       # parent gone: stop, leave nothing behind
            control += chunk
            while b"\n" in control:
                line, control = control.split(b"\n", 1)
                if line.strip() == b"stats":
                    print(json.dumps(fwd.counters()), flush=True)
    write_stats_file()
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
