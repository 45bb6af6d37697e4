"""Unit tests for bench/stats.py: percentiles, RFC 3550 jitter, exact loss accounting."""

import random

import pytest

from bench.stats import (
    ONE_WAY,
    ROUND_TRIP,
    DeliveryLedger,
    LatencyRecorder,
    Rfc3550Jitter,
    nearest_rank,
    rate,
)


# --- percentiles -----------------------------------------------------------------------


def test_nearest_rank_on_1_to_1000():
    values = list(range(1, 1001))
    assert nearest_rank(values, 50) == 500
    assert nearest_rank(values, 90) == 900
    assert nearest_rank(values, 99) == 990
    assert nearest_rank(values, 99.9) == 999  # not 1000: no float round-up
    assert nearest_rank(values, 100) == 1000


def test_nearest_rank_small_sets():
    assert nearest_rank([7], 50) == 7
    assert nearest_rank([7], 99.9) == 7
    assert nearest_rank([1, 2], 50) == 1
    assert nearest_rank([1, 2], 50.1) == 2
    with pytest.raises(ValueError):
        nearest_rank([], 50)
    with pytest.raises(ValueError):
        nearest_rank([1], 0)


def test_recorder_keeps_nanosecond_precision():
    rec = LatencyRecorder(ROUND_TRIP)
    # Two samples 1 ns apart at 10 seconds must stay distinct (a float of seconds
    # or a coarse histogram bucket would merge them).
    rec.add(10_000_000_001)
    rec.add(10_000_000_002)
    s = rec.summary()
    assert s["min"] == 10_000_000.001
    assert s["max"] == 10_000_000.002
    assert rec.samples_ns() == [10_000_000_001, 10_000_000_002]


def test_recorder_summary_is_labelled_and_exact():
    rec = LatencyRecorder(ONE_WAY)
    samples = list(range(1000, 1_001_000, 1000))  # 1 us .. 1000 us, 1000 samples
    random.Random(4).shuffle(samples)
    for ns in samples:
        rec.add(ns)
    s = rec.summary()
    assert s["measure"] == "one_way"
    assert s["unit"] == "us"
    assert s["count"] == 1000
    assert (s["min"], s["p50"], s["p90"], s["p99"], s["p99_9"], s["max"]) == (
        1.0, 500.0, 900.0, 990.0, 999.0, 1000.0)
    assert s["mean"] == 500.5


def test_recorder_empty_and_invalid():
    rec = LatencyRecorder(ROUND_TRIP)
    s = rec.summary()
    assert s["count"] == 0 and s["p50"] is None and s["measure"] == "round_trip"
    with pytest.raises(ValueError):
        rec.add(-1)
    with pytest.raises(ValueError):
        LatencyRecorder("both")
    with pytest.raises(OverflowError):  # refuses instead of wrapping
        rec.add(2**63)


# --- RFC 3550 jitter -------------------------------------------------------------------


def test_jitter_constant_delay_is_zero():
    j = Rfc3550Jitter(ONE_WAY)
    for i in range(100):
        j.add(sent_ns=i * 20_000_000, arrived_ns=i * 20_000_000 + 5_000_000)
    assert j.jitter_ns == 0.0


def test_jitter_ignores_clock_offset():
    """One-way transit with an unsynchronised receiver clock: offset cancels in D."""
    a, b = Rfc3550Jitter(ONE_WAY), Rfc3550Jitter(ONE_WAY)
    rng = random.Random(1)
    for i in range(200):
        sent = i * 1_000_000
        delay = rng.randrange(1_000, 50_000)
        a.add(sent, sent + delay)
        b.add(sent, sent + delay + 123_456_789_000)  # receiver clock 123 s ahead
    assert a.jitter_ns == pytest.approx(b.jitter_ns)


def test_jitter_matches_formula_step_by_step():
    j = Rfc3550Jitter(ROUND_TRIP)
    transits = [100, 300, 200, 200, 1000]
    expected = 0.0
    for prev, cur in zip(transits, transits[1:]):
        expected += (abs(cur - prev) - expected) / 16
    for t in transits:
        j.add_transit(t)
    assert j.jitter_ns == pytest.approx(expected)
    # first step by hand: |300-100| / 16 = 12.5
    k = Rfc3550Jitter(ROUND_TRIP)
    k.add_transit(100)
    k.add_transit(300)
    assert k.jitter_ns == 12.5


def test_jitter_converges_to_mean_abs_difference_for_alternating_delay():
    # Alternating 0/1000 ns: |D| is always 1000, so J -> 1000.
    j = Rfc3550Jitter(ONE_WAY)
    for i in range(500):
        j.add_transit(1000 * (i % 2))
    assert j.jitter_ns == pytest.approx(1000, rel=1e-6)


# --- loss accounting -------------------------------------------------------------------


def _check_invariant(ledger):
    s = ledger.summary()
    assert s.sent == s.delivered + s.lost
    assert s.lost >= 0
    return s


