"""Statistics for the bench: latency samples, RFC 3550 jitter and exact loss accounting.

Three small classes, no I/O, no clock of their own (callers pass times in integer
nanoseconds, e.g. from time.perf_counter_ns()):

- LatencyRecorder keeps *every* sample exactly and answers min/p50/p90/p99/p99.9/max.
- Rfc3550Jitter is the interarrival-jitter estimator of RFC 3550, section 6.4.1.
- DeliveryLedger counts sent/delivered/lost/duplicated/reordered messages so that
  sent == delivered + lost holds exactly, whatever order or multiplicity they arrive in.

Every figure is labelled with what it measures: "round_trip" or "one_way".

Why store samples instead of an HDR histogram: a bench run records at most a few
million samples (8 bytes each in an array('q'), so a few tens of MB at worst), which
lets us report exact order statistics with no binning error and no extra dependency.
An HDR histogram with 3 significant digits would be smaller but rounds every value to
0.1 %, and students comparing "p99 TCP vs p99 UDP" should not have to reason about that.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Hashable
from dataclasses import dataclass

ROUND_TRIP = "round_trip"
ONE_WAY = "one_way"
MEASURES = (ROUND_TRIP, ONE_WAY)

# The percentiles every latency summary reports (the p99.9 key is spelled "p99_9").
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def nearest_rank(sorted_samples, percent: float):
    """Value at `percent` by the nearest-rank method: the smallest sample such that at
    least `percent` % of all samples are <= it. Always an observed value (no
    interpolation), like HdrHistogram's valueAtPercentile."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("no samples")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    # Work in integer per-mille-of-percent to avoid float trouble: 99.9 % of 1000
    # samples must be rank 999, not 999.0000000001 -> 1000.
    rank = -(-n * round(percent * 1000) // 100_000)  # ceil(n * percent / 100)
    return sorted_samples[max(rank, 1) - 1]


class Rfc3550Jitter:
    """Interarrival jitter, RFC 3550 section 6.4.1 and appendix A.8.

    D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) = transit_i - transit_{i-1}
    J        += (|D| - J) / 16

    For one-way figures the transit is arrival time minus send time; the two clocks
    need not be synchronised because a constant offset cancels in D. For round-trip
    figures the "transit" is the round-trip time itself. Feed samples in *arrival*
    order, as RFC 3550 says.
    """

    def __init__(self, measure: str) -> None:
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}")
        self.measure = measure
        self.jitter_ns = 0.0
        self._previous_transit_ns: int | None = None

    def add_transit(self, transit_ns: int) -> None:
        if self._previous_transit_ns is not None:
            d = abs(transit_ns - self._previous_transit_ns)
            self.jitter_ns += (d - self.jitter_ns) / 16.0
        self._previous_transit_ns = transit_ns

    def add(self, sent_ns: int, arrived_ns: int) -> None:
        self.add_transit(arrived_ns - sent_ns)


class LatencyRecorder:
    """Keeps every latency sample (integer nanoseconds) and its RFC 3550 jitter."""

    def __init__(self, measure: str) -> None:
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}")
        self.measure = measure
        # 'q' is a signed 64-bit integer: 292 years of nanoseconds. Appending a value
        # that does not fit raises OverflowError instead of wrapping silently.
        self._samples = array("q")
        self.jitter = Rfc3550Jitter(measure)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, latency_ns: int) -> None:
        if latency_ns < 0:
            raise ValueError(f"negative latency {latency_ns} ns: clock went backwards?")
        self._samples.append(latency_ns)
        self.jitter.add_transit(latency_ns)

    def samples_ns(self) -> list[int]:
        return list(self._samples)

    def summary(self) -> dict:
        """Summary in microseconds (floats that keep the nanosecond precision)."""
        out: dict = {"measure": self.measure, "unit": "us", "count": len(self._samples)}
        if not self._samples:
            for key in ("min", "mean", *[k for k, _ in PERCENTILES], "max", "jitter_rfc3550"):
                out[key] = None
            return out
        ordered = sorted(self._samples)
        out["min"] = ordered[0] / 1000
        # sum() of Python ints is exact; only the final division rounds.
        out["mean"] = sum(ordered) / len(ordered) / 1000
        for key, percent in PERCENTILES:
            out[key] = nearest_rank(ordered, percent) / 1000
        out["max"] = ordered[-1] / 1000
        out["jitter_rfc3550"] = self.jitter.jitter_ns / 1000
        return out


