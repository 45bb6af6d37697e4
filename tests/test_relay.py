"""The relay core on its own: frames in, frames out, a fake clock, no sockets."""

from __future__ import annotations

import sqlite3

import pytest

from hellohi.client_session import ClientSession, OnlineList
from hellohi.codec import Ack, Bye, Decoder, Err, Hello, Hi, Msg, Online, Ping, Pong, Send, Status, Who, encode
from hellohi.errors import ErrorCode, ProtocolError
from hellohi.relay import Disconnect, Notice, Relay, RelayLimits, Transmit
from hellohi.store import MessageStore


class World:
    """A relay and the frames it sent to each connection."""

    def __init__(self, store: MessageStore | None = None, **limits):
        self.store = store or MessageStore(":memory:")
        self.relay = Relay(self.store, RelayLimits(**limits))
        self.now = 0.0
        self.inbox: dict[int, list] = {}
        self.closed: set[int] = set()

    def connect(self, name: str | None = None, peer: str = "127.0.0.1:40000") -> int:
        connection = self.relay.connect(peer, self.now)
        self.inbox[connection] = []
        self.flush()
        if name is not None:
            self.send(connection, Hello(name))
            assert self.inbox[connection].pop(0) == Hi(name, int(self.relay.limits.heartbeat_interval * 1000))
        return connection

    def send(self, connection: int, *frames) -> None:
        for frame in frames:
            self.relay.receive(connection, frame, self.now)
        self.flush()

    def flush(self) -> None:
        for action in self.relay.flush():
            if isinstance(action, Transmit):
                self.inbox[action.connection].append(action.frame)
            elif isinstance(action, Disconnect):
                self.closed.add(action.connection)

    def take(self, connection: int) -> list:
        frames, self.inbox[connection] = self.inbox[connection], []
        return frames

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.relay.on_timer(self.now)
        self.flush()


def test_a_refused_hello_is_said_in_the_servers_log_too():
    world = World()
    world.connect("alice")
    twin = world.relay.connect("127.0.0.1:5556", world.now)
    world.relay.receive(twin, Hello("alice"), world.now)
    notices = [action.text for action in world.relay.flush() if isinstance(action, Notice)]
    assert notices == ["refused Hello as alice from 127.0.0.1:5556: 409 name-taken (alice is online from another connection)"]


def test_bare_hello_is_known_by_address():
    world = World()
    connection = world.connect(peer="127.0.0.1:5555")
    world.send(connection, Hello())
    assert world.take(connection) == [Hi("127.0.0.1:5555", 15000)]


def test_repeated_hello_is_answered_again_like_a_ping():
    world = World()
    alice = world.connect("alice")
    world.send(alice, Hello("alice"), Hello())
    assert world.take(alice) == [Hi("alice", 15000), Hi("alice", 15000)]


def test_live_relay_reports_stored_then_delivered():
    world = World()
    alice, bob = world.connect("alice"), world.connect("bob")
    world.send(alice, Send("bob", "r1", b"hi"))
    assert world.take(alice) == [Status("r1", "stored", 1)]
    assert world.take(bob) == [Msg(1, "alice", b"hi")]
    world.send(bob, Ack(1))
    assert world.take(alice) == [Status("r1", "delivered", 1)]
    assert world.relay.waiting_for("bob") == 0


def test_offline_messages_wait_and_arrive_in_send_order():
    world = World()
    bob = world.connect("bob")
    world.relay.disconnected(bob)
    alice = world.connect("alice")
    for number in range(5):
        world.send(alice, Send("bob", f"r{number}", str(number).encode()))
    bob = world.connect("bob")
    assert [frame.body for frame in world.take(bob)] == [b"0", b"1", b"2", b"3", b"4"]


def test_unacknowledged_messages_are_sent_again_on_reconnect():
    world = World()
    alice, bob = world.connect("alice"), world.connect("bob")
    world.send(alice, Send("bob", "r1", b"hi"))
    assert world.take(bob) == [Msg(1, "alice", b"hi")]
    world.relay.disconnected(bob)  # lost before it could ACK
    bob = world.connect("bob")
    assert world.take(bob) == [Msg(1, "alice", b"hi")]


