"""Tiny probes to see what an emulated link does (used by the tests; handy by hand, no ping needed).

Run them inside the namespaces of a run (``python -m bench.emulation status`` prints the names)::

    ip netns exec <run>-s python -m bench.emulation.probe udp-echo --bind 198.18.2.2 --port 7
    ip netns exec <run>-c0 python -m bench.emulation.probe udp-ping --to 198.18.2.2:7 --count 100

    ip netns exec <run>-s python -m bench.emulation.probe tcp-sink --bind 198.18.2.2 --port 9
    ip netns exec <run>-c0 python -m bench.emulation.probe tcp-send --to 198.18.2.2:9 --seconds 2

``udp-ping`` and ``tcp-send`` print one JSON object: what was sent, what came back, RTTs (round
trip, milliseconds), and for TCP the retransmitted segments of the client's namespace
(RetransSegs in /proc/net/snmp, which is per network namespace).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

HEADER = struct.Struct("!IQ")   # sequence number, send time in ns (client's monotonic clock)


def udp_echo(bind: str, port: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def udp_ping(host: str, port: int, count: int, interval: float, size: int, wait: float) -> dict:
    """Send ``count`` numbered datagrams every ``interval`` s; collect echoes until ``wait`` s after the last."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.setblocking(False)
    padding = b"\0" * max(0, size - HEADER.size)
    received: list[int] = []
    rtts: list[float] = []
    seen: set[int] = set()
    duplicates = reordered = 0
    highest = -1
    sent = 0
    next_send = time.monotonic()
    deadline = None
    while True:
        now = time.monotonic()
        if sent < count and now >= next_send:
            sock.send(HEADER.pack(sent, time.monotonic_ns()) + padding)
            sent += 1
            next_send += interval
            if sent == count:
                deadline = time.monotonic() + wait
            continue
        if deadline is not None and now >= deadline:
            break
        until = next_send if sent < count else deadline
        readable, _, _ = select.select([sock], [], [], max(0.0, until - now))
        while readable:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, ConnectionRefusedError):
                break
            seq, sent_ns = HEADER.unpack_from(data)
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
            received.append(seq)
            rtts.append((time.monotonic_ns() - sent_ns) / 1e6)
    rtts_sorted = sorted(rtts)
    return {
        "sent": sent, "received": len(received), "duplicates": duplicates, "reordered": reordered,
        "rtt_ms_min": rtts_sorted[0] if rtts else None,
        "rtt_ms_p50": rtts_sorted[len(rtts) // 2] if rtts else None,
        "rtt_ms_max": rtts_sorted[-1] if rtts else None,
        "received_seqs": received,
    }


def tcp_sink(bind: str, port: int) -> int:
    """Count the bytes of each connection until the peer's FIN, then answer with the count."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((bind, port))
    server.listen()
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            total = 0
            while chunk := conn.recv(1 << 16):
                total += len(chunk)
            conn.sendall(f"{total}\n".encode())


def _retrans_segs() -> int:
    """RetransSegs of this network namespace (the Tcp: lines of /proc/net/snmp)."""
    lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def connect(host: str, port: int, retry_after: float | None) -> tuple[socket.socket, int]:
    """Connect; with ``retry_after``, give up on a handshake that takes longer and start afresh.

    Why retry: when a SYN or SYN-ACK is lost, TCP waits a whole second (RFC 6298's initial RTO)
    and then, as RFC 6298 section 5.7 asks, starts the connection with a 3 s RTO and a congestion
    window of one segment.  On a very lossy link that makes a short transfer crawl for tens of
    seconds.  A new connection attempt (new SYN, new port) avoids that when a test wants to look
    at the data, not the handshake.  Returns the socket and the number of attempts.
    """
    attempts = 0
    while True:
        attempts += 1
        try:
            sock = socket.create_connection((host, port), timeout=retry_after or 60)
        except socket.timeout:
            if retry_after is None or attempts >= 100:
                raise
            continue
        sock.settimeout(60)
        return sock, attempts


def tcp_send(host: str, port: int, seconds: float, chunk: int, total: int | None = None,
             connect_retry: float | None = None) -> dict:
    """Write ``chunk``-byte pieces for ``seconds`` (or until ``total`` bytes), close, and compare
    with what the sink counted."""
    retrans_before = _retrans_segs()
    connect_start = time.monotonic()
    sock, attempts = connect(host, port, connect_retry)
    connect_ms = (time.monotonic() - connect_start) * 1000   # the handshake: one round trip
    start = time.monotonic()   # after the handshake: a lost SYN must not eat the sending time
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    piece = b"x" * chunk
    sent = 0
    while (sent < total) if total is not None else (time.monotonic() - start < seconds):
        sock.sendall(piece)
        sent += chunk
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        data = sock.recv(64)
        if not data:
            break
        reply += data
    sock.close()
    return {"sent_bytes": sent, "sink_bytes": int(reply or b"-1"), "seconds": time.monotonic() - start,
            "connect_ms": connect_ms, "connect_attempts": attempts,
            "retrans_segs": _retrans_segs() - retrans_before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="probes for an emulated link")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("udp-echo", "tcp-sink"):
        s = sub.add_parser(name)
        s.add_argument("--bind", default="0.0.0.0")
        s.add_argument("--port", type=int, required=True)
    s = sub.add_parser("udp-ping")
    s.add_argument("--to", required=True, help="HOST:PORT")
    s.add_argument("--count", type=int, default=10)
    s.add_argument("--interval", type=float, default=0.01, help="seconds between datagrams")
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--wait", type=float, default=1.0, help="seconds to wait for echoes after the last send")
    s = sub.add_parser("tcp-send")
    s.add_argument("--to", required=True, help="HOST:PORT")
    s.add_argument("--seconds", type=float, default=1.0)
    s.add_argument("--chunk", type=int, default=1000)
    s.add_argument("--bytes", type=int, help="send this many bytes (rounded up to chunks) instead of --seconds")
    s.add_argument("--connect-retry", type=float, metavar="SECONDS",
                   help="start a new connection if the handshake takes longer (default: let TCP retry)")
    args = p.parse_args(argv)
    if args.cmd == "udp-echo":
        return udp_echo(args.bind, args.port)
    if args.cmd == "tcp-sink":
        return tcp_sink(args.bind, args.port)
    host, port = args.to.rsplit(":", 1)
    if args.cmd == "udp-ping":
        result = udp_ping(host, int(port), args.count, args.interval, args.size, args.wait)
    else:
        result = tcp_send(host, int(port), args.seconds, args.chunk, args.bytes, args.connect_retry)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
