"""The reliability layer in a discrete-event simulation: fake clock, seeded lossy links.

No sockets and no sleeping: hellohi.reliable.simulate moves datagrams between
two endpoints through hellohi.reliable.impair links, jumping the clock from
one event to the next, so minutes of lossy traffic take milliseconds.
"""

from __future__ import annotations

import random

import pytest

from bench.kcp_peer import KcpScenario, kcp_available, simulate_kcp, simulate_reliable
from hellohi.reliable import DEFAULT, TURBO, Impairment, MessageFailed, MessageReceived, MessageTooLarge, ReliableEndpoint
from hellohi.reliable.config import smallest_max_datagram
from hellohi.reliable.endpoint import FRAGMENT_COST
from hellohi.reliable.congestion import NewReno
from hellohi.reliable.packet import MAX_MESSAGE_ID, MAX_PACKET_NUMBER, Fragment, Packet, decode, encode
from hellohi.reliable.rtt import RttEstimator
from hellohi.reliable.simulate import Simulation


def payloads(count: int, size: int = 40) -> list[bytes]:
    return [f"message {i:05d} ".encode().ljust(size, b".") for i in range(count)]


def run_stream(config, link, messages, spacing=0.002, back_link=None, until=3600.0):
    sim = Simulation(config, link, back_link)
    for i, data in enumerate(messages):
        sim.send_at(i * spacing, "a", data)
    sim.run(until=until)
    return sim


# ------------------------------------------------------------ delivery


@pytest.mark.parametrize("preset", [DEFAULT, TURBO], ids=["default", "turbo"])
@pytest.mark.parametrize("loss", [0.0, 0.1, 0.2, 0.3, 0.4])
def test_every_message_exactly_once_in_order(preset, loss):
    link = Impairment(loss=loss, duplicate=0.05, reorder=0.05, delay=0.02, jitter=0.01, seed=int(loss * 100) + 3)
    messages = payloads(400)
    sim = run_stream(preset, link, messages)
    assert sim.received["b"] == messages  # all, once each, in order
    assert sorted(sim.delivered["a"]) == sim.sent_ids["a"]
    assert sim.failed["a"] == []


def test_large_messages_are_fragmented_and_reassembled():
    messages = [bytes([i % 256]) * size for i, size in enumerate([0, 1, 1103, 1104, 1105, 5000, 70_000, 3])]
    sim = run_stream(DEFAULT, Impairment(loss=0.2, reorder=0.1, delay=0.01, jitter=0.005, seed=11), messages)
    assert sim.received["b"] == messages
    assert max(len(d) for d in [m for m in messages]) > DEFAULT.max_datagram  # really fragmented


def test_no_datagram_exceeds_the_payload_limit():
    config = DEFAULT.with_changes(max_datagram=600)
    seen = []
    link = Impairment(loss=0.1, seed=5)
    original = link.apply
    link.apply = lambda datagram, now: (seen.append(len(datagram)), original(datagram, now))[1]
    sim = run_stream(config, link, [b"x" * 5000, b"y" * 10, b"z" * 599])
    assert sim.received["b"] == [b"x" * 5000, b"y" * 10, b"z" * 599]
    assert max(seen) <= 600