@dataclass
class LedgerSummary:
    sent: int
    delivered: int  # distinct messages that arrived at least once
    lost: int  # sent but never delivered (by the time the summary was taken)
    duplicates: int  # extra copies of already delivered messages (not in `delivered`)
    reordered: int  # delivered, but after a message that was sent later
    foreign: int  # arrivals whose id was never sent: counted apart, never as loss

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "foreign": self.foreign,
            "delivered_ratio": (self.delivered / self.sent) if self.sent else None,
        }


class DeliveryLedger:
    """Exact message accounting on the application level.

    The sender takes ids from the ledger (`next_id`), so the ledger knows precisely
    which ids were sent; the receiver reports every arrival (`arrived`). Loss is then
    *derived* as sent minus distinct delivered, never counted from sequence gaps. This
    avoids, on purpose, the three failures seen in iperf3:

    - #716: a stray or misparsed sequence number far ahead of the real ones made iperf3
      count hundreds of thousands of "lost" packets (more packets than bytes sent).
      Here an id that was never sent is counted as `foreign` and changes nothing else.
    - #1142: iperf3 counts a gap as loss and takes one loss back when a late packet
      fills it, so reordering (and, with duplicates, even negative loss) corrupts the
      figures. Here a late message is simply delivered (and counted as reordered);
      a duplicate is counted apart and never "un-loses" anything.
    - #1534: 32-bit packet counters wrapped after 2**31 packets ("0/2147483647 lost").
      Here every counter and id is a Python int, which does not overflow.
    """

    def __init__(self, first_id: int = 0) -> None:
        self.first_id = first_id
        self._next = first_id
        self._delivered: set[int] = set()
        self._highest_delivered: int | None = None
        # Order is a promise of one sender's stream: with several senders (fan-in) their
        # messages interleave at the receiver, and that is not reordering.
        self._sender_of: dict[int, Hashable] = {}
        self._highest_by_sender: dict[Hashable, int] = {}
        self.duplicates = 0
        self.reordered = 0
        self.foreign = 0

    def next_id(self, sender: Hashable | None = None) -> int:
        """Id for the next message to send; calling this *is* counting it as sent.
        `sender` names the sending client where there are several; an arrival counts as
        reordered only after a later message of the same sender."""
        message_id = self._next
        self._next += 1
        if sender is not None:
            self._sender_of[message_id] = sender
        return message_id

    @property
    def sent(self) -> int:
        return self._next - self.first_id

    @property
    def delivered(self) -> int:
        return len(self._delivered)

    @property
    def settled(self) -> int:
        """Ids sent up to and including the newest one delivered: each of them has
        arrived or, if it is still missing, was overtaken by a later one. A sender
        without retransmission (plain UDP) may treat them as no longer in flight."""
        if self._highest_delivered is None:
            return 0
        return self._highest_delivered - self.first_id + 1

    def was_sent(self, message_id: int) -> bool:
        return self.first_id <= message_id < self._next

    def arrived(self, message_id: int) -> str:
        """Record one arrival; returns "new", "reordered", "duplicate" or "foreign"."""
        if not self.was_sent(message_id):
            self.foreign += 1
            return "foreign"
        if message_id in self._delivered:
            self.duplicates += 1
            return "duplicate"
        self._delivered.add(message_id)
        if self._highest_delivered is None or message_id > self._highest_delivered:
            self._highest_delivered = message_id
        sender = self._sender_of.get(message_id)
        highest = self._highest_by_sender.get(sender)
        if highest is not None and message_id < highest:
            self.reordered += 1
            return "reordered"
        self._highest_by_sender[sender] = message_id
        return "new"

    def summary(self) -> LedgerSummary:
        sent = self.sent
        delivered = self.delivered
        return LedgerSummary(
            sent=sent,
            delivered=delivered,
            lost=sent - delivered,
            duplicates=self.duplicates,
            reordered=self.reordered,
            foreign=self.foreign,
        )


def rate(count: int, seconds: float) -> float | None:
    """count / seconds, or None when no time elapsed (never a division by zero)."""
    if seconds <= 0 or math.isnan(seconds):
        return None
    return count / seconds
