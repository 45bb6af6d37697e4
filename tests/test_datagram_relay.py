"""The relay over datagrams, sans-I/O: sessions, tokens, spoofing, amplification, loss.

A fake clock and seeded impaired paths move datagrams between a DatagramRelay
(the UDP server without its socket) and DatagramLink clients (the UDP client
without its socket). Addresses are plain tuples; nothing touches a network.
"""

from __future__ import annotations

import heapq
import itertools

import pytest

from hellohi.client_session import (ClientSession, DuplicateDropped, ErrorReceived, MessageReceived, Registered,
                                    StatusChanged)
from hellohi.codec import Ack, Bye, Hello, Hi, Send, decode_all, encode
from hellohi.datagram_client import DatagramLink, LinkFailed, SessionReset, padded_plain_hello
from hellohi.datagram_relay import DatagramLimits, DatagramRelay
from hellohi.reliable import DEFAULT, TURBO, Impairment
from hellohi.reliable.packet import FLAG_CHALLENGE, FLAG_RESET, FLAG_RESPONSE, Fragment, Packet, decode, encode as encode_packet, reset_packet
from hellohi.relay import Relay, RelayLimits
from hellohi.store import MessageStore

SERVER = ("198.18.0.1", 5000)


class Client:
    def __init__(self, net: "Network", name: str, address, plain: bool, config):
        self.net, self.name, self.address = net, name, address
        self.link = DatagramLink(None if plain else config)
        self.session = ClientSession(name)
        self.events: list = []
        self.lost: list = []

    def hello(self) -> None:
        self.link.start(self.net.now)
        self.write(self.session.hello())

    def send(self, to: str, body: bytes) -> str:
        frame = self.session.send(to, body)
        self.write(frame)
        return frame.ref

    def write(self, frame) -> None:
        self.link.send_frame(frame, self.net.now)
        self.pump()

    def pump(self) -> None:
        for datagram in self.link.datagrams_to_send(self.net.now):
            self.net.transmit(datagram, self.address, SERVER)

    def take(self, items) -> None:
        for item in items:
            if isinstance(item, (SessionReset, LinkFailed)):
                self.lost.append(item)
                continue
            events, replies = self.session.receive(item)
            self.events += events
            for reply in replies:
                self.write(reply)
            for event in events:
                if isinstance(event, MessageReceived):  # this test's application takes it at once
                    self.write(self.session.acknowledge(event))
        self.pump()

    def received(self) -> list[bytes]:
        return [e.body for e in self.events if isinstance(e, MessageReceived)]

    @property
    def registered(self) -> bool:
        return any(isinstance(e, Registered) for e in self.events)


class Network:
    """One server, many clients, a fake clock, and an impaired path per direction."""

    def __init__(self, config=DEFAULT, up: Impairment | None = None, down: Impairment | None = None,
                 datagram_limits: DatagramLimits | None = None, **limits):
        self.now = 0.0
        self.config = config
        self.store = MessageStore(":memory:")
        tokens = itertools.count(0x1000)
        self.server = DatagramRelay(
            Relay(self.store, RelayLimits(**limits)), config, new_token=lambda: next(tokens), limits=datagram_limits or DatagramLimits()
        )
        self.up, self.down = up, down
        self.clients: dict[tuple, Client] = {}
        self.sent_to: dict[tuple, int] = {}  # bytes the server sent to each address
        self.datagrams_to: dict[tuple, list[bytes]] = {}
        self.received_from: dict[tuple, int] = {}
        self._wire: list = []
        self._order = itertools.count()

    def client(self, name: str, port: int, plain: bool = False) -> Client:
        client = Client(self, name, ("198.18.0.2", port), plain, self.config)
        self.clients[client.address] = client
        return client

    def transmit(self, datagram: bytes, source, destination) -> None:
        link = self.up if destination == SERVER else self.down
        copies = link.apply(datagram, self.now) if link else [(self.now, datagram)]
        for arrival, copy in copies:
            heapq.heappush(self._wire, (arrival, next(self._order), copy, source, destination))

    def inject(self, datagram: bytes, source) -> None:
        """A datagram from anyone (a spoofer, a fuzzer) straight to the server."""
        heapq.heappush(self._wire, (self.now, next(self._order), datagram, source, SERVER))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadlines = [self.server.next_deadline()] + [c.link.next_deadline() for c in self.clients.values()]
            deadlines = [d for d in deadlines if d is not None]
            if self._wire:
                deadlines.append(self._wire[0][0])
            if not deadlines or min(deadlines) > end:
                self.now = end
                return
            self.now = max(self.now, min(deadlines))
            while self._wire and self._wire[0][0] <= self.now:
                _, _, datagram, source, destination = heapq.heappop(self._wire)
                if destination == SERVER:
                    self.received_from[source] = self.received_from.get(source, 0) + len(datagram)
                    self.server.receive(datagram, source, self.now)
                    self._server_out()
                elif destination in self.clients:
                    client = self.clients[destination]
                    client.take(client.link.receive(datagram, self.now))
            deadline = self.server.next_deadline()
            if deadline is not None and deadline <= self.now:
                self.server.on_timer(self.now)
                self._server_out()
            for client in list(self.clients.values()):
                deadline = client.link.next_deadline()
                if deadline is not None and deadline <= self.now:
                    client.take(client.link.handle_timer(self.now))

    def _server_out(self) -> None:
        for datagram, address in self.server.outgoing():
            self.sent_to[address] = self.sent_to.get(address, 0) + len(datagram)
            self.datagrams_to.setdefault(address, []).append(datagram)
            self.transmit(datagram, SERVER, address)


# ------------------------------------------------------------ sessions


def test_hello_hi_and_live_relay_over_reliable_datagrams():
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    assert alice.registered and bob.registered
    ref = alice.send("bob", b"hi bob")
    net.run(1)
    assert bob.received() == [b"hi bob"]
    states = [e.state for e in alice.events if isinstance(e, StatusChanged) and e.ref == ref]
    assert states == ["stored", "delivered"]


