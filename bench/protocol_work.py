"""hellohi's own work per Hello/HI round trip over UDP, with no sockets: warm, and after a nap.

The client's sans-I/O half (hellohi.datagram_client.DatagramLink, under
udp/client.py and, without the frame codec, the `hello-raw` workload over UDP
with acks; `hello-raw` over plain UDP writes its frames itself) and the server's
(hellohi.datagram_relay.DatagramRelay, under udp/server.py) are joined here by
plain function calls, in this one process. Each round trip does the protocol
work of a real one (the client encodes Hello into a datagram, the server decodes
it, runs the reliability layer and the relay, answers HI, the client decodes
that); the sockets, the kernel and the event loop of the glue are left out.

It is timed in pairs: the bench sleeps a little, then runs two round trips at once.

- The first comes after the sleep, as in a real ping-pong, where both
  processes sleep while a datagram crosses the kernel. A CPU that goes idle
  loses what its caches held (on a virtual machine the host may even run
  something else on it meanwhile), and the same code runs slower when it wakes.
- The second comes back to back, with the interpreter's code and data still in
  the caches from the first: about what a long stream of round trips costs each.

sockperf, the kernel's floor for a round trip, is a small C program with
little code and data to bring back into the caches after each sleep; one
Hello/HI through the reliability layer, both ends, is about 180 calls (cProfile,
built-ins counted; about 90 of them Python functions). The two figures, next
to `hello-raw`'s, show how much of the distance to sockperf is protocol work
and how much is the price of waking up cold.
"""

from __future__ import annotations

import itertools
import sys
import time

from hellohi.codec import Hello, Hi, Ping, Pong, encode
from hellohi.datagram_client import DatagramLink
from hellohi.datagram_relay import DatagramRelay
from hellohi.relay import Relay, RelayLimits
from hellohi.store import MessageStore

from .clients import reliability_config
from .paired import not_among_the_runs
from .stats import ROUND_TRIP, LatencyRecorder

CLIENT_ADDRESS = ("198.18.0.2", 40000)  # only a label: nothing is sent anywhere
DEFAULT_SLEEP = 50e-6  # seconds: about one loopback round trip, the time each side really waits
WARMUP = 200


class _Pair:
    """A DatagramLink and a DatagramRelay that hand each other datagrams directly."""

    def __init__(self, protocol: str):
        self.clock = time.monotonic
        self.link = DatagramLink(reliability_config(protocol))
        self.relay = DatagramRelay(Relay(MessageStore(":memory:"), RelayLimits()), reliability_config("udp"),
                                   new_token=itertools.count(1).__next__)
        self.link.start(self.clock())
        self._hellos: dict[str | None, bytes] = {}

    def round_trip(self, hello: Hello) -> bool:
        """Hello from the client, until the server's datagrams are answered; True if a HI came back.

        The calls are the ones the glue makes for every datagram, next_deadline()
        included (udp/server.py arms its timer with it; hello-raw polls its socket
        until then). Over UDP with acks the client's side is hello-raw's: a
        ready-made Hello message, and HI recognised at the start of each message
        that comes back, with no frame codec. Plain UDP goes through the link's
        frames, answering the server's PING.
        """
        link, relay, clock = self.link, self.relay, self.clock
        if link.plain:
            link.send_frame(hello, clock())
        else:
            link.send_message(self._encoded(hello), clock())
        answered = False
        to_server = link.datagrams_to_send(clock())
        while to_server:
            relay.receive_many([(datagram, CLIENT_ADDRESS) for datagram in to_server], clock())
            relay.next_deadline()
            for datagram, _ in relay.outgoing():
                if link.plain:
                    for item in link.receive(datagram, clock()):
                        if isinstance(item, Ping):  # the server checks our address
                            link.send_frame(Pong(item.token), clock())
                        answered = answered or isinstance(item, Hi)
                else:
                    for item in link.receive_messages(datagram, clock()):
                        answered = answered or (isinstance(item, bytes) and item[:2].upper() == b"HI")
            to_server = link.datagrams_to_send(clock())
            link.next_deadline()
        return answered

    def _encoded(self, hello: Hello) -> bytes:
        # hello-raw sends bytes it made once; so do we (a frame is not hashable: keyed by name).
        if hello.name not in self._hellos:
            self._hellos[hello.name] = encode(hello)
        return self._hellos[hello.name]

    def close(self) -> None:
        self.relay.relay.store.close()


def _timed_pairs(pair: _Pair, round_trips: int, sleep: float) -> tuple[LatencyRecorder, LatencyRecorder, int]:
    """Sleep, then two round trips at once: the first after the sleep, the second warm.

    Taking the two figures in pairs, microseconds apart, keeps the machine's
    drifting speed (other tenants, frequency changes) out of their ratio.
    """
    after_sleep, warm = LatencyRecorder(ROUND_TRIP), LatencyRecorder(ROUND_TRIP)
    answered = 0
    for _ in range(round_trips):
        time.sleep(sleep)
        start = time.perf_counter_ns()
        answered += pair.round_trip(Hello())
        middle = time.perf_counter_ns()
        answered += pair.round_trip(Hello())
        end = time.perf_counter_ns()
        after_sleep.add(middle - start)
        warm.add(end - middle)
    return after_sleep, warm, answered


def measure(protocol: str, round_trips: int = 3000, sleep: float = DEFAULT_SLEEP, protocols=None) -> dict:
    """Python work per Hello/HI round trip for `protocol` (udp or udp-raw), as a baseline result;
    "skipped" when `protocols` (a run's, None: all) does not include it."""
    result = {"tool": "hellohi-in-process", "test": f"protocol-work-{protocol}",
              "config": {"protocol": protocol, "round_trips": round_trips, "sleep_us": round(sleep * 1e6, 3),
                         "python": sys.version.split()[0]}}
    if protocols is not None and protocol not in protocols:
        return {**result, "status": "skipped", "reason": not_among_the_runs([protocol])}
    pair = _Pair(protocol)
    try:
        if not pair.round_trip(Hello("bench-work")):
            return {**result, "status": "error", "reason": "the relay did not answer the first Hello with HI"}
        for _ in range(WARMUP):
            pair.round_trip(Hello())
        after_sleep, warm, answered = _timed_pairs(pair, round_trips, sleep)
    finally:
        pair.close()
    if answered != 2 * round_trips:
        return {**result, "status": "error", "reason": f"only {answered} of {2 * round_trips} Hellos were answered with HI"}
    return {**result, "status": "ok", "figures": {"warm": warm.summary(), "after_sleep": after_sleep.summary()}}
