"""A discrete-event simulation: two endpoints, two impaired links, a fake clock.

The tests use it to check delivery, ordering and retransmission counts over
thousands of lossy round trips in well under a second, and students can use
it to watch the protocol without any network:

    sim = Simulation(DEFAULT, Impairment(loss=0.1, delay=0.05, seed=1))
    for i in range(100):
        sim.send_at(i * 0.01, "a", f"message {i}".encode())
    sim.run(until=60)
    sim.received["b"]   # the 100 messages, in order
    sim.received_at["b"]   # the simulated time each of them reached b's application
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field, replace

from .config import ReliabilityConfig
from .endpoint import MessageDelivered, MessageFailed, MessageReceived, ReliableEndpoint
from .impair import Impairment


@dataclass
class Simulation:
    config: ReliabilityConfig
    link: Impairment  # a -> b; b -> a uses `back_link`, or a copy of `link` with another seed
    back_link: Impairment | None = None
    now: float = 0.0
    received: dict[str, list[bytes]] = field(default_factory=lambda: {"a": [], "b": []})
    received_at: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})  # when each of `received` arrived
    delivered: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})
    failed: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})

    def __post_init__(self) -> None:
        if self.back_link is None:
            self.back_link = replace(self.link, seed=None if self.link.seed is None else self.link.seed + 1)
        self.endpoints = {"a": ReliableEndpoint(self.config, now=self.now), "b": ReliableEndpoint(self.config, now=self.now)}
        self._links = {"a": self.link, "b": self.back_link}
        self._wire: list[tuple[float, int, str, bytes]] = []  # (arrival, tiebreak, to, datagram)
        self._app: list[tuple[float, int, str, bytes]] = []  # (when, tiebreak, from, message)
        self._tiebreak = itertools.count()
        self.sent_ids: dict[str, list[int]] = {"a": [], "b": []}

    def send_at(self, when: float, side: str, data: bytes) -> None:
        heapq.heappush(self._app, (when, next(self._tiebreak), side, data))

    def settled(self) -> bool:
        """Every scheduled message sent and each one delivered or failed."""
        return not self._app and all(not ep.unacknowledged for ep in self.endpoints.values())

    def run(self, until: float, stop_when_settled: bool = True) -> None:
        while True:
            if stop_when_settled and self.settled() and not self._wire:
                return
            upcoming = [t for t in (ep.next_deadline() for ep in self.endpoints.values()) if t is not None]
            if self._wire:
                upcoming.append(self._wire[0][0])
            if self._app:
                upcoming.append(self._app[0][0])
            if not upcoming:
                return
            self.now = max(self.now, min(upcoming))
            if self.now > until:
                return
            self._step()

    def _step(self) -> None:
        now = self.now
        while self._app and self._app[0][0] <= now:
            _, _, side, data = heapq.heappop(self._app)
            self.sent_ids[side].append(self.endpoints[side].send_message(data, now))
        while self._wire and self._wire[0][0] <= now:
            _, _, to, datagram = heapq.heappop(self._wire)
            self.endpoints[to].receive_datagram(datagram, now)
        for side, endpoint in self.endpoints.items():
            deadline = endpoint.next_deadline()
            if deadline is not None and deadline <= now:
                endpoint.handle_timer(now)
        for side, endpoint in self.endpoints.items():
            other = "b" if side == "a" else "a"
            for datagram in endpoint.datagrams_to_send(now):
                for arrival, copy in self._links[side].apply(datagram, now):
                    heapq.heappush(self._wire, (arrival, next(self._tiebreak), other, copy))
            for event in endpoint.pop_events():
                if isinstance(event, MessageReceived):
                    self.received[side].append(event.data)
                    self.received_at[side].append(now)
                elif isinstance(event, MessageDelivered):
                    self.delivered[side].append(event.message_id)
                elif isinstance(event, MessageFailed):
                    self.failed[side].append(event.message_id)