def test_a_link_sends_and_reads_messages_without_the_frame_codec():
    """send_message() and receive_messages(), which the bench's hello-raw uses: the same
    session and reliability as send_frame() and receive(), one layer down."""
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__)
    link = DatagramLink(DEFAULT)
    link.start(0.0)
    messages: list = []

    def exchange(data: bytes, now: float) -> None:
        link.send_message(data, now)
        for step in range(3):  # Hello; the empty message that proves our address; nothing left
            for datagram in link.datagrams_to_send(now + step * 0.001):
                server.receive(datagram, ("198.18.0.2", 1), now + step * 0.001)
            for datagram, _ in server.outgoing():
                messages.extend(link.receive_messages(datagram, now + step * 0.001))

    exchange(b"Hello raw\n", 0.0)
    assert link.token == 0x1000
    assert len(messages) == 1 and isinstance(messages[0], bytes)
    [hi] = decode_all(messages[0])
    assert isinstance(hi, Hi) and hi.name == "raw"
    exchange(b"Hello\n", 0.1)  # a repeated Hello on the session: HI again
    assert len(messages) == 2 and decode_all(messages[1]) == [hi]
    assert link.stats.messages_delivered == 3  # both Hellos and the empty message, acknowledged


def test_messages_one_layer_down_are_for_reliable_mode_only():
    plain = DatagramLink(None)
    plain.start(0.0)
    with pytest.raises(ValueError, match="reliable mode"):
        plain.send_message(b"Hello\n", 0.0)
    with pytest.raises(ValueError, match="reliable mode"):
        plain.receive_messages(b"HI x hellohi/1 5000\n", 0.0)


def test_plain_clients_share_the_port_with_reliable_ones():
    net = Network()
    alice, bob = net.client("alice", 1, plain=True), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    alice.send("bob", b"fire and forget")
    net.run(1)
    assert bob.received() == [b"fire and forget"]


def relay_conversation(monkeypatch, lanes: bool) -> dict:
    """alice and bob say Hello, then alice sends bob 100 messages over a lossy path."""
    import hellohi.client_session
    import hellohi.datagram_client
    import hellohi.datagram_relay
    from hellohi.reliable import ReliableEndpoint

    taken = [0]
    receive_next_message = ReliableEndpoint.receive_next_message

    def counted(self, *args):
        took = receive_next_message(self, *args)
        taken[0] += took
        return took

    with monkeypatch.context() as patch:
        patch.setattr(ReliableEndpoint, "receive_next_message", counted)
        patch.setattr(hellohi.client_session.secrets, "token_hex", lambda size: "ab" * size)  # the same refs in both runs
        if not lanes:  # every datagram takes the general path
            patch.setattr(hellohi.datagram_relay, "unpack_common_shape", lambda datagram: None)
            patch.setattr(hellohi.datagram_client, "unpack_common_shape", lambda datagram: None)
        net = Network(DEFAULT, Impairment(loss=0.1, delay=0.01, jitter=0.004, seed=3),
                      Impairment(loss=0.1, delay=0.01, jitter=0.004, seed=4))
        alice, bob = net.client("alice", 1), net.client("bob", 2)
        alice.hello(), bob.hello()
        net.run(5)
        for i in range(100):
            alice.send("bob", f"message {i}".encode())
            net.run(0.05)
        net.run(60)
    return {"server sent": net.datagrams_to, "bob got": bob.received(), "alice saw": alice.events,
            "stats": net.server.stats, "taken": taken[0]}


def test_the_fast_lanes_of_relay_and_link_change_nothing_but_the_path(monkeypatch):
    fast, general = relay_conversation(monkeypatch, lanes=True), relay_conversation(monkeypatch, lanes=False)
    assert general["taken"] == 0 and fast["taken"] > 100
    assert fast["bob got"] == [f"message {i}".encode() for i in range(100)]
    for key in ("server sent", "bob got", "alice saw", "stats"):
        assert fast[key] == general[key], key


@pytest.mark.parametrize("config", [DEFAULT, TURBO], ids=["default", "turbo"])
def test_exactly_once_in_order_through_the_relay_under_heavy_loss(config):
    up = Impairment(loss=0.3, duplicate=0.05, reorder=0.1, delay=0.02, jitter=0.01, seed=7)
    down = Impairment(loss=0.3, duplicate=0.05, reorder=0.1, delay=0.02, jitter=0.01, seed=8)
    net = Network(config, up, down)
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(20)
    assert alice.registered and bob.registered
    bodies = [f"message {i}".encode() for i in range(200)]
    for body in bodies:
        alice.send("bob", body)
    net.run(120)
    assert bob.received() == bodies
    assert alice.lost == [] and bob.lost == []


def test_offline_message_waits_for_the_recipient():
    net = Network()
    alice, carol = net.client("alice", 1), net.client("carol", 3)
    alice.hello(), carol.hello()
    net.run(1)
    carol.write(Bye())  # carol has been here before, so her name is known
    net.run(1)
    carol.events.clear()
    ref = alice.send("carol", b"for later")
    net.run(1)
    assert [e.state for e in alice.events if isinstance(e, StatusChanged) and e.ref == ref] == ["stored"]
    carol.hello()
    net.run(1)
    assert carol.received() == [b"for later"]


def test_a_silent_client_is_dropped_and_its_messages_are_stored():
    net = Network(heartbeat_interval=1.0, heartbeat_timeout=3.0)
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(0.5)
    del net.clients[bob.address]  # bob's machine vanishes without a word
    net.run(10)
    assert net.server.relay.online == ["alice"] or net.server.relay.online == []
    assert "bob" not in net.server.relay.online
    alice.send("bob", b"you were gone")
    net.run(1)
    assert net.store.waiting_counts() == {"bob": 1}


def test_unknown_token_is_answered_with_reset_and_the_client_starts_over():
    net = Network()
    alice = net.client("alice", 1)
    alice.hello()
    net.run(1)
    # The server restarts: same store, no sessions.
    net.server = DatagramRelay(Relay(net.store, RelayLimits()), DEFAULT, new_token=iter(range(0x9000, 0x9999)).__next__)
    alice.write(Send("bob", "r1", b"after restart"))
    net.run(5)
    assert alice.lost and isinstance(alice.lost[0], SessionReset)


# ------------------------------------------------------------ safety


