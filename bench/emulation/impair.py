"""The forwarder's decisions, kept apart from any I/O so they can be tested with a fake clock.

An :class:`Impairer` decides, for each packet of one direction, whether it is dropped, when it
is released, whether it is held back (reordered) and whether it is sent twice.  Time is passed
in as float seconds.

Reproducibility: each direction has its own ``random.Random`` seeded from ``(seed, direction)``,
and every packet consumes exactly four random numbers whatever the spec says.  So the n-th
packet of a direction meets the same fate in every run with the same seed, however the two
directions interleave, and changing one knob (say loss) leaves the other decisions unchanged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .spec import LinkSpec


@dataclass(frozen=True)
class Fate:
    """What happens to one packet."""

    index: int                      # 0-based packet number within its direction
    dropped: bool
    reordered: bool
    duplicated: bool
    release_at: tuple[float, ...]   # one entry per copy sent; empty when dropped


@dataclass
class ImpairCounters:
    seen: int = 0
    dropped: int = 0
    forwarded: int = 0      # copies written out (a duplicated packet counts twice)
    duplicated: int = 0
    reordered: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Impairer:
    """Seeded decisions for one direction of a link.

    ``apply_loss`` is False when the loss is done in the kernel (nftables) instead; the random
    number for it is still drawn so the other decisions do not depend on where loss is done.
    """

    spec: LinkSpec
    direction: str
    apply_loss: bool = False
    counters: ImpairCounters = field(default_factory=ImpairCounters)

    def __post_init__(self) -> None:
        # A string seed is hashed with SHA-512 by random.Random: stable across runs and versions.
        self._rng = random.Random(f"hellohi-emulation:{self.spec.seed}:{self.direction}")
        self._last_release = -math.inf   # keeps non-reordered packets in FIFO order

    def decide(self, now: float) -> Fate:
        spec, rng = self.spec, self._rng
        u_loss, u_delay, u_reorder, u_dup = rng.random(), rng.random(), rng.random(), rng.random()
        index = self.counters.seen
        self.counters.seen += 1

        if self.apply_loss and u_loss < spec.loss:
            self.counters.dropped += 1
            return Fate(index, dropped=True, reordered=False, duplicated=False, release_at=())

        delay = (spec.delay_ms + spec.jitter_ms * (2.0 * u_delay - 1.0)) / 1000.0
        release = now + max(0.0, delay)
        reordered = u_reorder < spec.reorder
        if reordered:
            # Held back: later packets pass it.  It does not move the FIFO mark.
            release += spec.reorder_ms / 1000.0
            self.counters.reordered += 1
        else:
            # Jitter must not reorder: never release before the packet in front.
            release = max(release, self._last_release)
            self._last_release = release

        duplicated = u_dup < spec.duplicate
        copies = (release, release) if duplicated else (release,)
        if duplicated:
            self.counters.duplicated += 1
        self.counters.forwarded += len(copies)
        return Fate(index, dropped=False, reordered=reordered, duplicated=duplicated, release_at=copies)
