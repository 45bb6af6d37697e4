"""The fast lane (ReliableEndpoint.receive_next_message) changes nothing but speed.

A ping-pong is driven the way the glue drives it: a datagram arrives, the
message it carries is answered at once, the answer is sent, and only then is
the endpoint asked for its next deadline. On the fast lane the endpoint takes
the datagram from its unpacked fields and leaves the ack's accounting (the RTT
sample, the window, MessageDelivered, the answer's retransmission timer) until
after that send. Each seeded conversation runs with and without the lane; every
datagram, message, delivery and counter must come out the same.
"""

from __future__ import annotations

import dataclasses

import heapq
import itertools

import pytest

from hellohi.reliable import DEFAULT, TURBO, Impairment, ReliabilityConfig, ReliableEndpoint
from hellohi.reliable.endpoint import MessageDelivered, MessageFailed, MessageReceived
from hellohi.reliable.packet import ACK_DELAY_UNIT, unpack_common_shape

ACK_EVERY_PACKET = ReliabilityConfig(ack_every=1, ack_repeat_delay=None)
# A window of one packet, and answers of three packets each: every answer fills the
# window, and only the ack the lane has not yet accounted for opens it again.
ONE_PACKET_WINDOW = ReliabilityConfig(initial_cwnd=1.0, min_cwnd=1.0)
LARGE_ANSWER = 3000
LINKS = {
    "clean": dict(delay=0.005, seed=3),
    "lossy": dict(loss=0.1, delay=0.005, jitter=0.002, seed=5),
    "messy": dict(loss=0.05, duplicate=0.05, reorder=0.1, delay=0.005, jitter=0.004, seed=7),
}
ROUNDS = 150


def ping_pong(config: ReliabilityConfig, link: dict, lane: bool, answer_size: int = 0) -> dict:
    """a says `Hello i`, b answers `HI i` (padded to `answer_size`) as soon as it
    arrives, a says the next Hello when HI arrives."""
    endpoints = {"a": ReliableEndpoint(config), "b": ReliableEndpoint(config)}
    links = {"a": Impairment(**link), "b": Impairment(**{**link, "seed": link["seed"] + 1})}
    wire: list[tuple[float, int, str, bytes]] = []
    tiebreak = itertools.count()
    log = {"datagrams": [], "lane": 0}
    for side in "ab":
        log[side] = {"received": [], "delivered": [], "failed": []}

    def send(side: str, now: float) -> None:
        for datagram in endpoints[side].datagrams_to_send(now):
            log["datagrams"].append((side, now, datagram))
            for arrival, copy in links[side].apply(datagram, now):
                heapq.heappush(wire, (arrival, next(tiebreak), "b" if side == "a" else "a", copy))

    def take_events(side: str) -> list[bytes]:
        messages = []
        for event in endpoints[side].pop_events():
            if isinstance(event, MessageReceived):
                messages.append(event.data)
            elif isinstance(event, MessageDelivered):
                log[side]["delivered"].append(event.message_id)
            elif isinstance(event, MessageFailed):
                log[side]["failed"].append(event.message_id)
        return messages

    def arrive(side: str, datagram: bytes, now: float) -> list[bytes]:
        endpoint = endpoints[side]
        fields = unpack_common_shape(datagram) if lane else None
        if fields is not None:
            flags, _, number, cumulative_ack, delay_units, _, _, count, data = fields
            if not flags and count == 1 and endpoint.receive_next_message(
                    number, cumulative_ack, delay_units * ACK_DELAY_UNIT, data, now, len(datagram)):
                log["lane"] += 1
                return [data]  # its events (a MessageDelivered) wait until after the answer
        endpoint.receive_datagram(datagram, now)
        return take_events(side)

    def answer(side: str, messages: list[bytes], now: float) -> None:
        endpoint = endpoints[side]
        for message in messages:
            log[side]["received"].append(message)
            number = message.split()[1]
            if side == "b":
                answer = b"HI " + number + b" "
                endpoint.send_message(answer.ljust(answer_size, b"."), now)
            elif int(number) + 1 < ROUNDS:
                endpoint.send_message(b"Hello %d" % (int(number) + 1), now)

    endpoints["a"].send_message(b"Hello 0", 0.0)
    send("a", 0.0)
    now = 0.0
    while now < 600.0:
        deadlines = [(d, side) for side, e in endpoints.items() if (d := e.next_deadline()) is not None]
        if wire:
            deadlines.append((wire[0][0], ""))
        if not deadlines:
            break
        now = max(now, min(deadlines)[0])
        if wire and wire[0][0] <= now:
            _, _, side, datagram = heapq.heappop(wire)
            answer(side, arrive(side, datagram, now), now)
            send(side, now)
        else:
            side = min(deadlines)[1]
            endpoints[side].handle_timer(now)
            answer(side, take_events(side), now)
            send(side, now)
        for side in "ab":
            take_events(side)  # only deliveries and failures are left by now
    log["stats"] = {side: endpoint.stats for side, endpoint in endpoints.items()}
    return log


@pytest.mark.parametrize("config, answer_size", [(DEFAULT, 0), (TURBO, 0), (ACK_EVERY_PACKET, 0), (ONE_PACKET_WINDOW, LARGE_ANSWER)],
                         ids=["default", "turbo", "ack-every-packet", "one-packet-window"])
@pytest.mark.parametrize("link", list(LINKS), ids=list(LINKS))
def test_the_fast_lane_changes_nothing_but_the_path(config, answer_size, link):
    fast = ping_pong(config, LINKS[link], lane=True, answer_size=answer_size)
    general = ping_pong(config, LINKS[link], lane=False, answer_size=answer_size)
    assert general["lane"] == 0
    for side in "ab":
        assert fast[side] == general[side], side
        assert fast["stats"][side] == general["stats"][side], side
    # Datagram for datagram, byte for byte, at the same moments (so the timers matched too).
    assert fast["datagrams"] == general["datagrams"]
    # The whole ping-pong happened.
    assert [m.split()[1] for m in fast["a"]["received"]] == [b"%d" % i for i in range(ROUNDS)]
    assert not fast["a"]["failed"] and not fast["b"]["failed"]
    # ...and mostly on the lane, or the comparison would prove little. (Large answers
    # come in pieces, which the lane leaves alone: only the Hellos can take it.)
    lane_share = fast["lane"] / (ROUNDS if answer_size else 2 * ROUNDS)
    assert lane_share > (0.9 if link == "clean" else 0.4), lane_share


def test_the_lane_refuses_what_it_cannot_take_and_changes_nothing():
    endpoint = ReliableEndpoint(DEFAULT)
    endpoint.send_message(b"Hello", 0.0)
    endpoint.datagrams_to_send(0.0)
    # A copy of the counters: endpoint.stats is the live object, equal to itself whatever happens.
    before = (dataclasses.replace(endpoint.stats), endpoint.next_deadline(), endpoint.largest_received)
    # Out of order (packet 2 before 1), and acking a packet we never sent.
    assert not endpoint.receive_next_message(2, 2, 0.0, b"HI", 0.01, 40)
    assert not endpoint.receive_next_message(1, 5, 0.0, b"HI", 0.01, 40)
    assert (endpoint.stats, endpoint.next_deadline(), endpoint.largest_received) == before
    assert endpoint.pop_events() == []
    # The next packet in order, acking ours: taken; its ack shows at the next call.
    assert endpoint.receive_next_message(1, 2, 0.0, b"HI", 0.01, 40)
    assert endpoint.pop_events() == [MessageDelivered(1)]
    assert endpoint.stats.srtt == pytest.approx(0.01)
    assert endpoint.unacknowledged == 0