def test_no_amplification_before_the_address_is_verified():
    """A spoofer sends Hellos 'from' a victim; the victim never gets more bytes than were sent in its name:
    only acks, as nothing the session says reaches the relay before its address is proven."""
    net = Network()
    alice, carol = net.client("alice", 1), net.client("carol", 3)
    alice.hello(), carol.hello()
    net.run(1)
    carol.write(Bye())
    net.run(1)
    for i in range(20):  # stored for carol: a big answer waits for whoever says Hello carol
        alice.send("carol", b"x" * 1000)
    net.run(2)
    assert net.store.waiting_counts() == {"carol": 20}
    victim = ("198.18.0.66", 9)
    spoofer = DatagramLink(DEFAULT)
    spoofer.start(net.now)
    spoofer.send_frame(Hello("carol"), net.now)
    for datagram in spoofer.datagrams_to_send(net.now):
        net.inject(datagram, victim)
    net.run(30)
    assert net.received_from[victim] > 0
    assert 0 < net.sent_to[victim] <= net.received_from[victim]
    assert "carol" not in net.server.relay.online and net.store.waiting_counts() == {"carol": 20}


def test_a_forged_first_datagram_takes_no_name_and_acknowledges_no_message():
    """Someone who forges a source address sends `HELLO alice` and `ACK <id>` in token-0 datagrams.
    The relay took both: alice's name went to an address that never answers (the real alice got
    ERR 409), her message was removed from the store unread, and bob was told "delivered"."""
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    alice.write(Bye())
    net.run(1)
    ref = bob.send("alice", b"for alice only")
    net.run(1)
    [stored] = [e.id for e in bob.events if isinstance(e, StatusChanged) and e.ref == ref]
    forger = DatagramLink(DEFAULT)
    forger.start(net.now)
    forger.send_frame(Hello("alice"), net.now)
    forger.send_frame(Ack(stored), net.now)  # message ids are no secret: they count up
    for datagram in forger.datagrams_to_send(net.now):
        net.inject(datagram, ("198.18.0.66", 9))
    net.run(1)
    assert net.server.relay.online == ["bob"] and net.store.waiting_counts() == {"alice": 1}
    alice.events.clear()
    alice.hello()
    net.run(1)
    assert alice.registered and alice.received() == [b"for alice only"]
    assert [e.state for e in bob.events if isinstance(e, StatusChanged) and e.ref == ref] == ["stored", "delivered"]


def test_a_forged_datagram_from_a_clients_own_address_in_its_first_round_trip_says_nothing():
    """Until it has our token a client sends only its first packet (its Hello, maybe again).
    A token-0 packet #2 "from" alice's address, forged while she waits for our answer, joined
    her session and was heard with her Hello once she proved the address: bob got a SEND
    from "alice" that she never wrote."""
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    bob.hello()
    net.run(1)
    alice.hello()  # her first datagram is on its way
    forged = Packet(0, 2, 1, fragments=(Fragment(2, 0, 1, encode(Send("bob", "r1", b"forged"))),))
    net.inject(encode_packet(forged).ljust(DEFAULT.max_datagram, b"\0"), alice.address)
    net.run(1)
    assert alice.registered and bob.received() == []
    alice.send("bob", b"from alice")
    net.run(1)
    assert bob.received() == [b"from alice"]


def test_a_session_that_says_too_much_before_proving_its_address_is_dropped():
    # Only the token's holder can say more than its first packet before the proof (a token-0
    # packet #2 is refused as forged): here from a new address, whose CHALLENGE it never answers.
    net = Network()
    first, moved = ("198.18.0.66", 9), ("198.18.0.67", 9)
    pings = b"PING abcdefgh\n" * 80  # 1,120 bytes a datagram: 60 of them say more than a 1,024-byte
    net.inject(encode_packet(Packet(0, 1, 1, fragments=(Fragment(1, 0, 1, pings),))), first)  # line and a
    net.run(0.01)                                                                               # 65,536-byte body
    token = decode(net.datagrams_to[first][0]).token
    for number in range(2, 61):
        net.inject(encode_packet(Packet(token, number, 1, fragments=(Fragment(number, 0, 1, pings),))), moved)
    net.run(1)
    assert net.server._by_connection == {} and not net.server.relay.is_connected(1)
    answers = [decode(datagram) for datagram in net.datagrams_to[first] + net.datagrams_to[moved]]
    assert all(not packet.fragments or packet.flags & FLAG_CHALLENGE for packet in answers)  # acks, CHALLENGEs; no PONG


def test_forged_sessions_make_room_for_real_clients_when_the_server_is_full():
    """One forged datagram per made-up address filled --max-clients, and every real client got
    ERR 503 until those sessions timed out. Now the oldest session whose address never proved
    itself makes room; a proven session never does."""
    net = Network(max_clients=3)
    forger = DatagramLink(DEFAULT)
    forger.start(net.now)
    forger.send_frame(Hello(), net.now)
    [first_datagram] = forger.datagrams_to_send(net.now)
    for port in (1, 2):
        net.inject(first_datagram, ("198.18.0.66", port))
    net.inject(padded_plain_hello(b"Hello\n"), ("198.18.0.66", 3))  # plain sessions too
    net.run(0.1)
    assert len(net.server._by_connection) == 3
    names = ["alice", "bob", "carol", "dave"]
    clients = [net.client(name, 10 + i) for i, name in enumerate(names)]
    for client in clients:
        client.hello()
        net.run(1)
    assert [client.registered for client in clients] == [True, True, True, False]
    assert [(e.code, e.reason) for e in clients[3].events if isinstance(e, ErrorReceived)] == [(503, "server-full")]
    assert net.server.relay.online == ["alice", "bob", "carol"]
    clients[0].send("bob", b"served as before")
    net.run(1)
    assert clients[1].received() == [b"served as before"]


def test_plain_hello_is_not_amplified_either():
    net = Network()
    victim = ("198.18.0.66", 9)
    net.inject(b"Hello\n", victim)  # short and unpadded: HI would be bigger
    net.run(1)
    assert net.sent_to.get(victim, 0) <= 6


def test_plain_client_is_verified_by_answering_the_ping_secret():
    net = Network()
    alice = net.client("alice", 1, plain=True)
    alice.hello()
    net.run(1)
    assert alice.registered
    session = net.server._by_address[alice.address]
    assert session.verified


class DropFirst:
    """An impaired path that loses the first `count` datagrams and delivers the rest at once."""

    def __init__(self, count: int = 1):
        self.left = count
        self.seen: list[bytes] = []  # every datagram sent on this path, lost or not

    def apply(self, datagram: bytes, now: float):
        self.seen.append(datagram)
        if self.left > 0:
            self.left -= 1
            return []
        return [(now, datagram)]


def hellos_in(datagrams: list[bytes]) -> int:
    return sum(d.lstrip().upper().startswith(b"HELLO") for d in datagrams)


