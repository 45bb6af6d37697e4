"""Reliable delivery over UDP, built by hand and sans-I/O.

TCP gives a reliable, ordered byte stream for free; UDP gives datagrams that
may be lost, duplicated or reordered. This package adds back what the relay
needs, one readable piece per module:

- packet.py      the binary datagram format (header, acks, message fragments)
- rtt.py         the retransmission timeout, as RFC 6298 computes it
- congestion.py  a NewReno-like congestion window (RFC 5681 / RFC 9002)
- config.py      every tunable, with a `default` and a `turbo` preset
- endpoint.py    one peer's sender and receiver: numbering, acks, retransmission,
                 reassembly, in-order delivery
- impair.py      a seeded lossy channel for tests and demos

Nothing here opens a socket or reads a clock: the caller passes datagrams and
the current time in, and takes datagrams and events out (see udp/ for the glue).
docs/udp-reliability.md describes the wire format byte by byte.
"""

from .config import DEFAULT, TURBO, ReliabilityConfig, preset
from .endpoint import (
    EndpointStats,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    MessageTooLarge,
    ReliableEndpoint,
)
from .impair import Impairment
from .packet import PacketError

__all__ = [
    "DEFAULT",
    "TURBO",
    "EndpointStats",
    "Impairment",
    "MessageDelivered",
    "MessageFailed",
    "MessageReceived",
    "MessageTooLarge",
    "PacketError",
    "ReliabilityConfig",
    "ReliableEndpoint",
    "preset",
]