def test_the_smallest_datagram_allowed_still_carries_the_largest_message():
    # A fragment's count is 16-bit: with 1-byte fragments a 64 KiB message raised in
    # send_message(), inside the server's read callback.
    smallest = smallest_max_datagram(DEFAULT.max_message)
    with pytest.raises(ValueError, match=f"max_datagram must be from {smallest} to 65507"):
        DEFAULT.with_changes(max_datagram=smallest - 1)
    config = DEFAULT.with_changes(max_datagram=smallest)
    largest = bytes(range(256)) * (DEFAULT.max_message // 256)
    sim = run_stream(config, Impairment(seed=2), [largest])
    assert sim.received["b"] == [largest]


def test_a_message_over_max_message_is_reported_not_dropped_in_silence():
    # The receiver dropped it and went on: the sender's next frames were read without it.
    sender = ReliableEndpoint(DEFAULT.with_changes(max_message=4 * DEFAULT.max_message), token=7, now=0.0)
    receiver = ReliableEndpoint(DEFAULT, token=7, now=0.0)
    sender.send_message(b"x" * (DEFAULT.max_message + 1), 0.0)
    sender.send_message(b"after", 0.0)
    now = 0.0
    while sender.unacknowledged and now < 60:
        now += 0.01
        for datagram in sender.datagrams_to_send(now):
            receiver.receive_datagram(datagram, now)
        for datagram in receiver.datagrams_to_send(now):
            sender.receive_datagram(datagram, now)
        sender.handle_timer(now), receiver.handle_timer(now)
    events = receiver.pop_events()
    assert events == [MessageTooLarge(1, DEFAULT.max_message), MessageReceived(2, b"after")]


def test_both_directions_at_once():
    sim = Simulation(DEFAULT, Impairment(loss=0.15, duplicate=0.05, delay=0.01, jitter=0.004, seed=21))
    forward, backward = payloads(200), [m.upper() for m in payloads(200)]
    for i in range(200):
        sim.send_at(i * 0.003, "a", forward[i])
        sim.send_at(i * 0.003 + 0.001, "b", backward[i])
    sim.run(until=3600)
    assert sim.received["b"] == forward and sim.received["a"] == backward


def test_duplicates_and_reordering_are_suppressed_and_counted():
    sim = run_stream(DEFAULT, Impairment(duplicate=0.3, reorder=0.2, delay=0.01, jitter=0.01, seed=8), payloads(300))
    assert sim.received["b"] == payloads(300)
    stats = sim.endpoints["b"].stats
    assert stats.duplicates_dropped > 0 and stats.out_of_order_buffered > 0


def test_packets_above_a_gap_are_held_up_to_max_early_bytes_then_dropped_and_sent_again():
    # Without a limit in bytes a peer sending 64 KB datagrams made us hold 512 of them
    # (33 MB) above one missing packet, per session.
    config = DEFAULT.with_changes(max_early_bytes=60 + FRAGMENT_COST + 10)  # room for one
    receiver = ReliableEndpoint(config, token=7)

    def data_packet(number: int, message_id: int) -> bytes:
        return encode(Packet(7, number, 1, fragments=(Fragment(message_id, 0, 1, bytes([64 + message_id]) * 60),)))

    receiver.receive_datagram(data_packet(2, 2), 0.0)  # #1 is missing: held
    receiver.receive_datagram(data_packet(3, 3), 0.0)  # two would pass the limit: dropped, not acked
    assert receiver.stats.beyond_window_dropped == 1 and receiver.stats.out_of_order_buffered == 1
    assert decode(receiver.datagrams_to_send(0.0)[0]).ranges == ((2, 2),)
    receiver.receive_datagram(data_packet(1, 1), 0.1)  # the gap fills, always taken
    receiver.receive_datagram(data_packet(3, 3), 0.2)  # sent again: now in order
    assert [event.message_id for event in receiver.pop_events()] == [1, 2, 3]


def test_empty_fragments_held_above_a_gap_count_too():
    # Counting data only, 511 packets of 255 empty fragments each counted as nothing and held 15 MB.
    receiver = ReliableEndpoint(DEFAULT.with_changes(max_early_bytes=100 * FRAGMENT_COST), token=7)
    empties = tuple(Fragment(1, index, 255, b"") for index in range(60))
    receiver.receive_datagram(encode(Packet(7, 2, 1, fragments=empties)), 0.0)  # held: 60 fragments
    receiver.receive_datagram(encode(Packet(7, 3, 1, fragments=empties)), 0.0)  # 120 > 100: dropped
    assert (receiver.stats.out_of_order_buffered, receiver.stats.beyond_window_dropped) == (1, 1)


def test_a_small_max_early_bytes_costs_retransmissions_never_a_message():
    messages = payloads(300, size=200)
    small = run_stream(DEFAULT.with_changes(max_early_bytes=500), Impairment(loss=0.1, reorder=0.2, delay=0.01, jitter=0.01, seed=3), messages)
    assert small.received["b"] == messages
    assert small.endpoints["b"].stats.beyond_window_dropped > 0


def test_retry_budget_exhausted_reports_every_message_failed():
    # The link dies after 0.5 s: what was acknowledged is delivered, the rest is reported failed.
    config = DEFAULT.with_changes(max_retries=4)
    sim = Simulation(config, Impairment(delay=0.01, seed=1))
    messages = payloads(200)
    for i, data in enumerate(messages):
        sim.send_at(i * 0.005, "a", data)
    sim.run(until=0.5, stop_when_settled=False)
    sim.link.loss = 1.0
    sim.back_link.loss = 1.0
    sim.run(until=600)
    endpoint = sim.endpoints["a"]
    assert endpoint.failed is not None
    delivered, failed = set(sim.delivered["a"]), set(sim.failed["a"])
    assert not delivered & failed
    assert delivered | failed == set(sim.sent_ids["a"])  # nothing silently dropped
    assert failed and delivered
    assert sim.received["b"] == messages[: len(sim.received["b"])]  # a prefix, in order, no duplicates
    # A message sent after giving up fails at once too.
    late = endpoint.send_message(b"too late", sim.now)
    assert MessageFailed(late, endpoint.failed) in endpoint.pop_events()


def test_retry_budget_takes_about_the_backed_off_time():
    config = DEFAULT.with_changes(max_retries=5, initial_rto=0.5, min_rto=0.5, backoff=2.0, max_rto=60)
    sim = Simulation(config, Impairment(loss=1.0, seed=1))
    sim.send_at(0.0, "a", b"into the void")
    sim.run(until=3600)
    # 0.5 + 1 + 2 + 4 + 8 + 16 seconds: five retransmissions, then the last timer.
    assert sim.failed["a"] == [1]
    assert sim.endpoints["a"].stats.retransmitted == 5
    assert sim.now == pytest.approx(31.5)


# ------------------------------------------------------------ timing


def test_rto_converges_toward_the_simulated_rtt():
    rtt = 0.1  # 50 ms each way, up to 2 ms jitter
    config = DEFAULT.with_changes(min_rto=0.01)
    sim = run_stream(config, Impairment(delay=0.05, jitter=0.002, seed=4), payloads(500), spacing=0.02)
    stats = sim.endpoints["a"].stats
    assert stats.srtt == pytest.approx(rtt + 0.001, abs=0.005)
    # RTO = SRTT + 4 RTTVAR + peer's ack delay: close above the RTT, far below the 1 s initial RTO.
    assert rtt < stats.rto < rtt + 0.01 + config.ack_delay + 0.01


def test_turbo_recovers_from_a_loss_faster_than_default():
    def recovery_time(config):
        # Every third datagram a -> b is lost once at the start; measure the last delivery.
        sim = run_stream(config, Impairment(loss=0.3, delay=0.03, seed=2), payloads(50), spacing=0.02)
        return sim.now

    assert recovery_time(TURBO) < recovery_time(DEFAULT)


def test_arrival_times_show_what_turbo_buys_a_message_sent_alone():
    """Lab 2, part 4: one message every 0.5 s over 10 % loss. Each is the last of its burst, so
    no later packet can reveal its loss: it waits for the RTO, which turbo keeps short."""
    def waits(config) -> list[float]:
        sim = run_stream(config, Impairment(loss=0.1, delay=0.05, jitter=0.005, seed=1), payloads(200), spacing=0.5)
        assert len(sim.received_at["b"]) == len(sim.received["b"]) == 200
        assert sim.received_at["b"] == sorted(sim.received_at["b"])
        return [at - i * 0.5 for i, at in enumerate(sim.received_at["b"])]

    default, turbo = waits(DEFAULT), waits(TURBO)
    assert min(default) >= 0.05 and min(turbo) >= 0.05  # nothing arrives sooner than the link's delay
    assert max(turbo) < max(default)


def test_retransmissions_at_ten_percent_loss_stay_near_the_minimum():
    """At 10% loss each way, retransmissions <= 1.5 x the loss-implied minimum.

    The loss-implied minimum: every data packet must cross the lossy a -> b
    link at least once. Each transmission survives with probability 1 - p, so
    an ideal sender needs on average 1 / (1 - p) transmissions per packet,
    i.e. P * p / (1 - p) retransmissions for P data packets (p = 0.1: 0.111
    per packet). Loss on the b -> a ack link adds nothing to that minimum for
    a continuous stream: acks are cumulative and every later ack repeats the
    earlier ones, so a lost ack need not cause a retransmission. (A sender
    whose only ack for a packet is lost - stop-and-wait, or the last packet of
    a burst - cannot tell ack loss from data loss; its floor would be
    1 / ((1 - p_data)(1 - p_ack)) transmissions per packet. We hold ourselves
    to the stricter data-only figure.) Summed over several seeds so that one
    unlucky tail does not decide the test.

    TURBO gets 2.5x instead: it resends a packet on KCP's skips without waiting
    to learn whether the previous copy arrived (see config.py), which is what
    buys its lower worst-case latency; about one copy in two of those is
    redundant (2.24x here; KCP's fast mode sends about 3x on its own test).
    """
    loss = 0.10
    for config, bound in ((DEFAULT, 1.5), (TURBO, 2.5)):
        retransmitted = minimum = 0.0
        for seed in range(6):
            link = Impairment(loss=loss, delay=0.02, jitter=0.002, seed=100 + seed)
            sim = run_stream(config, link, payloads(1500, 100))
            assert sim.received["b"] == payloads(1500, 100)
            stats = sim.endpoints["a"].stats
            retransmitted += stats.retransmitted
            minimum += stats.packets_sent * loss / (1 - loss)
        assert retransmitted <= bound * minimum, (config, retransmitted, minimum)


def _ack(cumulative: int, *ranges: tuple[int, int]) -> bytes:
    """A pure ack from the peer: everything below `cumulative`, plus selective ranges."""
    return encode(Packet(token=0, number=0, cumulative_ack=cumulative, ranges=tuple(sorted(ranges, reverse=True))))


def _sent_numbers(endpoint: ReliableEndpoint, now: float) -> list[int]:
    return [decode(d).number for d in endpoint.datagrams_to_send(now) if decode(d).number]


@pytest.mark.parametrize("skip_rule", [True, False], ids=["turbo", "turbo-without-skips"])
def test_turbo_resends_a_retransmission_after_two_skips_and_half_an_rtt(skip_rule):
    config = TURBO if skip_rule else TURBO.with_changes(resend_after_skips=None)
    endpoint = ReliableEndpoint(config)
    endpoint.send_message(b"m1", 0.0)
    assert _sent_numbers(endpoint, 0.0) == [1]
    endpoint.receive_datagram(_ack(2), 0.1)  # first RTT sample: SRTT 100 ms
    assert endpoint.stats.srtt == pytest.approx(0.1)
    for i, now in enumerate([0.10, 0.12, 0.14, 0.16, 0.18]):  # packets #2..#6; #2 is lost
        endpoint.send_message(b"m%d" % (i + 2), now)
        assert _sent_numbers(endpoint, now) == [i + 2]
    # #3 arrived, #2 did not: fast retransmit of #2 after one later packet (threshold 1).
    endpoint.receive_datagram(_ack(2, (3, 3)), 0.22)
    assert _sent_numbers(endpoint, 0.22) == [2]
    # Say that copy is lost too. Two skips (#4, #5 acked) come only 40 ms later,
    # less than half an SRTT: no copy yet.
    endpoint.receive_datagram(_ack(2, (3, 4)), 0.24)
    endpoint.receive_datagram(_ack(2, (3, 5)), 0.26)
    assert _sent_numbers(endpoint, 0.26) == []
    # The third skip, 60 ms after the retransmission: sent again, a round trip
    # before an ack of a packet sent after the retransmission could prove it lost.
    endpoint.receive_datagram(_ack(2, (3, 6)), 0.28)
    assert _sent_numbers(endpoint, 0.28) == ([2] if skip_rule else [])
    assert endpoint.stats.skip_resends == (1 if skip_rule else 0)
    # A repeated ack brings no news of a later packet: not a skip.
    endpoint.receive_datagram(_ack(2, (3, 6)), 0.40)
    assert _sent_numbers(endpoint, 0.40) == []


def test_skip_rule_is_off_in_default_and_validated():
    assert DEFAULT.resend_after_skips is None and TURBO.resend_after_skips == 2
    with pytest.raises(ValueError):
        TURBO.with_changes(resend_after_skips=0)
    with pytest.raises(ValueError):
        TURBO.with_changes(skip_resend_spacing=-0.1)


@pytest.mark.skipif(kcp_available() is not None, reason="kcp package not installed")
def test_turbo_meets_kcp_fast_mode_on_kcps_own_test():
    """Issue 4: on KCP's test (10 % loss, RTT 60-125 ms, an echo every 20 ms), the
    turbo preset's average and maximum RTT are no worse than KCP's fast mode, on
    the same seeded link at the bench's default seed (bench --seed 1)."""
    scenario = KcpScenario(seed=1)
    kcp, turbo = simulate_kcp("fast", scenario), simulate_reliable("turbo", scenario)
    assert turbo["delivery"]["delivered"] >= 1000 and turbo["messages_failed"] == 0
    assert turbo["avg_rtt_ms"] <= kcp["avg_rtt_ms"], (turbo["avg_rtt_ms"], kcp["avg_rtt_ms"])
    assert turbo["max_rtt_ms"] <= kcp["max_rtt_ms"], (turbo["max_rtt_ms"], kcp["max_rtt_ms"])


# ------------------------------------------------------------ pieces


def test_rtt_estimator_follows_rfc_6298():
    rtt = RttEstimator(initial_rto=1.0, min_rto=0.2, max_rto=60, backoff=2.0)
    assert rtt.rto == 1.0  # before any sample
    rtt.on_sample(0.5)
    assert (rtt.srtt, rtt.rttvar) == (0.5, 0.25)
    assert rtt.rto == pytest.approx(0.5 + 4 * 0.25)
    rtt.on_sample(0.3)
    assert rtt.rttvar == pytest.approx(0.75 * 0.25 + 0.25 * 0.2)
    assert rtt.srtt == pytest.approx(0.875 * 0.5 + 0.125 * 0.3)
    base = rtt.rto
    rtt.on_timeout()
    rtt.on_timeout()
    assert rtt.rto == pytest.approx(base * 4)  # backed off x2 per timeout
    for _ in range(20):
        rtt.on_timeout()
    assert rtt.rto == 60  # capped
    rtt.on_sample(0.3)  # Karn: a fresh sample ends the backoff
    assert rtt.rto < 2


def test_rtt_estimator_min_rto_and_backoff_factor():
    rtt = RttEstimator(initial_rto=0.2, min_rto=0.03, max_rto=2.0, backoff=1.5)
    for _ in range(50):
        rtt.on_sample(0.001)
    assert rtt.rto == 0.03
    rtt.on_timeout()
    assert rtt.rto == pytest.approx(0.045)


def test_ack_delay_is_subtracted_but_not_below_min_rtt():
    rtt = RttEstimator()
    rtt.on_sample(0.100)
    rtt.on_sample(0.130, ack_delay=0.025)  # 0.105 >= min 0.1: subtracted
    assert rtt.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.105)
    before = rtt.srtt
    rtt.on_sample(0.110, ack_delay=0.025)  # 0.085 < min 0.1: not subtracted
    assert rtt.srtt == pytest.approx(0.875 * before + 0.125 * 0.110)