@pytest.mark.parametrize("lost", ["hello", "hi"])
def test_plain_client_says_hello_again_when_hello_or_hi_was_lost(lost):
    # Plain mode retransmits nothing else; without this a lost Hello or HI left
    # the client waiting out its whole connect timeout (Lab 2, part 2).
    up, down = DropFirst(1 if lost == "hello" else 0), DropFirst(1 if lost == "hi" else 0)
    net = Network(up=up, down=down)
    alice = net.client("alice", 1, plain=True)
    alice.hello()
    net.run(0.9)
    assert not alice.registered
    net.run(0.2)  # PLAIN_HELLO_RETRY (1 s) has passed: Hello again, and this time HI
    assert alice.registered
    assert hellos_in(up.seen) == 2
    assert len(net.server._by_connection) == 1  # one session: a repeated Hello is answered with HI again
    assert alice.link.next_deadline() is None  # answered: nothing more to say again
    net.run(5)
    assert hellos_in(up.seen) == 2


def test_plain_client_does_not_repeat_a_hello_after_hi_or_after_giving_up():
    net = Network(up=DropFirst(count=100))  # nothing gets through
    alice = net.client("alice", 1, plain=True)
    alice.hello()
    net.run(3.5)
    assert alice.link.next_deadline() is not None  # still trying, once a second
    alice.link.stop_hello_retry()  # the glue's connect timeout gave up
    assert alice.link.next_deadline() is None

    net = Network()
    bob = net.client("bob", 2, plain=True)
    bob.hello()
    net.run(0.5)
    assert bob.registered
    bob.write(Hello("bob"))  # a round-trip probe (the bench's): its caller waits for HI, not the link
    assert bob.link.next_deadline() is None


def test_spoofed_datagram_with_a_stolen_token_but_old_data_does_not_move_the_session():
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    token = alice.link.token
    # Replaying alice's first packet (number 1) from another address: old news.
    replay = encode_packet(Packet(token, 1, 1, fragments=(Fragment(1, 0, 1, b"PING\n"),)))
    net.inject(replay, ("198.18.0.99", 4444))
    net.run(1)
    assert net.server.stats.spoofed == 1
    alice.send("bob", b"still mine")
    net.run(1)
    assert bob.received() == [b"still mine"]
    assert net.server._by_token[token].address == alice.address
    assert decode(replay).number == 1


def test_a_client_that_acknowledges_nothing_but_keeps_sending_is_dropped_with_507():
    # Each PING gets a PONG that waits for room in a window the client never opens:
    # without a bound, the server's memory grew with every PING (27 MB to 148 MB in a minute).
    net = Network(datagram_limits=DatagramLimits(max_outbound=16 * 1024))
    mallory, alice, bob = net.client("mallory", 1), net.client("alice", 2), net.client("bob", 3)
    mallory.hello(), alice.hello(), bob.hello()
    net.run(1)
    token = mallory.link.token
    del net.clients[mallory.address]  # from here on it reads nothing and acknowledges nothing
    first = net.server._by_token[token].endpoint.largest_received + 1
    pings = b"PING abcdefgh\n" * 70
    for number in range(first, first + 40):
        net.inject(encode_packet(Packet(token, number, 1, fragments=(Fragment(number, 0, 1, pings),))), mallory.address)
        net.run(0.01)
        if token not in net.server._by_token:
            break
    assert token not in net.server._by_token and "mallory" not in net.server.relay.online
    assert number - first + 1 < 40  # dropped once it owed 16 KiB, not at the end of the flood
    queued = [session.endpoint.queued_bytes for session in net.server._by_token.values()]
    assert queued == [0, 0]
    alice.send("bob", b"served as before")
    net.run(1)
    assert bob.received() == [b"served as before"]
    net.inject(encode_packet(Packet(token, first + 40, 1, fragments=(Fragment(1, 0, 1, b"PING\n"),))), mallory.address)
    net.run(0.1)
    assert net.server.stats.unknown_token == 1  # its next packet gets RESET: it starts over


def registered_bob() -> tuple[Network, Client]:
    net = Network()
    bob = net.client("bob", 2)
    bob.hello()
    net.run(1)
    return net, bob


def test_a_session_the_client_abandons_is_freed_at_once_but_only_by_its_own_address():
    net, bob = registered_bob()
    old = bob.link.token
    # A RESET with bob's token from elsewhere (an overheard token) ends nothing.
    net.inject(reset_packet(old), ("198.18.0.99", 4444))
    net.run(1)
    assert old in net.server._by_token and net.server.relay.online == ["bob"]
    bob.hello()  # bob gave up on the server (its retries ran out): a new session, same name
    net.run(1)
    assert old not in net.server._by_token and bob.link.token not in (0, old)
    assert [e.name for e in bob.events if isinstance(e, Registered)] == ["bob", "bob"]  # no ERR 409


def test_the_reset_of_an_abandoned_session_is_said_again_until_a_new_session_gets_hi():
    # bob gave up during an outage: the RESET of his old session went out with the new Hello,
    # and both were lost. Said once only, the server kept "bob" and answered the next attempt,
    # once the network was back, with ERR 409 until --timeout.
    net = Network()
    bob = net.client("bob", 2)
    bob.hello()
    net.run(1)
    old = bob.link.token
    transmit, outage, sent = net.transmit, [True], []
    net.transmit = lambda datagram, source, destination: (
        None if outage[0] else (sent.append(datagram), transmit(datagram, source, destination)))
    bob.hello()  # a new session (its retries ran out); nothing reaches the server
    net.run(3)
    outage[0] = False
    bob.events.clear()
    bob.hello()  # the next attempt
    net.run(1)
    assert [type(e).__name__ for e in bob.events] == ["Registered"]
    assert old not in net.server._by_token and len(net.server._by_connection) == 1
    assert reset_packet(old) in sent
    sent.clear()
    current = bob.link.token
    bob.hello()  # once HI came, the old RESET is not said any more: only the one just abandoned
    assert [datagram for datagram in sent if decode(datagram).is_reset] == [reset_packet(current)]