def test_a_repeated_send_is_stored_once():
    world = World()
    alice = world.connect("alice")
    world.connect("bob")
    world.send(alice, Send("bob", "r1", b"hi"), Send("bob", "r1", b"hi"))
    assert world.take(alice) == [Status("r1", "stored", 1), Status("r1", "stored", 1)]
    assert world.relay.waiting_for("bob") == 1


def test_a_repeated_send_is_answered_stored_even_when_the_queue_has_filled_since():
    # The first copy is stored; an ERR 429 for its repeat told the sender it had failed.
    world = World(max_waiting_per_recipient=2)
    world.relay.disconnected(world.connect("bob"))
    alice = world.connect("alice")
    world.send(alice, Send("bob", "r1", b"one"), Send("bob", "r2", b"two"), Send("bob", "r1", b"one"))
    assert world.take(alice) == [Status("r1", "stored", 1), Status("r2", "stored", 2), Status("r1", "stored", 1)]


def test_delivery_window_bounds_what_is_in_flight():
    world = World(delivery_window=3)
    alice, bob = world.connect("alice"), world.connect("bob")
    for number in range(10):
        world.send(alice, Send("bob", f"r{number}", b"x"))
    sent = world.take(bob)
    assert [frame.id for frame in sent] == [1, 2, 3]
    world.send(bob, Ack(1))
    assert [frame.id for frame in world.take(bob)] == [4]


@pytest.mark.parametrize(
    "frame, code",
    [
        (Send("nobody", "r1", b"x"), ErrorCode.UNKNOWN_RECIPIENT),
        (Hello("no spaces allowed!"), ErrorCode.BAD_NAME),
        (Hello("bob"), ErrorCode.NAME_TAKEN),
        (Msg(1, "alice", b"x"), ErrorCode.UNKNOWN_COMMAND),
    ],
)
def test_bad_requests_get_an_error_and_keep_the_connection(frame, code):
    world = World()
    world.connect("bob")
    carol = world.connect("carol" if not isinstance(frame, Hello) else None)
    world.send(carol, frame)
    (reply,) = world.take(carol)
    assert isinstance(reply, Err) and reply.code == code.code
    assert carol not in world.closed


def test_commands_before_hello_are_refused():
    world = World()
    connection = world.connect()
    world.send(connection, Send("bob", "r1", b"x"), Who())
    assert [frame.code for frame in world.take(connection)] == [401, 401]


def test_wrong_version_closes_the_connection():
    world = World()
    connection = world.connect()
    world.send(connection, Hello("alice", "hellohi/9"))
    assert world.take(connection)[0].code == 505
    assert connection in world.closed


def test_fatal_decoder_error_closes_only_that_connection():
    world = World()
    alice, mallory = world.connect("alice"), world.connect("mallory")
    world.relay.reject(mallory, ProtocolError(ErrorCode.TOO_LARGE, "too big", fatal=True))
    world.flush()
    assert world.take(mallory)[0].code == 413
    assert world.closed == {mallory}
    world.send(alice, Who())
    assert world.take(alice) == [Online(("alice",))]


def test_queue_limit_refuses_more_messages_for_one_recipient():
    world = World(max_waiting_per_recipient=2)
    bob = world.connect("bob")
    world.relay.disconnected(bob)
    alice = world.connect("alice")
    world.send(alice, *(Send("bob", f"r{n}", b"x") for n in range(3)))
    replies = world.take(alice)
    assert [type(frame) for frame in replies] == [Status, Status, Err]
    assert replies[2].code == 429 and replies[2].ref == "r2"


def test_max_clients():
    world = World(max_clients=2)
    world.connect("a"), world.connect("b")
    third = world.connect()
    [full] = world.take(third)
    assert (full.code, full.detail) == (503, "the server takes at most 2 clients at once") and third in world.closed
    one = World(max_clients=1)
    one.connect("a")
    assert one.take(one.connect())[0].detail == "the server takes at most 1 client at once"  # was "1 clients"