def test_newreno_slow_start_avoidance_and_one_halving_per_episode():
    cc = NewReno(initial_window=10, minimum_window=2)
    for serial in range(1, 11):
        cc.on_ack(serial)
    assert cc.cwnd == 20  # slow start: +1 per ack
    cc.on_loss(sent_serial=11, latest_serial=30)
    assert cc.cwnd == 10 and cc.ssthresh == 10
    cc.on_loss(sent_serial=12, latest_serial=31)  # same episode: no second halving
    assert cc.cwnd == 10
    cc.on_ack(25)  # sent before the episode: no growth
    assert cc.cwnd == 10
    cc.on_ack(31)  # congestion avoidance: +1/cwnd
    assert cc.cwnd == pytest.approx(10.1)
    cc.on_loss(sent_serial=40, latest_serial=50)  # a new episode halves again
    assert cc.cwnd == pytest.approx(5.05)
    cc.on_timeout(latest_serial=60)
    assert cc.cwnd == 2


def test_congestion_window_limits_packets_in_flight():
    config = DEFAULT.with_changes(initial_cwnd=4, min_cwnd=2)
    endpoint = ReliableEndpoint(config)
    for _ in range(20):
        endpoint.send_message(b"z" * 1100, 0.0)  # one packet each
    assert len(endpoint.datagrams_to_send(0.0)) == 4