def test_an_abandoned_session_sends_nothing_more_and_its_late_datagrams_are_ignored():
    net, bob = registered_bob()
    old = bob.link.token
    late = encode_packet(Packet(old, 50, 1, fragments=(Fragment(50, 0, 1, b"PING late\n"),)))
    bob.link.abandon()
    bob.link.send_frame(Send("alice", "r9", b"after the end"), net.now)
    assert bob.link.datagrams_to_send(net.now) == [reset_packet(old)]
    assert bob.link.receive(late, net.now) == [] and bob.link.next_deadline() is None
    bob.link.start(net.now)  # the next attempt: token 0 until the server answers it...
    assert bob.link.receive(late, net.now) == [] and bob.link.token == 0  # ...not the old session's
    bob.link.send_frame(Hello("bob"), net.now)
    # The old session's RESET again (the first may have been lost), then the new session's Hello.
    sent = [decode(datagram) for datagram in bob.link.datagrams_to_send(net.now)]
    assert [(packet.is_reset, packet.token) for packet in sent] == [(True, old), (False, 0)]


def test_a_reliable_message_over_the_servers_largest_gets_err_413_and_ends_the_session():
    net = Network()
    alice = net.client("alice", 1)
    alice.link = DatagramLink(DEFAULT.with_changes(max_message=4 * DEFAULT.max_message))  # a client built by hand
    alice.hello()
    net.run(1)
    token = alice.link.token
    alice.link.send_message(b"SEND bob r1 5\nhello\n" + b"\n" * DEFAULT.max_message, net.now)
    alice.pump()
    net.run(10)
    refused = [e for e in alice.events if isinstance(e, ErrorReceived)]
    assert [(e.code, e.detail) for e in refused] == [(413, f"a message over {DEFAULT.max_message} bytes")]
    assert token not in net.server._by_token and net.server.relay.online == []


def test_nat_rebinding_keeps_the_session():
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    del net.clients[alice.address]
    alice.address = ("198.18.0.3", 7777)  # the NAT gave alice a new public address
    net.clients[alice.address] = alice
    alice.send("bob", b"from my new address")
    net.run(1)
    assert bob.received() == [b"from my new address"]
    bob.send("alice", b"reply")
    net.run(1)
    assert alice.received() == [b"reply"]
    assert net.server.stats.rebinds == 1
    # The new address was proved by a CHALLENGE sent there and alice's RESPONSE, not by the token.
    assert any(d[0] == 0xB1 and d[1] & FLAG_CHALLENGE for d in net.datagrams_to[alice.address])
    assert net.server._by_token[alice.link.token].verified


@pytest.mark.parametrize(
    "datagram",
    [
        b"\xb1",  # truncated header
        b"\xb1" + bytes(10),  # still truncated
        b"\xb1\x80" + bytes(20),  # unknown flag
        bytes([0xB1, 0, *bytes(8), 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]) + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x05abc",  # fragment data truncated
        b"\x00\x01\x02garbage",  # neither kind
        b"SEND bob r1 5\nab",  # plain frame cut short
        b"BOGUS\n",  # unknown verb
        b"x" * 60000,  # oversized line
    ],
)
def test_malformed_datagrams_hurt_no_one(datagram):
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    net.inject(datagram, ("198.18.0.50", 5050))
    net.run(1)
    alice.send("bob", b"unaffected")
    net.run(1)
    assert bob.received() == [b"unaffected"]
    assert sorted(net.server.relay.online)[:2] == ["alice", "bob"]


def test_a_flood_of_malformed_datagrams_is_counted_not_logged_line_by_line():
    lines: list[str] = []
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__,
                           trace=lines.append)
    garbage = b"\xb1" + bytes(10)  # a reliable datagram's first byte, then too short for a header
    for i in range(100):
        server.receive(garbage, ("198.18.0.50", 5050 + i), now=10.0 + i / 1000)  # 100 in 0.1 s
    server.receive(garbage, ("198.18.0.51", 6000), now=11.2)
    assert server.stats.malformed == 101
    assert len(lines) == 2 and lines[0].startswith("ignored a malformed datagram from 198.18.0.50:5050: ")
    assert lines[1].startswith("ignored a malformed datagram from 198.18.0.51:6000: ")
    assert lines[1].endswith(" (and 99 more since the last such line)")


def test_shutdown_resets_every_reliable_session_and_leaves_plain_ones_alone():
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2, plain=True)
    alice.hello(), bob.hello()
    net.run(1)
    assert alice.registered and bob.registered
    net.server.shutdown()
    out = net.server.outgoing()
    assert [address for _, address in out] == [alice.address]
    assert alice.link.receive(out[0][0], net.now) == [SessionReset("the server reset this session: it stopped, restarted, or timed us out")]


def test_plain_garbage_gets_an_err_frame():
    net = Network()
    source = ("198.18.0.50", 5050)
    net.inject(b"Hello mallory" + b"\n" * 200 + b"BOGUS\n", source)
    net.run(0.1)
    answer = b"".join(net.datagrams_to[source])
    assert answer.startswith(b"HI mallory")
    assert b"ERR 405 unknown-command" in answer


@pytest.mark.parametrize("cut", [b"SEND alice r2 5\nhel", b"SEND alice r2 5\n"], ids=["body cut short", "body missing"])
def test_a_plain_datagram_that_ends_inside_a_frame_gets_err_400(cut):
    # `nc -u` sends each typed line as a datagram of its own: a SEND's header alone is the
    # case a student meets first, and its body must not be read as a frame of its own.
    net = Network()
    source = ("198.18.0.50", 5050)
    net.inject(b"Hello mallory" + b"\n" * 200, source)
    net.run(0.1)
    net.inject(cut, source)
    net.run(0.1)
    answer = b"".join(net.datagrams_to[source])
    assert b"ERR 400 bad-frame a plain datagram must hold whole frames" in answer


def test_reset_is_never_longer_than_what_provoked_it():
    net = Network()
    source = ("198.18.0.50", 5050)
    probe = encode_packet(Packet(0xDEAD, 0, 1))
    net.inject(probe, source)
    net.run(0.1)
    assert net.server.stats.unknown_token == 1
    assert net.sent_to[source] <= len(probe)


def test_shutdown_sends_an_unproven_address_no_more_than_it_sent():
    # Found by tests/test_fuzz_server.py: two bare 22-byte headers with token 0, the second
    # out of order, so that the server's ack (30 bytes, with a range) spent most of the 44-byte
    # budget; the RESET at shutdown went out all the same, 52 bytes for 44.
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__)
    source = ("198.18.0.66", 9)
    received = [encode_packet(Packet(0, 0, 1)), encode_packet(Packet(0, 2, 0xFFFFFFFF))]
    for datagram in received:
        server.receive(datagram, source, 0.0)
    sent = sum(len(datagram) for datagram, _ in server.outgoing())
    server.shutdown()
    sent += sum(len(datagram) for datagram, _ in server.outgoing())
    assert sent <= sum(map(len, received))


