"""Header prediction (ReliableEndpoint._take_predicted) changes nothing but speed.

Each seeded conversation is simulated twice: as it is, and with the prediction
switched off so that every packet takes the general path (_take_ack, then
_take_data). Every datagram sent, every event and every counter must come out
the same. The conversations mix what the prediction takes (the next packet in
order, one whole message, acking the one packet in flight) with everything it
must leave alone: loss, reordering, duplicates, several packets in flight,
fragmented messages.
"""

from __future__ import annotations

import pytest

from hellohi.reliable import DEFAULT, TURBO, Impairment, ReliabilityConfig, ReliableEndpoint
from hellohi.reliable.simulate import Simulation

ACK_EVERY_PACKET = ReliabilityConfig(ack_every=1, ack_repeat_delay=None)


def conversation(monkeypatch, config, link: dict, pattern, predict: bool) -> dict:
    """Run `pattern` through a Simulation; returns what the two endpoints did."""
    datagrams: list[bytes] = []
    predicted = [0]
    send, take_predicted = ReliableEndpoint.datagrams_to_send, ReliableEndpoint._take_predicted

    def recording_send(self, now):
        out = send(self, now)
        datagrams.extend(out)
        return out

    def counting_prediction(self, packet, now):
        if not predict:
            return False
        taken = take_predicted(self, packet, now)
        predicted[0] += taken
        return taken

    with monkeypatch.context() as patch:
        patch.setattr(ReliableEndpoint, "datagrams_to_send", recording_send)
        patch.setattr(ReliableEndpoint, "_take_predicted", counting_prediction)
        sim = Simulation(config, Impairment(**link))
        pattern(sim)
        sim.run(until=600.0)
    return {
        "datagrams": datagrams,
        "received": sim.received,
        "delivered": sim.delivered,
        "failed": sim.failed,
        "stats": {side: endpoint.stats for side, endpoint in sim.endpoints.items()},
        "predicted": predicted[0],
    }


def ping_pong(sim: Simulation, count: int = 300) -> None:
    # b answers each of a's messages shortly after it arrives (the link's delay is 5 ms):
    # one packet in flight each way, the case the prediction is for.
    for i in range(count):
        sim.send_at(i * 0.03, "a", f"Hello {i}".encode())
        sim.send_at(i * 0.03 + 0.012, "b", f"HI {i}".encode())


def bursts(sim: Simulation, count: int = 300) -> None:
    # Ten messages at once, then a pause: several packets in flight, acks that cover some.
    for i in range(count):
        sim.send_at((i // 10) * 0.05, "a", f"burst {i}".encode())
    for i in range(count // 10):
        sim.send_at(i * 0.05 + 0.02, "b", f"reply {i}".encode())


def large_messages(sim: Simulation, count: int = 40) -> None:
    # Messages of several fragments each, both ways, and small ones between them.
    for i in range(count):
        sim.send_at(i * 0.04, "a", bytes([i % 251]) * (3000 + 97 * i))
        sim.send_at(i * 0.04 + 0.02, "b", f"small {i}".encode())


PATTERNS = {"ping-pong": ping_pong, "bursts": bursts, "large": large_messages}
# Settings, not Impairment objects: each run needs a fresh one, its random source unused.
LINKS = {
    "clean": dict(delay=0.005, seed=3),
    "lossy": dict(loss=0.1, delay=0.005, jitter=0.002, seed=5),
    "messy": dict(loss=0.05, duplicate=0.05, reorder=0.1, delay=0.005, jitter=0.004, seed=7),
}


@pytest.mark.parametrize("config", [DEFAULT, TURBO, ACK_EVERY_PACKET], ids=["default", "turbo", "ack-every-packet"])
@pytest.mark.parametrize("link", list(LINKS), ids=list(LINKS))
@pytest.mark.parametrize("pattern", list(PATTERNS), ids=list(PATTERNS))
def test_prediction_changes_nothing_but_the_path(monkeypatch, config, link, pattern):
    with_prediction = conversation(monkeypatch, config, LINKS[link], PATTERNS[pattern], predict=True)
    without = conversation(monkeypatch, config, LINKS[link], PATTERNS[pattern], predict=False)
    assert without["predicted"] == 0
    for key in ("received", "delivered", "failed", "stats"):
        assert with_prediction[key] == without[key], key
    # Datagram for datagram, byte for byte (acks, ack delays and timing included).
    assert len(with_prediction["datagrams"]) == len(without["datagrams"])
    assert with_prediction["datagrams"] == without["datagrams"]
    # Every message arrived, so both runs did the whole job.
    assert not with_prediction["failed"]["a"] and not with_prediction["failed"]["b"]


@pytest.mark.parametrize("link", list(LINKS), ids=list(LINKS))
def test_a_ping_pong_mostly_takes_the_predicted_path(monkeypatch, link):
    """Otherwise the comparison above would prove nothing about the prediction."""
    result = conversation(monkeypatch, DEFAULT, LINKS[link], ping_pong, predict=True)
    data_packets = sum(stats.messages_received for stats in result["stats"].values())
    assert data_packets == 600
    share = result["predicted"] / data_packets
    assert share > (0.9 if link == "clean" else 0.4), share