def test_ledger_in_order_no_loss():
    led = DeliveryLedger()
    ids = [led.next_id() for _ in range(10)]
    for i in ids:
        assert led.arrived(i) == "new"
    s = _check_invariant(led)
    assert (s.sent, s.delivered, s.lost, s.duplicates, s.reordered) == (10, 10, 0, 0, 0)
    assert s.as_dict()["delivered_ratio"] == 1.0


def test_ledger_reordered_is_not_lost():
    """iperf3 #1142: a late (reordered) packet must not count as lost."""
    led = DeliveryLedger()
    ids = [led.next_id() for _ in range(5)]
    for i in [0, 2, 3, 1, 4]:
        led.arrived(ids[i])
    s = _check_invariant(led)
    assert (s.delivered, s.lost, s.reordered) == (5, 0, 1)


def test_ledger_judges_order_per_sender():
    """Fan-in: several senders' messages interleave at the receiver; only a message that
    arrives after a later one of its own sender is reordered."""
    led = DeliveryLedger()
    alice = [led.next_id("alice") for _ in range(3)]
    bob = [led.next_id("bob") for _ in range(3)]
    for message_id in (bob[0], alice[0], bob[1], alice[1], alice[2], bob[2]):
        assert led.arrived(message_id) == "new"
    assert led.summary().reordered == 0
    late = led.next_id("alice"), led.next_id("alice")
    assert led.arrived(late[1]) == "new" and led.arrived(late[0]) == "reordered"
    s = _check_invariant(led)
    assert (s.sent, s.delivered, s.lost, s.reordered) == (8, 8, 0, 1)


def test_ledger_duplicates_counted_apart_and_never_make_loss_negative():
    """iperf3's gap-then-decrement scheme goes negative when duplicates arrive."""
    led = DeliveryLedger()
    ids = [led.next_id() for _ in range(4)]
    led.arrived(ids[3])  # gap 0..2
    for _ in range(10):
        assert led.arrived(ids[3]) == "duplicate"
    led.arrived(ids[0])
    led.arrived(ids[0])
    s = _check_invariant(led)
    assert (s.sent, s.delivered, s.lost, s.duplicates, s.reordered) == (4, 2, 2, 11, 1)


def test_ledger_foreign_ids_do_not_inflate_loss():
    """iperf3 #716: one stray huge sequence number produced 364,936 'lost' packets out
    of ~2,100 sent. A never-sent id is counted apart and changes nothing else."""
    led = DeliveryLedger()
    ids = [led.next_id() for _ in range(2100)]
    led.arrived(ids[0])
    led.arrived(367_040)  # far ahead of anything sent
    led.arrived(-5)
    for i in ids[1:]:
        led.arrived(i)
    s = _check_invariant(led)
    assert (s.sent, s.delivered, s.lost, s.foreign, s.reordered) == (2100, 2100, 0, 2, 0)


@pytest.mark.parametrize("first_id", [2**31 - 3, 2**32 - 3, 2**63 - 3, 2**64 - 3])
def test_ledger_ids_across_32_and_64_bit_boundaries(first_id):
    """iperf3 #1534: 32-bit counters wrapped ('0/2147483647 lost'). Python ints don't."""
    led = DeliveryLedger(first_id=first_id)
    ids = [led.next_id() for _ in range(8)]
    assert ids[-1] == first_id + 7  # no wrap to 0 or to a negative number
    for i in ids:
        if i != first_id + 5:  # lose one right after the boundary
            led.arrived(i)
    s = _check_invariant(led)
    assert (s.sent, s.delivered, s.lost, s.reordered) == (8, 7, 1, 0)


def test_ledger_counts_beyond_32_bits_without_storing_them():
    # Count-wise overflow: pretend 5e9 messages were sent before this window.
    led = DeliveryLedger(first_id=0)
    led._next = 5_000_000_000  # as if next_id() had been called 5e9 times
    led.arrived(4_999_999_999)
    s = _check_invariant(led)
    assert s.sent == 5_000_000_000 and s.lost == 4_999_999_999


def test_ledger_random_impairment_property():
    """Seeded random loss, duplication and reordering: the invariant always holds and
    every figure matches what the channel really did."""
    for seed in range(30):
        rng = random.Random(seed)
        led = DeliveryLedger(first_id=rng.choice([0, 2**32 - 50]))
        sent = [led.next_id() for _ in range(rng.randrange(1, 300))]
        wire = []
        really_delivered = set()
        for i in sent:
            if rng.random() < 0.2:
                continue  # lost
            copies = 2 if rng.random() < 0.1 else 1
            wire.extend([i] * copies)
            really_delivered.add(i)
        # local reordering: swap neighbours at random
        for k in range(len(wire) - 1):
            if rng.random() < 0.1:
                wire[k], wire[k + 1] = wire[k + 1], wire[k]
        for i in wire:
            led.arrived(i)
        s = _check_invariant(led)
        assert s.delivered == len(really_delivered)
        assert s.lost == len(sent) - len(really_delivered)
        assert s.duplicates == len(wire) - len(really_delivered)


def test_rate_never_divides_by_zero():
    assert rate(10, 0) is None
    assert rate(10, 2) == 5
