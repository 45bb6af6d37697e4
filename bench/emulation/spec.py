"""What an impaired link does, in one direction: :class:`LinkSpec`.

A link between the client hosts and the server host has two directions:

* ``up``   -- client -> server
* ``down`` -- server -> client

Each direction gets its own :class:`LinkSpec`.  ``EmulatedNetwork(spec)`` uses the same
spec for both directions; ``EmulatedNetwork(up=..., down=...)`` sets them apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

DIRECTIONS = ("up", "down")

# The rates tc's token bucket (tbf) really does: it counts its rate in whole bytes per second and
# its burst (about 4 ms worth of the rate, see network.py) in a 32-bit field, so far below
# 1 kbit/s it has no rate at all and far above 100 Gbit/s the burst no longer fits.
MIN_RATE_MBIT = 0.001        # 1 kbit/s
MAX_RATE_MBIT = 100_000.0    # 100 Gbit/s


@dataclass(frozen=True)
class LinkSpec:
    """Impairments applied to every packet crossing the link in one direction.

    loss        share of packets dropped, 0.0 .. 1.0 (in the kernel by nftables by default)
    delay_ms    fixed one-way delay added to every packet
    jitter_ms   each packet's delay is drawn uniformly from delay_ms +- jitter_ms (never < 0).
                Jitter alone never reorders packets (a packet is never released before the one
                in front of it), so reordering is only what ``reorder`` asks for.
    reorder     share of packets held back by an extra ``reorder_ms`` so that the packets behind
                them overtake them
    reorder_ms  how long a reordered packet is held back (on top of its delay)
    duplicate   share of packets sent twice
    rate_mbit   bottleneck rate in Mbit/s (token bucket, ``tbf``), 0.001 (1 kbit/s) to 100000
                (100 Gbit/s); None = unlimited
    seed        a whole number >= 0; seeds the forwarder's random source: the same seed gives the same decisions,
                packet for packet (the n-th packet in a direction always meets the same fate)
    """

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 5.0
    duplicate: float = 0.0
    rate_mbit: float | None = None
    seed: int = 1

    def __post_init__(self) -> None:
        # inf and nan first: nan slips through every comparison below (nan < 0 is False), and
        # either one would reach tc, the forwarder's clock and results.json (where nan is not JSON).
        for name in ("loss", "delay_ms", "jitter_ms", "reorder", "reorder_ms", "duplicate", "rate_mbit"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"LinkSpec.{name} must be a finite number, got {value!r}")
        for name in ("loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinkSpec.{name} is a share between 0.0 and 1.0, got {value!r}")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"LinkSpec.{name} must be >= 0, got {value!r}")
        if self.rate_mbit is not None and not MIN_RATE_MBIT <= self.rate_mbit <= MAX_RATE_MBIT:
            raise ValueError(f"LinkSpec.rate_mbit must be from {MIN_RATE_MBIT:g} (1 kbit/s) to {MAX_RATE_MBIT:g} "
                             f"(100 Gbit/s), the rates tc's token bucket can do, or None for no limit; "
                             f"got {self.rate_mbit!r}")
        if self.seed < 0:  # as the bench's --seed: one rule for every way a seed is given
            raise ValueError(f"LinkSpec.seed must be a whole number >= 0, got {self.seed!r}")

    @property
    def tc_rate(self) -> str:
        """rate_mbit as tc writes a rate: whole bits per second, e.g. "20000000bit".  Not
        f"{rate_mbit}mbit": Python writes small floats in scientific notation ("1e-06mbit"),
        which tc does not read."""
        return f"{round(self.rate_mbit * 1_000_000)}bit"

    def netem_args(self) -> list[str]:
        """This direction as the arguments of a netem qdisc (the netem backend). Every number is
        written in plain decimals, like tc_rate: tc reads neither "1e-05ms" nor "2e-06%"."""
        args = ["netem", "limit", "100000",
                "delay", f"{round(self.delay_ms * 1000)}us", f"{round(self.jitter_ms * 1000)}us"]
        if self.reorder:
            args += ["reorder", _percent(self.reorder)]
        if self.duplicate:
            args += ["duplicate", _percent(self.duplicate)]
        if self.rate_mbit:
            args += ["rate", self.tc_rate]
        return args

    @property
    def needs_forwarder(self) -> bool:
        """True when the nft-tun backend must route this direction through the TUN forwarder."""
        return bool(self.delay_ms or self.jitter_ms or self.reorder or self.duplicate)

    @property
    def is_clean(self) -> bool:
        return self == LinkSpec(seed=self.seed, reorder_ms=self.reorder_ms)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LinkSpec":
        return cls(**data)

    def with_(self, **changes) -> "LinkSpec":
        """A copy with some fields changed, e.g. ``spec.with_(seed=2)``."""
        return replace(self, **changes)


def _percent(share: float) -> str:
    """A share as tc writes a percentage: 0.2 -> "20%", 2e-08 -> "0.000002%"."""
    return f"{share * 100:.6f}".rstrip("0").rstrip(".") + "%"