def test_send_window_limits_packets_in_flight():
    config = DEFAULT.with_changes(send_window=3, congestion_control=False)
    endpoint = ReliableEndpoint(config)
    for _ in range(20):
        endpoint.send_message(b"z" * 1100, 0.0)
    assert len(endpoint.datagrams_to_send(0.0)) == 3


def test_keepalive_only_when_idle_and_answered():
    config = DEFAULT.with_changes(keepalive_interval=10.0)
    sim = Simulation(config, Impairment(delay=0.01, seed=3))
    sim.send_at(0.0, "a", b"hello")
    sim.send_at(5.0, "a", b"still here")
    sim.run(until=60, stop_when_settled=False)
    a, b = sim.endpoints["a"].stats, sim.endpoints["b"].stats
    # Idle from ~5 s to 60 s: one keepalive per 10 s from one side, answered by an ack.
    assert 4 <= a.keepalives_sent + b.keepalives_sent <= 7
    assert sim.endpoints["a"].last_heard > 50


def test_small_messages_share_packets_when_the_window_is_full():
    sim = run_stream(DEFAULT, Impairment(delay=0.05, seed=1), payloads(1000), spacing=0.0001)
    stats = sim.endpoints["a"].stats
    assert sim.received["b"] == payloads(1000)
    assert stats.packets_sent < 200