def test_heartbeat_pings_then_drops_a_silent_peer_whose_later_messages_are_stored():
    world = World(heartbeat_interval=10, heartbeat_timeout=30)
    alice, bob = world.connect("alice"), world.connect("bob")
    world.tick(10)
    assert world.take(bob) == [Ping()]
    world.send(alice, Pong())
    world.tick(10)
    world.send(alice, Pong())
    world.tick(10)
    assert bob in world.closed and world.take(bob)[-1].code == 408
    assert alice not in world.closed
    world.take(alice)  # the PINGs it answered
    world.send(alice, Send("bob", "r1", b"later"))
    assert world.take(alice) == [Status("r1", "stored", 1)]
    assert world.relay.waiting_for("bob") == 1


def test_next_deadline_follows_the_heartbeat():
    world = World(heartbeat_interval=10, heartbeat_timeout=30)
    assert world.relay.next_deadline() is None
    world.connect("alice")
    assert world.relay.next_deadline() == 10


def test_a_connections_own_deadline_only_moves_later():
    world = World(heartbeat_interval=10, heartbeat_timeout=30)
    alice = world.connect("alice")
    world.now = 4.0
    bob = world.connect("bob")
    assert (world.relay.deadline_of(alice), world.relay.deadline_of(bob)) == (10, 14)
    world.now = 6.0
    world.send(alice, Ping("t"))  # heard from: its heartbeat moves back
    assert world.relay.deadline_of(alice) == 16 and world.relay.next_deadline() == 14
    world.send(alice, Bye())
    assert world.relay.deadline_of(alice) is None and world.relay.deadline_of(999) is None


def test_ping_pong_and_bye():
    world = World()
    alice = world.connect("alice")
    world.send(alice, Ping("t1"), Bye())
    assert world.take(alice) == [Pong("t1"), Bye()]
    assert alice in world.closed
    assert world.relay.online == []