def test_reset_for_an_unknown_token_obeys_an_amplification_factor_under_one():
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__,
                           limits=DatagramLimits(amplification_factor=0.5))
    probe = encode_packet(Packet(0xDEAD, 0, 1))  # 22 bytes: half of it is all we may send back
    server.receive(probe, ("198.18.0.66", 9), 0.0)
    assert server.stats.unknown_token == 1
    assert server.outgoing() == []


def test_plain_recipient_whose_acks_are_lost_is_not_stalled_by_the_window():
    net = Network(delivery_window=4)
    alice, bob = net.client("alice", 1, plain=True), net.client("bob", 2, plain=True)
    alice.hello(), bob.hello()
    net.run(1)
    send_frame = bob.write
    bob.write = lambda frame: None if isinstance(frame, Ack) else send_frame(frame)  # every ACK lost
    for i in range(10):
        alice.send("bob", f"m{i}".encode())
    net.run(1)
    assert bob.received() == [f"m{i}".encode() for i in range(10)]  # not just the first 4
    assert net.store.waiting_counts() == {"bob": 10}  # unacknowledged, so still stored


def test_plain_recipient_shows_reordered_messages_once_each():
    # Plain UDP reorders: a lower id arriving after a higher one is a new message,
    # not a second copy (it used to be dropped, and ACKed, unseen).
    net = Network(down=Impairment(reorder=0.5, seed=3))
    alice, bob = net.client("alice", 1, plain=True), net.client("bob", 2, plain=True)
    alice.hello(), bob.hello()
    net.run(1)
    bodies = [f"{i}".encode() for i in range(1, 16)]
    for body in bodies:
        alice.send("bob", body)
    net.run(1)
    assert bob.received() != bodies  # reordered on the way
    assert sorted(bob.received(), key=int) == bodies  # and every one shown, once
    assert not any(isinstance(e, DuplicateDropped) for e in bob.events)


# ------------------------------------------------------------ the timer


def test_on_timer_finds_a_retransmission_due_without_next_deadline_asked_first():
    """Session deadlines are read lazily, after the answers are out; on_timer() must
    still see every endpoint's timer even if the caller never asked next_deadline()."""
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__)
    link = DatagramLink(DEFAULT)
    link.start(0.0)
    link.send_frame(Hello("alice"), 0.0)
    for datagram in link.datagrams_to_send(0.0):
        server.receive(datagram, ("198.18.0.2", 1), 0.0)
    [(token, _)] = server.outgoing()  # an ack: the token, and nothing else before the address is proven
    link.receive(token, 0.0)
    for datagram in link.datagrams_to_send(0.0):  # the empty message that proves it
        server.receive(datagram, ("198.18.0.2", 1), 0.0)
    [(hi, _)] = server.outgoing()  # lost on its way: never given to the link
    server.on_timer(DEFAULT.initial_rto + 0.1)  # past the HI's retransmission timer
    again = [datagram for datagram, _ in server.outgoing()]
    assert [decode(d).number for d in again if decode(d).number] == [decode(hi).number]
    assert server.session_stats("alice").retransmitted == 1


def test_next_deadline_costs_no_loop_over_the_sessions_and_is_exact_after_the_timer():
    # The glue asks next_deadline() after every batch; with a thousand clients a loop
    # over them all took 250 us a batch. It must not loop, yet never be late.
    net = Network(heartbeat_interval=5.0, heartbeat_timeout=60.0)
    clients = [net.client(f"c{i}", i + 1, plain=i % 2 == 0) for i in range(200)]
    for client in clients:
        client.hello()
    net.run(1)
    assert all(client.registered for client in clients)
    server, relay = net.server, net.server.relay
    exact = relay.next_deadline  # the relay's loop over its connections
    loops, timers, questions = [], [], []
    relay.next_deadline = lambda: loops.append(1) or exact()
    on_timer, next_deadline = server.on_timer, server.next_deadline
    server.on_timer = lambda now: timers.append(now) or on_timer(now)
    server.next_deadline = lambda: questions.append(1) or next_deadline()
    for client in clients:  # 200 more datagrams, each followed by next_deadline() in net.run
        client.write(Hello())
    net.run(1)
    assert all(len([e for e in c.events if isinstance(e, Registered)]) == 2 for c in clients)
    # Only the timer loops (the reliable clients' delayed acks); the questions after each batch do not.
    assert len(loops) == len(timers) < len(questions)
    for _ in range(1000):
        server.next_deadline()
    assert len(loops) == len(timers)
    # A bound, never later than what is due: the first heartbeats were due 5 s after the Hellos.
    assert next_deadline() <= exact() <= 6.0
    net.run(5)  # the heartbeat timer fires: PINGs go out, and the deadline is computed exactly again
    assert any(now >= 5.0 for now in timers) and next_deadline() == min(d for d in (exact(), *(
        s.deadline for s in server._by_connection.values())) if d is not None)


@pytest.mark.parametrize("seed", range(6))
def test_next_deadline_is_never_later_than_anything_due(seed):
    # The bound must never be late, or a retransmission or a heartbeat would be.
    # Checked after every datagram and every timer call, with loss both ways.
    up = Impairment(loss=0.15, delay=0.01, jitter=0.005, seed=seed)
    down = Impairment(loss=0.15, delay=0.01, jitter=0.005, seed=seed + 100)
    net = Network(up=up, down=down, heartbeat_interval=2.0, heartbeat_timeout=6.0)
    server = net.server
    checked = []

    def check():
        due = [server.relay.next_deadline()] + [session.endpoint.next_deadline()
                                               for session in server._by_connection.values() if session.endpoint]
        due = [d for d in due if d is not None]
        assert not due or server.next_deadline() <= min(due)
        checked.append(1)

    receive, on_timer = server.receive, server.on_timer
    server.receive = lambda *args: (receive(*args), check())
    server.on_timer = lambda now: (on_timer(now), check())
    clients = [net.client(f"c{i}", i + 1, plain=i == 3) for i in range(4)]
    for client in clients:
        client.hello()
    net.run(1)
    for round_ in range(10):
        for i, client in enumerate(clients):
            client.send(f"c{(i + 1) % 4}", b"round %d" % round_)
        net.run(0.3)
    net.run(5)  # heartbeats, delayed acks and retransmissions play out
    assert len(checked) > 100