def test_impairment_is_deterministic_for_a_seed():
    def fates(seed):
        link = Impairment(loss=0.3, duplicate=0.2, reorder=0.2, delay=0.01, jitter=0.01, seed=seed)
        return [link.apply(bytes([i]), i * 0.001) for i in range(200)]

    assert fates(1) == fates(1) and fates(1) != fates(2)
    link = Impairment(loss=0.25, seed=9)
    for i in range(4000):
        link.apply(b"x", 0.0)
    assert 900 < link.dropped < 1100


# ------------------------------------------------------------ the 32-bit fields at their limits


def _near_the_packet_number_limit(sim, numbers_left):
    """Start a's packet numbers (and b's expectations) `numbers_left` below the 32-bit limit."""
    first = MAX_PACKET_NUMBER - numbers_left
    sim.endpoints["a"]._next_packet = first
    receiver = sim.endpoints["b"]
    receiver._expected, receiver._largest_received = first, first - 1


def test_the_last_packet_numbers_are_acknowledged_then_the_rest_fails():
    # Packet 0xFFFFFFFF was sent; its cumulative ack, 0x100000000, does not fit in 32 bits,
    # and the receiver's next datagram raised struct.error. The largest number used is now
    # one less, and what cannot be numbered any more is reported, not held forever.
    sim = Simulation(DEFAULT, Impairment(loss=0.2, duplicate=0.1, reorder=0.2, delay=0.01, jitter=0.005, seed=4))
    _near_the_packet_number_limit(sim, 40)
    messages = [b"m%03d " % i + b"." * 1000 for i in range(60)]  # one packet each
    for i, data in enumerate(messages):
        sim.send_at(i * 0.001, "a", data)
    sim.run(until=600)
    assert sim.received["b"] == messages[:40]  # numbers MAX-40 ... MAX-1
    assert sorted(sim.delivered["a"]) == sim.sent_ids["a"][:40]
    assert sorted(sim.failed["a"]) == sim.sent_ids["a"][40:]
    assert sim.endpoints["a"].failed == "packet numbers exhausted"