def test_messages_survive_a_new_relay_on_the_same_store(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    world.relay.disconnected(world.connect("carol"))
    alice = world.connect("alice")
    world.send(alice, Send("carol", "r1", b"kept"))
    # No close(): the flush() already committed, which is what a SIGKILL leaves behind.
    reborn = World(MessageStore(path))
    carol = reborn.connect("carol")
    assert reborn.take(carol) == [Msg(1, "alice", b"kept")]


def test_byte_window_bounds_what_a_non_reader_costs():
    world = World(delivery_window_bytes=250)
    alice, bob = world.connect("alice"), world.connect("bob")
    for number in range(5):
        world.send(alice, Send("bob", f"r{number}", b"x" * 100))
    assert [frame.id for frame in world.take(bob)] == [1, 2, 3]  # 300 bytes: the third crossed 250
    world.send(bob, Ack(1), Ack(2))
    assert [frame.id for frame in world.take(bob)] == [4, 5]


class CountingStore(MessageStore):
    """A store that counts the rows the relay reads back."""

    rows_read = 0
    reads = 0

    def waiting(self, *args, **kwargs):
        found = super().waiting(*args, **kwargs)
        self.rows_read += len(found)
        self.reads += 1
        return found


def test_a_backlog_of_large_bodies_is_read_once_not_once_per_ack():
    store = CountingStore(":memory:")
    world = World(store, delivery_window_bytes=1000)
    alice = world.connect("alice")
    bob = world.connect("bob")
    world.send(bob, Bye())
    for number in range(60):
        world.send(alice, Send("bob", f"r{number}", b"x" * 100))
    bob = world.connect("bob")
    delivered = []
    while frames := [frame for frame in world.take(bob) if isinstance(frame, Msg)]:
        delivered += [frame.id for frame in frames]
        world.send(bob, *(Ack(frame.id) for frame in frames))
    assert delivered == list(range(1, 61))
    # The byte window (10 bodies) bounds each read, not only the count window (256).
    assert store.rows_read <= 2 * 60


def test_waiting_stops_at_the_byte_limit_but_always_gives_the_first():
    store = MessageStore(":memory:")
    for number in range(5):
        store.add("alice", f"r{number}", "bob", b"x" * 100, 0.0)
    assert [m.id for m in store.waiting("bob", max_bytes=250)] == [1, 2, 3]  # 300 bytes reach 250
    assert [m.id for m in store.waiting("bob", max_bytes=1)] == [1]
    assert [m.id for m in store.waiting("bob", after_id=3, max_bytes=10_000)] == [4, 5]
    assert len(store.waiting("bob")) == 5


def test_a_batch_of_acks_refills_the_window_with_one_read_of_the_store():
    store = CountingStore(":memory:")
    world = World(store, delivery_window=10)
    alice, bob = world.connect("alice"), world.connect("bob")
    world.send(alice, *(Send("bob", f"r{number}", b"x") for number in range(25)))
    first = [frame.id for frame in world.take(bob) if isinstance(frame, Msg)]
    assert first == list(range(1, 11))  # the window; 15 wait in the store
    reads_before = store.reads
    world.send(bob, *(Ack(message_id) for message_id in first))  # one read (TCP segment) with 10 ACKs
    assert [frame.id for frame in world.take(bob) if isinstance(frame, Msg)] == list(range(11, 21))
    assert store.reads - reads_before == 1


def test_a_send_to_a_name_nobody_can_have_is_refused_with_its_ref():
    # Without the ref the sender cannot tell which SEND failed, and a client keeps
    # sending an unconfirmed SEND again after every reconnect.
    world = World()
    alice = world.connect("alice")
    decoder = Decoder()
    decoder.feed(b"SEND bob! r7 2\nhi\nPING\n")
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    world.relay.reject(alice, refused.value)
    world.send(alice, decoder.next_frame())
    error, pong = world.take(alice)
    assert (error.code, error.ref) == (400, "r7") and "recipient 'bob!'" in error.detail
    assert pong == Pong(None)


def test_who_answers_a_class_too_large_for_one_line_in_pages_a_client_joins():
    """Forty 32-character names make a 1,300-byte list: past the 1024 bytes a client
    reads in a line. The answer comes in pages of at most 1024 bytes; the client's
    session joins them into one list, in order."""
    world = World()
    names = [f"student-{n:02d}-" + "x" * 21 for n in range(40)]
    for name in names:
        world.connect(name)
    asker = world.connect("asker")
    world.send(asker, Who())
    pages = world.take(asker)
    assert len(pages) == 2 and [page.more for page in pages] == [True, False]
    assert all(len(encode(page)) <= 1025 for page in pages)
    session = ClientSession("asker")
    session.hello()
    events = [event for page in pages for event in session.receive(page)[0]]
    assert events == [OnlineList(tuple(sorted(names + ["asker"])))]


def test_a_store_that_cannot_write_answers_err_500_and_the_resent_send_is_stored_once(tmp_path):
    # Another program holds the store's write lock for longer than SQLite waits: nothing
    # may be said about the SEND (no STATUS, no MSG), the clients involved get ERR 500
    # without a ref and are closed, and the SEND sent again after reconnecting (same ref)
    # is stored once, when the store can write again.
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    alice, bob = world.connect("alice"), world.connect("bob", peer="127.0.0.1:40001")
    world.store._db.execute("PRAGMA busy_timeout = 10")  # SQLite's 5 s wait would only slow the test
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    world.send(alice, Send("bob", "r1", b"hi"))
    for connection in (alice, bob):  # bob was about to get the MSG
        [err] = world.take(connection)
        assert (err.code, err.reason, err.ref) == (500, "store-unavailable", None)
        assert connection in world.closed
    other.rollback()
    alice, bob = world.connect("alice"), world.connect("bob", peer="127.0.0.1:40001")
    world.send(alice, Send("bob", "r1", b"hi"))
    assert world.take(alice) == [Status("r1", "stored", 1)]
    assert world.take(bob) == [Msg(1, "alice", b"hi")]


def test_a_hello_while_the_store_cannot_write_is_answered_err_500(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    world.store._db.execute("PRAGMA busy_timeout = 10")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    carol = world.relay.connect("127.0.0.1:40002", world.now)
    world.inbox[carol] = []
    world.send(carol, Hello("carol"))  # a new name is written to the store
    [err] = world.take(carol)
    assert (err.code, carol in world.closed, world.relay.online) == (500, True, [])
    other.rollback()
    assert world.connect("carol") > carol


def test_a_flush_with_nothing_to_say_does_not_try_a_store_that_cannot_write_again(tmp_path):
    # The glue calls flush() until it returns nothing: after the ERR 500s, one more call
    # that tried the store again would stall the server SQLite's 5 s once more (the UDP
    # server sent its ERR 500s only after that second wait).
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    alice = world.connect("alice")
    world.store._db.execute("PRAGMA busy_timeout = 10")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    world.send(alice, Send("alice", "r1", b"note to self"))
    assert [err.code for err in world.take(alice)] == [500]
    tries = []
    world.store.commit = lambda: tries.append("commit")
    assert world.relay.flush() == []
    assert tries == []
    other.rollback()


def test_a_store_that_cannot_write_closes_only_the_clients_it_concerns(tmp_path):
    # carol's PING and dave's WHO come in the same batch as alice's SEND: their answers claim
    # nothing about the store, so they go out, and carol and dave stay (they were closed with
    # ERR 500 too, and every heartbeat while the lock was held closed whoever it reached).
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    alice, bob = world.connect("alice"), world.connect("bob", peer="127.0.0.1:40001")
    carol, dave = world.connect("carol", peer="127.0.0.1:40002"), world.connect("dave", peer="127.0.0.1:40003")
    world.store._db.execute("PRAGMA busy_timeout = 10")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    world.relay.receive(carol, Ping("c1"), world.now)
    world.relay.receive(dave, Who(), world.now)
    world.send(alice, Send("bob", "r1", b"hi"))
    other.rollback()
    for connection in (alice, bob):
        assert [err.code for err in world.take(connection)] == [500] and connection in world.closed
    assert world.take(carol) == [Pong("c1")] and carol not in world.closed
    [online] = world.take(dave)
    assert isinstance(online, Online) and dave not in world.closed


def test_a_client_the_failed_batch_closed_itself_is_still_told_why(tmp_path):
    # bob's line was too long (ERR 413, closed) in the batch where alice's SEND gave him a MSG:
    # the store could not write, so the MSG must not go out, but the ERR 413 must (he got a
    # bare close, and a client told nothing reconnects and sends the refused frame again).
    # carol acknowledged and said BYE in that batch: her BYE goes out, her ACK is not confirmed.
    path = str(tmp_path / "store.sqlite3")
    world = World(MessageStore(path))
    alice, bob = world.connect("alice"), world.connect("bob", peer="127.0.0.1:40001")
    carol = world.connect("carol", peer="127.0.0.1:40002")
    world.send(alice, Send("carol", "r0", b"for carol"))
    [msg] = world.take(carol)
    world.take(alice)
    world.store._db.execute("PRAGMA busy_timeout = 10")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    world.relay.receive(alice, Send("bob", "r1", b"hi"), world.now)
    world.relay.reject(bob, ProtocolError(ErrorCode.TOO_LARGE, "header line longer than 1024 bytes", fatal=True))
    world.relay.receive(carol, Ack(msg.id), world.now)
    world.relay.receive(carol, Bye(), world.now)
    world.flush()
    other.rollback()
    assert [err.code for err in world.take(alice)] == [500]
    assert [(type(frame), getattr(frame, "code", None)) for frame in world.take(bob)] == [(Err, 413)]
    assert world.take(carol) == [Bye()]
    assert {alice, bob, carol} <= world.closed