def test_a_plain_client_goes_on_saying_hello_after_an_err_401_but_not_after_a_refusal():
    # 401 hello-first answers a frame sent before Hello (held back, it can come just ahead of
    # HI, or instead of it when HI is lost): only HI or an ERR refusing the Hello ends the retry.
    link = DatagramLink(None)
    link.start(0.0)
    link.send_frame(Hello("alice"), 0.0)
    link.datagrams_to_send(0.0)
    link.receive(b"ERR 401 hello-first say HELLO [NAME] first\n", 0.1)
    assert link.next_deadline() is not None  # still waiting for HI: Hello goes again
    link.receive(b"ERR 409 name-taken alice is online from another connection\n", 0.2)
    assert link.next_deadline() is None


def test_a_session_moved_by_a_spoofed_datagram_sends_its_new_address_no_more_than_it_got():
    """The owner of a token can spoof its source: one datagram 'from' a victim with the token and
    a new packet number moved the session there, verified, and the server poured alice's backlog
    onto the victim. Now a moved session is unproven until the client answers a CHALLENGE sent
    to its new address; the real alice, sending again from her own address, moves it back,
    answers, and gets every message once."""
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    session = net.server._by_token[alice.link.token]
    victim = ("198.18.0.66", 9)
    spoofed = encode_packet(Packet(alice.link.token, session.endpoint.largest_received + 1, 1,
                                   fragments=(Fragment(session.endpoint.largest_received + 1, 0, 1, b"WHO\n"),)))
    net.inject(spoofed, victim)
    for n in range(20):
        bob.send("alice", b"x" * 1000 + b" %d" % n)
    net.run(2)
    assert net.server.stats.rebinds == 1
    assert net.sent_to.get(victim, 0) <= net.received_from[victim]
    # The spoof took the packet number alice's next message gets, so the server takes that one
    # for a repeat: the spoofer here is the token's owner, and only hurts its own session.
    alice.send("bob", b"my number was taken")
    alice.send("bob", b"still here")
    net.run(10)
    assert net.server._by_token[alice.link.token].address == alice.address
    assert net.server._by_token[alice.link.token].verified
    assert alice.received() == [b"x" * 1000 + b" %d" % n for n in range(20)]
    assert bob.received() == [b"still here"]


def _move_alice_with_a_backlog(net: Network, messages: int):
    """alice and bob registered; bob sends alice `messages` messages; alice's NAT gives her a new
    address and she says something from there."""
    alice, bob = net.client("alice", 1), net.client("bob", 2)
    alice.hello(), bob.hello()
    net.run(1)
    for n in range(messages):
        bob.send("alice", b"x" * 1000 + b" %d" % n)
    net.run(0.05)
    del net.clients[alice.address]
    alice.address = ("198.18.0.3", 7777)
    net.clients[alice.address] = alice
    return alice, bob


def _lose_challenges(net: Network, how_many: int) -> None:
    transmit, lost = net.transmit, []

    def lossy(datagram, source, destination):
        if destination != SERVER and datagram[0] == 0xB1 and datagram[1] & FLAG_CHALLENGE and len(lost) < how_many:
            lost.append(datagram)
            return
        transmit(datagram, source, destination)
    net.transmit = lossy


def test_a_lost_challenge_is_sent_again_even_when_the_held_queue_is_full():
    """After a move the endpoint's backlog filled the held queue, and a CHALLENGE went into it
    only while there was room: once the first one was lost, the next datagram from the client
    found the queue full and no CHALLENGE was ever sent again. The address stayed unproven, the
    held data trickled out at the client's pace, and the session ended in timeouts."""
    net = Network(datagram_limits=DatagramLimits(max_held_datagrams=4))
    alice, bob = _move_alice_with_a_backlog(net, 200)
    _lose_challenges(net, 1)
    alice.send("bob", b"moved")
    net.run(10)
    session = net.server._by_token[alice.link.token]
    assert session.verified and session.address == alice.address
    assert alice.lost == []
    assert sorted(set(alice.received())) == sorted(b"x" * 1000 + b" %d" % n for n in range(200))
    assert bob.received() == [b"moved"]


def test_the_challenge_goes_first_with_nothing_to_hold():
    """max_held_datagrams 0: the CHALLENGE cannot wait in the held queue, so it goes at once."""
    net = Network(datagram_limits=DatagramLimits(max_held_datagrams=0))
    alice, bob = _move_alice_with_a_backlog(net, 3)
    alice.send("bob", b"from my new address")
    net.run(10)
    assert net.server._by_token[alice.link.token].verified
    assert bob.received() == [b"from my new address"]


def test_a_proven_address_gets_no_stale_challenge():
    """A CHALLENGE still held when the RESPONSE to an earlier one proved the address went out
    afterwards anyway, and the client answered it again, for nothing."""
    net = Network(up=Impairment(delay=0.05), down=Impairment(delay=0.05))
    alice, _ = _move_alice_with_a_backlog(net, 0)
    alice.send("bob", b"from my new address")
    session = net.server._by_token[alice.link.token]
    net.run(0.06)  # the move: the first CHALLENGE is on its way
    assert session.challenge and not session.verified
    session.held.appendleft(b"later")  # something held, behind which a second CHALLENGE waits
    session.received_bytes = session.sent_bytes  # no budget left
    net.server._challenge(session)
    assert session.held[0][1] & FLAG_CHALLENGE
    net.run(1)
    assert session.verified
    assert sum(1 for d in net.datagrams_to[alice.address] if d[:1] == b"\xb1" and d[1] & FLAG_CHALLENGE) == 1


def test_an_abandoned_session_sends_no_response_to_its_challenge():
    """A RESPONSE queued for a session that was then abandoned went out with the next session's
    first datagrams, padded to a full datagram, carrying the old token."""
    link = DatagramLink(DEFAULT)
    link.start(0.0)
    link.endpoint.token = 0x1234
    challenge = encode_packet(Packet(0x1234, 0, 1, fragments=(Fragment(1, 0, 1, b"8 bytes!"),), flags=FLAG_CHALLENGE))
    link.receive(challenge, 0.1)
    link.start(0.2)  # a new session, before anything was sent
    link.send_frame(Hello("alice"), 0.2)
    sent = [decode(d) for d in link.datagrams_to_send(0.2)]
    assert not any(p.flags & FLAG_RESPONSE for p in sent)
    assert any(p.is_reset and p.token == 0x1234 for p in sent)