def test_packet_number_0xffffffff_from_the_peer_is_dropped_not_fatal():
    receiver = ReliableEndpoint(DEFAULT, token=7)
    receiver._expected = receiver._largest_received = MAX_PACKET_NUMBER
    last = Packet(7, MAX_PACKET_NUMBER, 1, fragments=(Fragment(1, 0, 1, b"x"),))
    assert not receiver.receive_next_message(MAX_PACKET_NUMBER, 1, 0.0, b"x", 0.0)  # the fast lane declines
    receiver.receive_datagram(encode(last), 0.0)
    assert receiver.stats.beyond_window_dropped == 1 and receiver.pop_events() == []
    receiver.send_message(b"answer", 1.0)
    assert decode(receiver.datagrams_to_send(1.0)[0]).cumulative_ack == MAX_PACKET_NUMBER


def test_message_ids_wrap_from_0xffffffff_to_1():
    # The 2**32nd message raised struct.error in datagrams_to_send(): ids now start again at 1.
    sim = Simulation(DEFAULT, Impairment(loss=0.2, reorder=0.1, delay=0.01, seed=6))
    sim.endpoints["a"]._next_message_id = MAX_MESSAGE_ID - 2
    messages = [b"w%d" % i for i in range(6)] + [b"x" * 3000]
    for i, data in enumerate(messages):
        sim.send_at(i * 0.004, "a", data)
    sim.run(until=600)
    assert sim.sent_ids["a"] == [MAX_MESSAGE_ID - 2, MAX_MESSAGE_ID - 1, MAX_MESSAGE_ID, 1, 2, 3, 4]
    assert sim.received["b"] == messages
    assert sorted(sim.delivered["a"]) == sorted(sim.sent_ids["a"]) and sim.failed["a"] == []


