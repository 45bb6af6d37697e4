"""How udp/server.py reads its socket: the first datagram is answered before it looks for more.

A fake socket stands in for the kernel's, so the order of reads and sends can
be checked exactly (tests/test_udp.py runs the server on a real socket).
"""

from __future__ import annotations

import asyncio
import itertools

from hellohi.datagram_client import padded_plain_hello
from hellohi.datagram_relay import DatagramRelay
from hellohi.reliable import DEFAULT, Impairment
from hellohi.relay import Relay, RelayLimits
from hellohi.store import MessageStore
from udp.server import UdpRelayServer


class FakeSocket:
    """Datagrams waiting to be read; every recvfrom and sendto is written down in `log`."""

    def __init__(self, waiting: list[tuple[bytes, tuple]]):
        self.waiting = list(waiting)
        self.log: list[tuple[str, tuple]] = []

    def recvfrom(self, size: int):
        if not self.waiting:
            self.log.append(("read", "empty"))
            raise BlockingIOError
        data, address = self.waiting.pop(0)
        self.log.append(("read", address))
        return data, address

    def sendto(self, data: bytes, address) -> None:
        self.log.append(("send", address))


def hello_from(port: int) -> tuple[bytes, tuple]:
    return padded_plain_hello(f"HELLO user{port}\n".encode()), ("198.18.0.2", port)


def read_once(waiting: list[tuple[bytes, tuple]], impair_receive=None) -> tuple[list[tuple[str, tuple]], list[int]]:
    """One readable event on a server whose socket holds `waiting`: (the socket's log, batch sizes)."""
    relay = DatagramRelay(Relay(MessageStore(":memory:"), RelayLimits()), DEFAULT, new_token=itertools.count(1).__next__)
    batches: list[int] = []
    receive_many = relay.receive_many

    def counting_receive_many(batch, now):
        batches.append(len(batch))
        return receive_many(batch, now)

    relay.receive_many = counting_receive_many
    server = UdpRelayServer(relay, impair_receive=impair_receive)
    fake = FakeSocket(waiting)

    async def readable() -> None:
        server._socket = fake
        server._on_readable()
        server._timer.cancel()

    asyncio.run(readable())
    relay.relay.store.close()
    return fake.log, batches


def test_a_lone_datagram_is_answered_before_the_socket_is_read_again():
    log, batches = read_once([hello_from(1)])
    client = ("198.18.0.2", 1)
    assert log[0] == ("read", client)
    assert log[1] == ("send", client)  # the answer leaves before the read that finds nothing
    assert log[-1] == ("read", "empty")
    assert batches == [1]


def test_what_arrived_meanwhile_is_read_as_one_batch():
    log, batches = read_once([hello_from(1), hello_from(2), hello_from(3)])
    reads = [entry for entry in log if entry[0] == "read"]
    assert reads == [("read", ("198.18.0.2", 1)), ("read", ("198.18.0.2", 2)), ("read", ("198.18.0.2", 3)), ("read", "empty")]
    assert log[1] == ("send", ("198.18.0.2", 1))
    # The other two are answered after all of them were read: one batch.
    first_send_to_the_rest = min(i for i, entry in enumerate(log) if entry[0] == "send" and entry[1][1] != 1)
    assert first_send_to_the_rest > log.index(("read", "empty"))
    assert batches == [1, 2]


def test_a_full_batch_stops_reading_so_timers_and_sends_are_not_starved(monkeypatch):
    monkeypatch.setattr(UdpRelayServer, "MAX_BATCH", 4)
    log, batches = read_once([hello_from(port) for port in range(1, 8)])
    assert batches == [1, 4]  # the other two wait for the next readable event
    assert ("read", "empty") not in log


def test_a_first_datagram_lost_on_the_way_in_does_not_stop_the_reading():
    # The in-process loss injection drops everything here: the relay sees nothing,
    # but every datagram is taken off the socket in this one readable event.
    log, batches = read_once([hello_from(1), hello_from(2), hello_from(3)], impair_receive=Impairment(loss=1.0, seed=1))
    assert log == [("read", ("198.18.0.2", 1)), ("read", ("198.18.0.2", 2)), ("read", ("198.18.0.2", 3)), ("read", "empty")]
    assert batches == []
