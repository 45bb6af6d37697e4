"""`throughput-raw`: alice -> bob over TCP from two minimal sockets, to measure the server alone.

`throughput` drives alice and bob through the asyncio client library, in one
process that shares the machine's cores with the server: on a 2-core machine
the client's own work per message (its decoder, events, the bench's tasks)
costs about as much CPU as the server's, so that figure is the capacity of
both together. Here the two clients are two non-blocking sockets under one
selector, with only what the protocol needs: SEND frames written in blocks, MSG
frames cut out by one regex and answered with ACK, alice's STATUS lines read
and dropped. Like `hello-raw` for the round trip, the difference between the
two figures is what the client library costs.

The accounting is the same as everywhere in the bench: ids come from a
DeliveryLedger, each body carries its id, sent = delivered + lost.
"""

from __future__ import annotations

import re
import secrets
import selectors
import socket
import threading
import time

from .stats import ONE_WAY, DeliveryLedger, LatencyRecorder
from .workloads import body_id, make_body, now_ns

MSG_HEADER = re.compile(rb"MSG (\d+) (\S+) (\d+)\r?\n")
BLOCK = 64  # SEND frames written at once (as often as _pace in bench/workloads.py yields)


class _Peer:
    """One registered client connection: its socket and the bytes waiting to go out."""

    def __init__(self, address: tuple[str, int], name: str, timeout: float):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"HELLO {name}\n".encode())
        self.inbox = b""
        while b"\n" not in self.inbox:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{name}: the server closed the connection before HI")
            self.inbox += chunk
        line, _, self.inbox = self.inbox.partition(b"\n")
        if not line.startswith(b"HI "):
            raise ConnectionError(f"{name}: expected HI, got {line[:80]!r}")
        self.sock.setblocking(False)
        self.outbox = bytearray()

    def flush(self) -> None:
        if self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except BlockingIOError:
                return
            del self.outbox[:sent]

    def receive(self) -> bytes:
        try:
            chunk = self.sock.recv(1 << 18)
        except BlockingIOError:
            return b""
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk


def _refused(data: bytes) -> bytes | None:
    """The first ERR line in `data`, if the server refused something."""
    at = data.find(b"ERR ")
    if at < 0 or (at > 0 and data[at - 1:at] != b"\n"):
        return None
    return data[at:data.find(b"\n", at)]


def throughput_raw(host: str, port: int, count: int, payload: int, window: int, timeout: float,
                   names: tuple[str, str] = ("bench-alice", "bench-bob"),
                   stop: threading.Event | None = None) -> tuple[dict, LatencyRecorder, int, int]:
    """Returns (delivery summary, one-way latencies, first send ns, last new arrival ns).
    `names`: alice's and bob's (bench.workloads.Endpoint.name). Ends early once `stop` is
    set (the run was interrupted)."""
    alice = _Peer((host, port), names[0], timeout)
    bob = _Peer((host, port), names[1], timeout)
    ledger, one_way = DeliveryLedger(), LatencyRecorder(ONE_WAY)
    sent_at: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    selector.register(alice.sock, selectors.EVENT_READ, alice)
    selector.register(bob.sock, selectors.EVENT_READ, bob)
    # The server takes a SEND whose (sender, ref) it has seen before for a resend and does
    # not deliver it again; against a server that outlives the run (--server) refs must not
    # repeat from one run to the next, so each run's carry a tag of their own.
    ref_tag = secrets.token_hex(4).encode()
    recipient = names[1].encode()
    first_send = last_new = now_ns()
    quiet_since = time.monotonic()
    try:
        while ledger.delivered < count and not (stop is not None and stop.is_set()):
            in_flight = ledger.sent - ledger.delivered
            if ledger.sent < count and in_flight < window and len(alice.outbox) < (1 << 16):
                frames = []
                for _ in range(min(BLOCK, count - ledger.sent, window - in_flight)):
                    message_id = ledger.next_id()
                    body = make_body(message_id, payload)
                    sent_at[message_id] = now_ns()
                    frames.append(b"SEND %s %s-%d %d\n%s\n" % (recipient, ref_tag, message_id, len(body), body))
                alice.outbox += b"".join(frames)
            alice.flush()
            bob.flush()
            events = selector.select(timeout=0.05)
            if not events and time.monotonic() - quiet_since > timeout:
                break  # nothing moved for `timeout` s: what is missing is lost
            for key, _ in events:
                quiet_since = time.monotonic()
                peer: _Peer = key.data
                data = peer.receive()
                if peer is alice:
                    # STATUS lines only (and a PING on a long run): answer PINGs, stop on ERR.
                    if (refusal := _refused(data)) is not None:
                        raise ConnectionError(f"the server refused a SEND: {refusal.decode(errors='replace')}")
                    if b"PING" in data:
                        alice.outbox += b"PONG\n"
                    continue
                bob.inbox += data
                last_new = _take_messages(bob, ledger, sent_at, one_way) or last_new
        for peer in (alice, bob):
            peer.outbox += b"BYE\n"
            peer.sock.setblocking(True)
            peer.flush()
    finally:
        selector.close()
        alice.sock.close()
        bob.sock.close()
    return ledger.summary().as_dict(), one_way, first_send, last_new


def _take_messages(bob: _Peer, ledger: DeliveryLedger, sent_at: dict, one_way: LatencyRecorder) -> int | None:
    """Cut every whole MSG out of bob's inbox, ACK it, and count it; the time of the last new one."""
    inbox, position, last_new, acks = bob.inbox, 0, None, []
    while True:
        header = MSG_HEADER.match(inbox, position)
        if header is None:
            end = inbox.find(b"\n", position)
            if end < 0:
                break  # the rest of a header is still on its way
            line = inbox[position:end]
            if not line.startswith(b"PING"):
                raise ConnectionError(f"bob expected MSG, got {line[:80]!r}")
            acks.append(b"PONG" + line[4:] + b"\n")  # a heartbeat on a long run
            position = end + 1
            continue
        length = int(header[3])
        body_end = header.end() + length
        if len(inbox) < body_end + 1:
            break  # the body has not all arrived yet
        acks.append(b"ACK %s\n" % header[1])
        arrived = now_ns()
        message_id = body_id(inbox[header.end():body_end])
        position = body_end + 1
        if message_id is None:
            ledger.foreign += 1
            continue
        if ledger.arrived(message_id) in ("new", "reordered"):
            last_new = arrived
            if message_id in sent_at:
                one_way.add(arrived - sent_at[message_id])
    bob.inbox = inbox[position:]
    bob.outbox += b"".join(acks)
    return last_new