# ------------------------------------------------------------ seeded scenarios, both ways


def _mixed_conversation(preset, seed):
    """Both sides talk at once, messages of 0 bytes to several fragments, a small or a full
    send window, loss from none to a quarter, duplication and heavy reordering."""
    rng = random.Random(seed)
    config = preset.with_changes(max_datagram=rng.choice([300, 1200]), send_window=rng.choice([8, 512]))
    loss = rng.choice([0.0, 0.1, 0.25])
    sim = Simulation(config, Impairment(loss=loss, duplicate=0.1, reorder=0.2, delay=0.01, jitter=0.01, seed=seed))
    sent: dict[str, list[bytes]] = {"a": [], "b": []}
    for i in range(120):
        side = rng.choice("ab")
        data = b"%s%d:" % (side.encode(), i) + rng.randbytes(rng.choice([0, 5, 280, 2500]))
        sent[side].append(data)
        sim.send_at(i * 0.01, side, data)
    sim.run(until=3600)
    return sim, sent, loss


@pytest.mark.parametrize("preset", [DEFAULT, TURBO], ids=["default", "turbo"])
@pytest.mark.parametrize("seed", range(12))
def test_mixed_conversations_deliver_exactly_once_in_order_with_bounded_retransmissions(preset, seed):
    sim, sent, loss = _mixed_conversation(preset, seed)
    assert sim.received["b"] == sent["a"] and sim.received["a"] == sent["b"]
    for side in "ab":
        assert sorted(sim.delivered[side]) == sorted(sim.sent_ids[side]) and sim.failed[side] == []
        stats = sim.endpoints[side].stats
        if preset is DEFAULT:
            # The loss-implied minimum, plus 10 % of the packets for the spurious fast
            # retransmits that reordering by more than the threshold causes.
            assert stats.retransmitted <= 2 * stats.packets_sent * (loss / (1 - loss) + 0.1)
        else:
            # Turbo resends on any reordering (threshold 1, skips): more, but still bounded.
            assert stats.retransmitted <= 1.5 * stats.packets_sent


