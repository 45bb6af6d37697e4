"""A seeded, in-process impaired link: drop, duplicate, reorder, delay, jitter.

Used by the simulation tests (with a fake clock) and by the UDP glue (with the
event loop's clock) so loss can be shown without root or netem. Given a
datagram and the time it is sent, `apply` says when each copy arrives:

    link = Impairment(loss=0.2, duplicate=0.05, reorder=0.05, delay=0.01, jitter=0.005, seed=1)
    link.apply(b"...", now=0.0)  ->  []  (dropped)  or  [(0.012, b"...")]  or two copies

Same seed, same sequence of calls -> the same fate for every datagram.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Impairment:
    loss: float = 0.0  # probability a datagram is dropped
    duplicate: float = 0.0  # probability a surviving datagram arrives twice
    reorder: float = 0.0  # probability it is held back so later ones overtake it
    delay: float = 0.0  # one-way delay, seconds
    jitter: float = 0.0  # extra delay, uniform in [0, jitter]
    reorder_delay: float | None = None  # how long a reordered datagram is held (default: 2*(jitter or 1 ms) + delay/2)
    seed: int | None = 0
    # Called with ("drop" | "duplicate" | "reorder", datagram) as it happens, for narration.
    trace: Callable[[str, bytes], None] | None = None
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    passed: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._random = random.Random(self.seed)

    def apply(self, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        rng = self._random
        # Draw every random number for every datagram, in a fixed order, so the
        # fate of datagram k does not depend on what happened to datagram k-1.
        lost, doubled, held = rng.random() < self.loss, rng.random() < self.duplicate, rng.random() < self.reorder
        first_jitter, second_jitter = rng.uniform(0, self.jitter), rng.uniform(0, self.jitter)
        if lost:
            self.dropped += 1
            self._tell("drop", datagram)
            return []
        self.passed += 1
        arrival = now + self.delay + first_jitter
        if held:
            self.reordered += 1
            self._tell("reorder", datagram)
            hold = self.reorder_delay if self.reorder_delay is not None else 2 * (self.jitter or 0.001) + self.delay / 2
            arrival += hold
        copies = [(arrival, datagram)]
        if doubled:
            self.duplicated += 1
            self._tell("duplicate", datagram)
            copies.append((now + self.delay + second_jitter, datagram))
        return copies

    def _tell(self, what: str, datagram: bytes) -> None:
        if self.trace is not None:
            self.trace(what, datagram)