def _answers_to_a_proof_that_ends_the_session(batch: bool) -> list[tuple[int, list[bytes]]]:
    """A client that moved before its first proof, whose Hello the relay refuses with a fatal
    ERR 505 once the RESPONSE proves the new address; then one more datagram from it. Returns
    what the server answered: (flags, fragment data) per datagram."""
    server = DatagramRelay(Relay(MessageStore(":memory:")), DEFAULT, new_token=itertools.count(0x1000).__next__)
    first, moved = ("198.18.0.2", 1), ("198.18.0.3", 7777)
    hello = encode(Hello("alice", "hellohi/9"))
    server.receive(encode_packet(Packet(0, 1, 1, fragments=(Fragment(1, 0, 1, hello),)), pad_to=1200), first, 0.0)
    token = decode(server.outgoing()[0][0]).token
    proof = encode_packet(Packet(token, 2, 1, fragments=(Fragment(2, 0, 1, b""),)), pad_to=1200)
    server.receive(proof, moved, 0.01)  # from a new address: a CHALLENGE goes there
    [challenge] = [decode(d) for d, _ in server.outgoing() if decode(d).flags & FLAG_CHALLENGE]
    response = encode_packet(Packet(token, 0, 1, fragments=(Fragment(1, 0, 1, challenge.secret),), flags=FLAG_RESPONSE))
    later = encode_packet(Packet(token, 3, 1, fragments=(Fragment(3, 0, 1, b"PING\n"),)))
    if batch:
        server.receive_many([(response, moved), (later, moved)], 0.02)
        answers = server.outgoing()
    else:
        server.receive(response, moved, 0.02)
        answers = server.outgoing()
        server.receive(later, moved, 0.02)
        answers += server.outgoing()
    return [(decode(d).flags, [f.data for f in decode(d).fragments]) for d, _ in answers]


def test_a_response_that_ends_the_session_is_carried_out_before_the_rest_of_its_batch():
    """The RESPONSE let the relay hear the Hello, which it refused (ERR 505, closing), but the
    close waited for the end of the batch: a later datagram of the same batch met a session
    still there, and got no RESET, where one datagram at a time it gets one."""
    one_at_a_time = _answers_to_a_proof_that_ends_the_session(batch=False)
    assert one_at_a_time[-1] == (FLAG_RESET, [])
    assert any(b"ERR 505" in data for _, fragments in one_at_a_time for data in fragments)
    assert _answers_to_a_proof_that_ends_the_session(batch=True) == one_at_a_time


def _lose_every_challenge(net: Network):
    """Lose every CHALLENGE on its way to a client, until the function returned is called."""
    transmit, losing = net.transmit, [True]

    def lossy(datagram, source, destination):
        if losing and destination != SERVER and datagram[1] & FLAG_CHALLENGE:
            return
        transmit(datagram, source, destination)
    net.transmit = lossy
    return losing.clear


def test_a_lost_challenge_is_sent_again_on_the_timer_to_a_client_with_nothing_to_say():
    """Every CHALLENGE to alice's new address lost while she talked; then she waits, with nothing
    unacknowledged, and bob's message to her is too large for what is left of her address's
    budget. The CHALLENGE went again only with her next datagram, her keepalive 25 s later
    (a hellohi client's heartbeat PING, 15 s): the message waited all that time."""
    net = Network()
    alice, bob = _move_alice_with_a_backlog(net, 0)
    stop_losing = _lose_every_challenge(net)
    alice.send("bob", b"m" * 1000)
    net.run(1)
    session = net.server._by_token[alice.link.token]
    assert not session.verified and bob.received() == [b"m" * 1000]
    stop_losing()
    bob.send("alice", b"r" * 3000)
    net.run(3)
    assert session.verified and alice.received() == [b"r" * 3000]


def test_a_retransmission_held_for_an_unproven_address_replaces_its_older_copy():
    """While alice's new address was unproven, each retransmission of bob's message to her was
    held again beside the copies already waiting: once she proved the address, about eight
    copies of each packet went out to her in one burst."""
    net = Network()
    alice, bob = _move_alice_with_a_backlog(net, 0)
    stop_losing = _lose_every_challenge(net)
    alice.send("bob", b"m" * 1000)
    net.run(1)
    bob.send("alice", b"r" * 3000)  # more than her address's budget: it waits in the held queue
    net.run(20)  # the server's retransmission timer fires again and again
    session = net.server._by_token[alice.link.token]
    assert not session.verified
    held_numbers = [decode(d).number for d in session.held if decode(d).number]
    assert held_numbers and len(held_numbers) == len(set(held_numbers))
    stop_losing()
    sent_before = len(net.datagrams_to[alice.address])
    alice.send("bob", b"after")  # her next datagram brings the CHALLENGE, she proves the address
    net.run(3)
    assert session.verified and alice.received() == [b"r" * 3000]
    burst = [decode(d).number for d in net.datagrams_to[alice.address][sent_before:] if d[:1] == b"\xb1"]
    data_numbers = [n for n in burst if n]
    assert len(data_numbers) == len(set(data_numbers))


def test_a_message_too_large_for_a_plain_recipients_datagram_stays_stored_for_a_transport_that_carries_it():
    """A reliable (or TCP) sender may send 65,536 bytes; as a MSG to a plain client that is more
    than one datagram holds, so the server cannot send it. It is not lost: it stays stored, is
    tried again (and dropped again) each new plain session, and comes once bob connects with acks.
    The sender sees `stored`, never `delivered`, meanwhile (docs/udp.md)."""
    net = Network()
    alice, bob = net.client("alice", 1), net.client("bob", 2, plain=True)
    alice.hello(), bob.hello()
    net.run(1)
    ref = alice.send("bob", b"x" * 65536)
    net.run(5)
    assert bob.received() == [] and net.store.waiting_counts() == {"bob": 1}
    assert [e.state for e in alice.events if isinstance(e, StatusChanged) and e.ref == ref] == ["stored"]
    bob.write(Bye())
    net.run(1)
    reliable_bob = net.client("bob", 3)
    reliable_bob.hello()
    net.run(5)
    assert reliable_bob.received() == [b"x" * 65536] and net.store.waiting_counts() == {}