def test_a_refused_message_takes_no_id_and_is_not_counted_as_sent():
    # It was counted in messages_sent and took an id, then raised: the counters no longer
    # added up (sent = delivered + failed + unacknowledged) and the id was never reported.
    endpoint = ReliableEndpoint(DEFAULT)
    with pytest.raises(ValueError, match="larger than max_message"):
        endpoint.send_message(b"x" * (DEFAULT.max_message + 1), 0.0)
    assert endpoint.send_message(b"fits", 0.0) == 1
    assert endpoint.stats.messages_sent == 1 == endpoint.unacknowledged


def _second_overtakes_first():
    """#2 arrives first and is acknowledged (the sender's one RTT sample, 100 ms); #1 arrives
    at 0.15 s, 100 ms after #2 did. Returns the sender and the receiver."""
    sender, receiver = ReliableEndpoint(DEFAULT), ReliableEndpoint(DEFAULT)
    sender.send_message(b"x" * 1000, 0.0)
    sender.send_message(b"y" * 1000, 0.0)
    first, second = sender.datagrams_to_send(0.0)
    receiver.receive_datagram(second, 0.05)
    for datagram in receiver.datagrams_to_send(0.05):
        sender.receive_datagram(datagram, 0.10)
    assert (sender.rtt.samples, sender.rtt.srtt, sender.rtt.rttvar) == (1, 0.1, 0.05)
    receiver.receive_datagram(first, 0.15)
    return sender, receiver


def test_an_endpoint_that_received_nothing_says_ack_delay_0():
    # It said the time since it was created: a client's HELLO went out with 4-5 ms there.
    endpoint = ReliableEndpoint(DEFAULT, token=0, now=10.0)
    endpoint.send_message(b"HELLO alice\n", 10.005)
    (datagram,) = endpoint.datagrams_to_send(10.005)
    assert decode(datagram).ack_delay == 0.0


def test_no_rtt_sample_when_the_acks_largest_packet_was_acknowledged_before():
    # #1 is acknowledged at once. The ack's delay field (100 ms) is how long #2 waited, but it
    # was subtracted from #1's 200 ms round trip: a 100 ms sample that shrank RTTVAR. RFC 9002
    # 5.1 takes no sample then.
    sender, receiver = _second_overtakes_first()
    acks = receiver.datagrams_to_send(0.15)
    assert decode(acks[0]).ack_delay == pytest.approx(0.1)  # #2's wait, not #1's
    for datagram in acks:
        sender.receive_datagram(datagram, 0.20)
    assert [type(e).__name__ for e in sender.pop_events()] == ["MessageDelivered"] * 2
    assert (sender.rtt.samples, sender.rtt.srtt, sender.rtt.rttvar) == (1, 0.1, 0.05)


def test_the_fast_lane_takes_no_rtt_sample_when_the_acks_largest_was_acknowledged_before():
    # The same, with #1's ack riding on the receiver's next message: the fast lane
    # (receive_next_message) must leave it to the general path, which takes no sample.
    from hellohi.reliable.packet import ACK_DELAY_UNIT, unpack_common_shape

    sender, receiver = _second_overtakes_first()
    receiver.send_message(b"answer", 0.15)
    (answer,) = receiver.datagrams_to_send(0.15)
    _, _, number, cumulative_ack, delay_units, _, _, _, data = unpack_common_shape(answer)
    assert cumulative_ack == 3
    assert not sender.receive_next_message(number, cumulative_ack, delay_units * ACK_DELAY_UNIT, data, 0.20)
    sender.receive_datagram(answer, 0.20)
    assert (sender.rtt.samples, sender.rtt.srtt, sender.rtt.rttvar) == (1, 0.1, 0.05)
    assert sender.unacknowledged == 0
