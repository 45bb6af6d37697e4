"""Property tests that attack the server side with arbitrary input, sans-I/O.

What the server promises, whatever it is sent (PROTOCOL.md, docs/udp-reliability.md):
every bad input gets a documented ERR or, over UDP, a documented silent drop, and
never an exception out of the core; a bad client never harms the others; no
accepted message is lost; and state stays within the documented limits.

Hypothesis builds the hostile input. Each test is derandomized (the same examples
on every run, so a failure here is a failure everywhere) and kept to a few seconds.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hellohi.client_session import MessageReceived
from hellohi.codec import Ack, Decoder, Err, Msg, Send, encode
from hellohi.datagram_relay import DatagramLimits, DatagramRelay
from hellohi.errors import ProtocolError
from hellohi.relay import Disconnect, Relay, RelayLimits, Transmit
from hellohi.reliable import DEFAULT, ReliableEndpoint
from hellohi.reliable.endpoint import MessageDelivered as EndpointDelivered
from hellohi.reliable.endpoint import MessageFailed as EndpointFailed
from hellohi.reliable.endpoint import MessageReceived as EndpointReceived
from hellohi.reliable.packet import MAGIC, Fragment, Packet, PacketError, decode, encode as encode_packet
from hellohi.store import MessageStore
from tests.test_datagram_relay import Network

# derandomize: the examples are fixed, so the suite is deterministic; no deadline:
# the first example of a run pays for imports and SQLite, which says nothing.
FUZZ = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIRST_TOKEN = 0x1000  # the counter the test servers take tokens from
ISSUED_TOKENS = range(FIRST_TOKEN, FIRST_TOKEN + 12)
ADDRESSES = [("198.18.0.50", 5000 + n) for n in range(4)]

# ------------------------------------------------------------ hostile datagrams

# Pieces of real frames, so that the fuzz reaches past the decoder into the relay.
FRAME_LINES = [
    b"Hello\n", b"Hello mallory\n", b"HELLO eve hellohi/1\n", b"HELLO eve hellohi/9\n",
    b"SEND mallory r1 5\nhello", b"SEND eve r2 3\nabc", b"SEND nobody r3 1\nx", b"SEND eve r4 99\nshort",
    b"ACK 1\n", b"ACK 2\n", b"ACK 99999999999\n", b"PING\n", b"PING t\n", b"PONG\n", b"BYE\n", b"WHO\n",
    b"MSG 1 eve 1\nx", b"HI x 5000\n", b"ERR 400 bad-frame\n", b"BOGUS\n", b"\n", b"x" * 1100 + b"\n",
    # The PING secrets a plain session is sent are the token counter in hex: answer some.
    *(f"PONG {token:016x}\n".encode() for token in ISSUED_TOKENS[:4]),
]

frame_bytes = st.lists(st.sampled_from(FRAME_LINES), min_size=1, max_size=4).map(b"".join)


@st.composite
def plain_datagrams(draw) -> bytes:
    """Whole frames, perhaps cut short or with one byte changed."""
    data = draw(frame_bytes)
    change = draw(st.sampled_from(["none", "cut", "flip"]))
    if change == "cut" and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif change == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


# Mostly the small numbers a real session uses, sometimes anything the field holds.
packet_numbers = st.one_of(st.integers(0, 6), st.integers(1, 6), st.integers(0, 0xFFFFFFFF), st.just(0xFFFFFFFF))
tokens = st.one_of(st.just(0), st.sampled_from(ISSUED_TOKENS[:3]), st.sampled_from(ISSUED_TOKENS), st.integers(0, 2**64 - 1))
whole_messages = st.builds(Fragment, message_id=st.integers(1, 6), index=st.just(0), count=st.just(1), data=frame_bytes)
odd_fragments = st.builds(
    Fragment,
    message_id=st.one_of(st.integers(1, 4), st.integers(0, 0xFFFFFFFF)),
    index=st.one_of(st.integers(0, 3), st.integers(0, 0xFFFF)),
    count=st.one_of(st.integers(0, 4), st.integers(0, 0xFFFF)),
    data=st.one_of(frame_bytes, st.binary(max_size=64)),
)
fragments = st.one_of(whole_messages, odd_fragments)


@st.composite
def ack_ranges(draw, cumulative_ack: int) -> tuple:
    """None, well-ordered ranges above the cumulative ack (beyond anything sent, perhaps),
    or any ranges at all (which decode() refuses)."""
    kind = draw(st.sampled_from(["none", "none", "ordered", "any"]))
    if kind == "none":
        return ()
    if kind == "any":
        return tuple(draw(st.lists(st.tuples(packet_numbers, packet_numbers).map(sorted).map(tuple), max_size=8)))
    found, floor = [], cumulative_ack + 1
    for _ in range(draw(st.integers(1, 8))):
        first = floor + draw(st.integers(0, 3))
        last = first + draw(st.integers(0, 3))
        if last > 0xFFFFFFFF:
            break
        found.append((first, last))
        floor = last + 2
    return tuple(reversed(found))  # newest first


@st.composite
def reliable_datagrams(draw, tokens=tokens) -> bytes:
    """Packets as encode() builds them, with arbitrary numbers, perhaps spoiled after."""
    number = draw(packet_numbers)
    cumulative_ack = draw(st.one_of(st.integers(1, 6), packet_numbers))
    packet = Packet(
        token=draw(tokens),
        number=number,
        cumulative_ack=cumulative_ack,
        ack_delay=draw(st.floats(0, 1)),
        ranges=draw(ack_ranges(cumulative_ack)),
        fragments=tuple(draw(st.lists(fragments, max_size=3))) if number else (),
        flags=draw(st.sampled_from([0, 0, 1, 2, 3])),
    )
    datagram = encode_packet(packet, pad_to=draw(st.sampled_from([0, 0, 1200])))
    change = draw(st.sampled_from(["none", "none", "none", "cut", "flip", "append"]))
    if change == "cut":
        datagram = datagram[: draw(st.integers(1, len(datagram)))]
    elif change == "flip":
        at = draw(st.integers(1, len(datagram) - 1))
        datagram = datagram[:at] + bytes([draw(st.integers(0, 255))]) + datagram[at + 1 :]
    elif change == "append":
        datagram += draw(st.binary(min_size=1, max_size=8))
    return datagram


def any_datagram(tokens=tokens):
    return st.one_of(
        reliable_datagrams(tokens),
        plain_datagrams(),
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda tail: bytes([MAGIC]) + tail),
    )


# A step is a datagram from one of the addresses, or the clock moving on and the timer firing.
steps = st.one_of(
    st.tuples(st.just("datagram"), st.sampled_from(ADDRESSES), any_datagram()),
    st.tuples(st.just("timer"), st.sampled_from([0.001, 0.03, 0.5, 2.0, 10.0]), st.none()),
)


def fuzz_server(**datagram_limits) -> DatagramRelay:
    # Small limits, so that a few dozen steps reach them: a full server, heartbeat timeouts.
    relay = Relay(MessageStore(":memory:"), RelayLimits(max_clients=3, heartbeat_interval=1.0, heartbeat_timeout=3.0))
    return DatagramRelay(relay, DEFAULT, new_token=itertools.count(FIRST_TOKEN).__next__,
                         limits=DatagramLimits(**datagram_limits))


def proves_address(datagram: bytes) -> bool:
    """Whether `datagram` could prove its source address, as the amplification rule counts
    proof: it carries a token the server issued, or the answer to a PING secret. Generous
    on purpose (any issued token, any address): the test then checks only what no proof
    excuses."""
    if any(f"PONG {token:016x}".encode() in datagram for token in ISSUED_TOKENS):
        return True
    try:
        return decode(datagram).token in ISSUED_TOKENS
    except PacketError:
        return False


class Ledger:
    """Bytes each address sent the server and got from it while it had proved nothing."""

    def __init__(self, factor: float) -> None:
        self.factor = factor  # DatagramLimits.amplification_factor
        self.received: dict[tuple, int] = {}
        self.sent: dict[tuple, int] = {}
        self.proven: set[tuple] = set()

    def heard(self, datagram: bytes, address: tuple) -> None:
        self.received[address] = self.received.get(address, 0) + len(datagram)

    def answered(self, out: list[tuple[bytes, tuple]]) -> None:
        for datagram, address in out:
            assert address in self.received, f"a datagram to {address}, which never sent us anything"
            if address not in self.proven:
                self.sent[address] = self.sent.get(address, 0) + len(datagram)
                assert self.sent[address] <= self.received[address] * self.factor, (
                    f"{self.sent[address]} bytes to unproven {address}, which sent {self.received[address]}")


def check_bounded(server: DatagramRelay) -> None:
    limits = server.limits
    sessions = list(server._by_connection.values())
    assert len(sessions) <= server.relay.limits.max_clients
    assert all(len(session.held) <= limits.max_held_datagrams for session in sessions)
    # Every session the server can still find is one it still runs, and the relay agrees.
    assert all(session in sessions for session in server._by_address.values())
    assert all(session in sessions for session in server._by_token.values())
    assert set(server._by_connection) == set(server.relay._connections)
    # ...and the timer is never set later than anything due: a missed deadline is a
    # retransmission, a heartbeat or a timeout that never happens.
    due = [server.relay.next_deadline()] + [s.endpoint.next_deadline() for s in sessions if s.endpoint is not None]
    due = [deadline for deadline in due if deadline is not None]
    if due:
        soonest = server.next_deadline()
        assert soonest is not None and soonest <= min(due)


@given(st.lists(steps, max_size=40), st.sampled_from([1.0, 0.5, 3.0]), st.booleans())
@settings(max_examples=1000, **FUZZ)
def test_arbitrary_datagrams_from_several_addresses_break_no_rule(script, factor, shut_down):
    play_hostile_script(script, factor, shut_down)


def play_hostile_script(script: list, factor: float = 1.0, shut_down: bool = False) -> DatagramRelay:
    server = fuzz_server(max_held_datagrams=4, amplification_factor=factor)
    ledger, now = Ledger(factor), 0.0
    for kind, where, datagram in script:
        if kind == "timer":
            now += where
            server.on_timer(now)
        else:
            now += 0.0001
            ledger.heard(datagram, where)
            server.receive(datagram, where, now)
            if proves_address(datagram):
                ledger.proven.add(where)  # answers to this very datagram may use the new proof
        ledger.answered(server.outgoing())
        check_bounded(server)
    if shut_down:  # the server stops: what it says then obeys the same rules
        server.shutdown()
        ledger.answered(server.outgoing())
    return server


# ------------------------------------------------------------ a hostile address beside a good pair

# Someone who can only send datagrams from addresses of their own, and never sees the
# answers to anyone else, does not know the tokens: none from the counter, then.
unguessed_tokens = st.one_of(st.just(0), st.integers(2**32, 2**64 - 1))
HOSTILE = [("198.18.0.99", 6000 + n) for n in range(3)]
sprays = st.lists(st.tuples(st.sampled_from(HOSTILE), any_datagram(unguessed_tokens)), max_size=6)


@given(st.booleans(), st.booleans(), st.lists(sprays, min_size=8, max_size=8))
@settings(max_examples=60, **FUZZ)
def test_a_hostile_address_spraying_datagrams_harms_no_conversation(alice_plain, bob_plain, sprays_between):
    net = Network()
    alice, bob = net.client("alice", 1, plain=alice_plain), net.client("bob", 2, plain=bob_plain)
    alice.hello(), bob.hello()
    net.run(1)
    assert alice.registered and bob.registered
    bodies = [f"message {i}".encode() for i in range(len(sprays_between))]
    for body, spray in zip(bodies, sprays_between):
        for source, datagram in spray:
            net.inject(datagram, source)
        alice.send("bob", body)
        net.run(0.05)
    net.run(10)
    # The hostile addresses may send bob messages of their own (anyone may); alice's all
    # arrive, once each and in order. (No loss on this network, so plain UDP loses none either.)
    from_alice = [event.body for event in bob.events if isinstance(event, MessageReceived) and event.sender == "alice"]
    assert from_alice == bodies
    assert alice.lost == [] and bob.lost == []
    assert {"alice", "bob"} <= set(net.server.relay.online)


# ------------------------------------------------------------ the reliable endpoint alone

# A small send window, so that the window's bound is reached; a small max_message, so
# that reassembly reaches it too.
SMALL = DEFAULT.with_changes(send_window=16, max_message=2000, max_datagram=600)

endpoint_steps = st.one_of(
    st.tuples(st.just("packet"), reliable_datagrams(st.sampled_from([0, 7, 2**64 - 1]))),
    st.tuples(st.just("next"), st.tuples(packet_numbers, packet_numbers, st.binary(max_size=40))),
    st.tuples(st.just("send"), st.integers(0, SMALL.max_message)),
    st.tuples(st.just("timer"), st.sampled_from([0.001, 0.03, 0.5, 2.0, 10.0])),
)


@given(st.lists(endpoint_steps, max_size=50))
@settings(max_examples=500, **FUZZ)
def test_arbitrary_packets_leave_an_endpoint_sound_and_bounded(script):
    endpoint = ReliableEndpoint(SMALL, token=7)
    now, sent, settled = 0.0, set(), set()
    for kind, argument in script:
        now += 0.001
        if kind == "packet":
            try:
                endpoint.receive_datagram(argument, now)
            except PacketError:
                pass  # malformed: refused, and nothing changed
        elif kind == "next":
            number, cumulative_ack, data = argument
            if number and cumulative_ack:  # what unpack_common_shape lets through
                endpoint.receive_next_message(number, cumulative_ack, 0.0, data, now)
        elif kind == "send":
            sent.add(endpoint.send_message(bytes(argument), now))
        else:
            now += argument
            endpoint.handle_timer(now)
        for datagram in endpoint.datagrams_to_send(now):
            assert len(datagram) <= SMALL.max_datagram
        for event in endpoint.pop_events():
            if isinstance(event, (EndpointDelivered, EndpointFailed)):
                # Only our own messages, each settled once: delivered or failed, never both.
                assert event.message_id in sent and event.message_id not in settled
                settled.add(event.message_id)
            elif isinstance(event, EndpointReceived):
                assert len(event.data) <= SMALL.max_message
        # What arbitrary packets can make it hold stays within the configured bounds.
        assert len(endpoint._early) < SMALL.send_window
        assert endpoint._partial_size <= SMALL.max_message
        assert len(endpoint._unacked) <= SMALL.send_window
        if endpoint._unacked and not endpoint.failed:
            assert endpoint.next_deadline() is not None  # a packet in flight always has a timer


# ------------------------------------------------------------ the relay behind the codec (TCP)

HOSTILE_LINES = FRAME_LINES + [b"Hello alice\n", b"HELLO bob\n", b"SEND bob m1 3\nabc", b"SEND alice m2 0\n",
                               b"ACK 1\n", b"ACK 3\n", b"SEND bob m1 999999\n"]
hostile_streams = st.lists(st.one_of(st.sampled_from(HOSTILE_LINES), st.binary(max_size=30)), max_size=12).map(b"".join)


class TcpWorld:
    """A relay fed the way tcp/server.py feeds it: each connection's bytes through its own
    Decoder, every frame to relay.receive, every ProtocolError to relay.reject, then a flush."""

    def __init__(self) -> None:
        self.relay = Relay(MessageStore(":memory:"))
        self.decoders: dict[int, Decoder] = {}
        self.inbox: dict[int, list] = {}
        self.closed: set[int] = set()

    def connect(self) -> int:
        connection = self.relay.connect("127.0.0.1:40000", 0.0)
        self.decoders[connection], self.inbox[connection] = Decoder(), []
        self.flush()
        return connection

    def data_received(self, connection: int, data: bytes) -> None:
        if connection in self.closed:
            return  # the glue closed this transport: nothing more is read from it
        decoder = self.decoders[connection]
        decoder.feed(data)
        while True:
            try:
                frame = decoder.next_frame()
            except ProtocolError as error:
                self.relay.reject(connection, error)
                if error.fatal:
                    break
                continue
            if frame is None:
                break
            self.relay.receive(connection, frame, 0.0)
        self.flush()

    def flush(self) -> None:
        while actions := self.relay.flush():
            for action in actions:
                if isinstance(action, Transmit):
                    self.inbox[action.connection].append(action.frame)
                elif isinstance(action, Disconnect):
                    self.closed.add(action.connection)


@given(hostile_streams, st.lists(st.integers(1, 40), max_size=10), st.data())
@settings(max_examples=300, **FUZZ)
def test_arbitrary_bytes_in_arbitrary_chunks_never_break_the_relay_or_another_exchange(stream, cuts, data):
    world = TcpWorld()
    alice, bob, mallory = world.connect(), world.connect(), world.connect()
    world.data_received(alice, b"Hello alice\n")
    world.data_received(bob, b"Hello bob\n")
    bodies = []
    for n, size in enumerate([*cuts, len(stream)]):
        chunk, stream = stream[:size], stream[size:]
        world.data_received(mallory, chunk)
        body = f"message {n}".encode()
        bodies.append(body)
        world.data_received(alice, encode(Send("bob", f"r{n}", body)))
        # bob acknowledges what came from alice, sometimes late, in one read with the next
        if data.draw(st.booleans()):
            acks = [encode(Ack(frame.id)) for frame in world.inbox[bob] if isinstance(frame, Msg) and frame.sender == "alice"]
            world.data_received(bob, b"".join(acks))
    got = [frame.body for frame in world.inbox[bob] if isinstance(frame, Msg) and frame.sender == "alice"]
    assert got == bodies  # all, once each, in order (the window of 256 is never full here)
    assert not {alice, bob} & world.closed
    assert not any(isinstance(frame, Err) for frame in world.inbox[alice] + world.inbox[bob])
