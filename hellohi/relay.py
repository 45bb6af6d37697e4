"""The relay: who is online, where each message goes, and what is still owed.

This is the whole chat server without any networking. The TCP and UDP servers
feed it events (a connection opened, a frame arrived, a connection closed, the
clock moved on) and carry out the actions it returns (send this frame on that
connection, close that connection). Because it never touches a socket or a
clock itself, the same object serves both transports and the tests can drive
it with a fake clock.

The durability rule: a message is written to the store before anyone hears
about it, and removed only when its recipient ACKs it. Actions are held back
until `flush()` has committed the store, so "stored" is never said about a
message that a crash could still lose.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Union

from .codec import (
    CHOSEN_NAME,
    NAME_RULE,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    Err,
    Frame,
    Hello,
    Hi,
    Msg,
    Online,
    Ping,
    Pong,
    Send,
    Status,
    Who,
    online_pages,
)
from .errors import ErrorCode, ProtocolError
from .store import MessageStore, StoreUnavailable


@dataclass
class RelayLimits:
    max_clients: int = 1000
    # Stored messages waiting for one recipient; more are refused with ERR 429.
    max_waiting_per_recipient: int = 10_000
    # MSG frames sent to a recipient and not yet ACKed. Bounds what one slow
    # client can make the server hold in memory and in its send buffer.
    delivery_window: int = 256
    # ...and their bodies' bytes: no new MSG goes out past this (one always may),
    # so what a client that never reads costs the server is bounded.
    delivery_window_bytes: int = 1024 * 1024
    heartbeat_interval: float = 15.0
    # A connection silent this long is dropped; its messages wait in the store.
    heartbeat_timeout: float = 45.0


# What a transport lets one client owe before dropping it with ERR 507: bytes written to it
# and unread (TCP), or queued for it while it acknowledges nothing (reliable UDP). Without
# a bound, a client that stops reading but keeps sending PINGs grows the server's memory
# without end. It must exceed a full delivery window, headers included, or a normal burst
# would trip it (options.limits_from checks).
DEFAULT_MAX_OUTBOUND = 4 * 1024 * 1024


@dataclass(slots=True)
class Transmit:
    connection: int
    frame: Frame


@dataclass(slots=True)
class Disconnect:
    connection: int
    reason: str


@dataclass(slots=True)
class Notice:
    """Something a person watching the server would want to read in its log."""

    connection: int
    text: str


Action = Union[Transmit, Disconnect, Notice]


def format_peer(address: tuple) -> str:
    """A socket address as the peer string the relay uses: "IP:PORT", or "[IPv6]:PORT"."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

_SERVER_ONLY = (Hi, Msg, Status, Online)
_BEFORE_HELLO = (Hello, Ping, Pong, Err, Bye)
# The frames that claim something the store has written: nothing may say so before it commits.
_TELLS_OF_THE_STORE = (Status, Msg, Hi)


@dataclass
class _Connection:
    id: int
    peer: str
    last_heard: float
    last_ping: float
    name: str | None = None
    # id -> (sender, ref, body size) of each MSG sent and not yet ACKed, oldest first.
    in_flight: "OrderedDict[int, tuple[str, str, int]]" = field(default_factory=OrderedDict)
    in_flight_bytes: int = 0
    # Highest message id sent on this connection; the store is read after it.
    cursor: int = 0
    # MSGs that may await an ACK at once; None: the relay's delivery_window.
    window: int | None = None


class Relay:
    def __init__(self, store: MessageStore, limits: RelayLimits | None = None, narrate: bool = False):
        self.store = store
        self.limits = limits or RelayLimits()
        # Per-message notices cost time at high rates, so they are opt-in.
        self.narrate = narrate
        self._connections: dict[int, _Connection] = {}
        self._by_name: dict[str, _Connection] = {}
        self._waiting = store.waiting_counts()
        self._outbox: list[Action] = []
        # Recipients whose window opened (ACKs) or whose backlog grew since the last
        # flush: their stored messages go out at the flush, with one read of the store
        # per recipient for the whole batch instead of one per ACK.
        self._to_deliver: dict[int, _Connection] = {}
        self._next_connection = 1
        # Set when the store could not write: flush() then answers ERR 500 instead, to the
        # clients whose frames it stopped, and to those the batch would have told about it.
        self._store_error: StoreUnavailable | None = None
        self._stopped_by_store: set[int] = set()
        # What each frame a client may send makes the relay do.
        self._handlers = {
            Hello: lambda connection, frame, now: self._hello(connection, frame),
            Ping: lambda connection, frame, now: self._send(connection, Pong(frame.token)),
            Pong: lambda connection, frame, now: None,  # liveness is all a PONG says
            Err: lambda connection, frame, now: None,  # never answer an error: that could loop
            Bye: lambda connection, frame, now: self._goodbye(connection),
            Send: self._relay,
            Ack: lambda connection, frame, now: self._acknowledged(connection, frame.id),
            Who: lambda connection, frame, now: self._send_each(connection, online_pages(sorted(self._by_name))),
        }

    # ------------------------------------------------------------ events in

    def connect(self, peer: str, now: float, window: int | None = None) -> int:
        """A transport accepted a peer ("IP:PORT"). Returns its connection id.

        `window` overrides the delivery window for this connection: plain UDP
        passes the store's whole backlog, because a transport that loses ACKs
        for good would otherwise fill the window with them and stall.
        """
        full = self.is_full()
        connection = _Connection(self._next_connection, peer, last_heard=now, last_ping=now, window=window)
        self._next_connection += 1
        self._connections[connection.id] = connection
        if full:
            most = self.limits.max_clients
            self._refuse(connection, ErrorCode.SERVER_FULL, f"the server takes at most {most} client{'s' if most != 1 else ''} at once")
        return connection.id

    def receive(self, connection_id: int, frame: Frame, now: float) -> None:
        connection = self._connections.get(connection_id)
        if connection is None:
            return  # already dropped; late frames are ignored
        connection.last_heard = now
        kind = type(frame)
        if kind in _SERVER_ONLY:
            self._reply_error(connection, ErrorCode.UNKNOWN_COMMAND, f"{kind.__name__.upper()} is sent by the server, not to it")
        elif kind in _BEFORE_HELLO or connection.name is not None:
            try:
                self._handlers[kind](connection, frame, now)
            except StoreUnavailable as error:  # a HELLO's read of waiting messages wrote first
                self._store_error = error
                self._stopped_by_store.add(connection.id)
        else:
            self._reply_error(connection, ErrorCode.HELLO_FIRST, "say HELLO [NAME] first")

    def reject(self, connection_id: int, error: ProtocolError) -> None:
        """The decoder refused this connection's bytes."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return
        if error.fatal:
            self._refuse(connection, error.error, error.detail)
        else:
            self._reply_error(connection, error.error, error.detail, error.ref)

    def disconnected(self, connection_id: int) -> None:
        """The transport lost the connection (or closed it for us)."""
        connection = self._connections.get(connection_id)
        if connection is not None:
            self._forget(connection, "disconnected")

    def on_timer(self, now: float) -> None:
        """Send heartbeats that are due and drop peers that went silent."""
        interval, timeout = self.limits.heartbeat_interval, self.limits.heartbeat_timeout
        # Compared as sums, exactly as next_deadline() computes them: `now - last >= interval`
        # can be False at the very deadline through floating-point rounding, and the
        # timer would fire again and again at the same instant.
        for connection in list(self._connections.values()):
            if now >= connection.last_heard + timeout:
                silent_for = now - connection.last_heard
                self._refuse(connection, ErrorCode.TIMEOUT, f"nothing heard for {silent_for:.1f} s")
            elif now >= max(connection.last_heard, connection.last_ping) + interval:
                connection.last_ping = now
                self._send(connection, Ping())

    def next_deadline(self) -> float | None:
        """When on_timer() next has something to do (None: no connections)."""
        return min((self._deadline(c) for c in self._connections.values()), default=None)

    def deadline_of(self, connection_id: int) -> float | None:
        """When on_timer() next has something to do for this connection (None: it is gone).

        A connection's deadline only ever moves later (what it sends and the pings we
        send it both push it back), so a deadline read once stays a safe lower bound.
        """
        connection = self._connections.get(connection_id)
        return self._deadline(connection) if connection is not None else None

    def _deadline(self, connection: _Connection) -> float:
        interval, timeout = self.limits.heartbeat_interval, self.limits.heartbeat_timeout
        return min(connection.last_heard + timeout, max(connection.last_heard, connection.last_ping) + interval)

    def flush(self) -> list[Action]:
        """Commit the store, then hand over everything to send and close."""
        if not self._outbox and not self._to_deliver and self._store_error is None:
            # Nothing to say, so nothing needs committing before it (every write comes with
            # something to say). Above all, a commit that failed is not tried again here: each
            # try can wait --store-wait, and the glue calls flush() until it returns nothing.
            return []
        to_deliver, self._to_deliver = self._to_deliver, {}
        try:
            if self._store_error is None:
                for connection in to_deliver.values():
                    if connection.id in self._connections:
                        self._deliver(connection)
                self.store.commit()
        except StoreUnavailable as error:
            self._store_error = error
        if self._store_error is not None:
            self._store_failed(to_deliver)
        actions, self._outbox = self._outbox, []
        return actions

    def _store_failed(self, to_deliver: dict[int, _Connection]) -> None:
        """The store could not commit. It keeps what it could not write, for the next commit,
        but nothing may be said about it before then: a client that would have been told
        (a STATUS, a MSG, a HI for a name not yet written), that waited for delivery, or
        whose frame the failure stopped gets ERR 500 instead of this batch's frames, and
        is closed. A sender sends its unconfirmed SENDs again when it reconnects (the ERR
        has no ref: they are not refused), and they are recognised by their refs. The other
        clients' frames (a PONG, a WHO's answer) claim nothing about the store and go out
        as usual, and so does the frame that says why the batch closed a client (_still_said)."""
        error, self._store_error = self._store_error, None
        told_of_the_store = {action.connection for action in self._outbox
                             if isinstance(action, Transmit) and isinstance(action.frame, _TELLS_OF_THE_STORE)}
        involved = told_of_the_store | set(to_deliver) | self._stopped_by_store
        self._stopped_by_store = set()
        # Before the loop below closes them: which of the involved were closed by the batch itself.
        self._outbox = [action for action in self._outbox if self._still_said(action, involved)]
        for connection_id in sorted(involved):
            connection = self._connections.get(connection_id)
            if connection is not None:
                self._refuse(connection, ErrorCode.STORE_UNAVAILABLE, f"the message store cannot be written ({error}); nothing of this was confirmed: try again")

    def _still_said(self, action: Action, involved: set[int]) -> bool:
        """Whether an action of a batch whose commit failed still goes out. An involved client
        still connected gets ERR 500 instead of its frames. One the batch already closed (its
        BYE, an ERR 413 for a line too long, an ERR 408) gets no ERR 500, so it keeps the
        frames that say why it was closed and loses only those that tell of the store."""
        if not isinstance(action, Transmit) or action.connection not in involved:
            return True
        closed_by_this_batch = action.connection not in self._connections
        return closed_by_this_batch and not isinstance(action.frame, _TELLS_OF_THE_STORE)

    # ------------------------------------------------------------ queries

    @property
    def online(self) -> list[str]:
        return sorted(self._by_name)

    def is_full(self) -> bool:
        """True when one more connect() would be refused with ERR 503."""
        return len(self._connections) >= self.limits.max_clients

    def is_connected(self, connection_id: int) -> bool:
        """False once the connection was closed (by either side) or never existed."""
        return connection_id in self._connections

    def name_of(self, connection_id: int) -> str | None:
        connection = self._connections.get(connection_id)
        return connection.name if connection else None

    def waiting_for(self, name: str) -> int:
        return self._waiting.get(name, 0)

    # ------------------------------------------------------------ the work

    def _hello(self, connection: _Connection, hello: Hello) -> None:
        if hello.version and hello.version.lower() != PROTOCOL_VERSION:
            self._hello_refused(connection, hello, ErrorCode.BAD_VERSION, f"this server speaks {PROTOCOL_VERSION}", fatal=True)
            return
        if hello.name is not None and not CHOSEN_NAME.match(hello.name):
            self._hello_refused(connection, hello, ErrorCode.BAD_NAME, NAME_RULE)
            return
        name = hello.name or connection.peer
        if connection.name is not None:
            if name == connection.name or hello.name is None:
                self._send(connection, self._hi(connection.name))  # a repeated Hello is a ping
            else:
                self._hello_refused(connection, hello, ErrorCode.NAME_TAKEN, f"this connection is already {connection.name}")
            return
        if name in self._by_name:
            self._hello_refused(connection, hello, ErrorCode.NAME_TAKEN, f"{name} is online from another connection")
            return
        connection.name = name
        self._by_name[name] = connection
        if hello.name is not None:
            self.store.remember_name(name)  # address names die with their connection
        self._notice(connection, f"{name} said Hello from {connection.peer}")
        self._send(connection, self._hi(name))
        self._deliver(connection)

    def _hello_refused(self, connection: _Connection, hello: Hello, error: ErrorCode, detail: str, fatal: bool = False) -> None:
        # In the server's log as well as in the ERR: whoever runs the server sees why a
        # client never registered, not only that it left.
        as_name = f" as {hello.name}" if hello.name else ""
        self._notice(connection, f"refused Hello{as_name} from {connection.peer}: {error.code} {error.reason} ({detail})")
        if fatal:
            self._refuse(connection, error, detail)
        else:
            self._reply_error(connection, error, detail)

    def _goodbye(self, connection: _Connection) -> None:
        self._send(connection, Bye())
        self._drop(connection, "said BYE")

    def _hi(self, name: str) -> Hi:
        return Hi(name, int(self.limits.heartbeat_interval * 1000))

    def _relay(self, sender: _Connection, send: Send, now: float) -> None:
        assert sender.name is not None
        first_copy = self.store.first_copy(sender.name, send.ref)
        if first_copy is not None:
            # The sender repeated a SEND we already hold (after a reconnect): it is stored,
            # whatever changed since (the queue filled, an address name left), and an
            # ERR now would tell the sender a stored message had failed.
            self._send(sender, Status(send.ref, "stored", first_copy))
            return
        recipient = self._by_name.get(send.to)
        if recipient is None and not self.store.knows(send.to):
            self._reply_error(sender, ErrorCode.UNKNOWN_RECIPIENT, f"nobody called {send.to} has said Hello here", send.ref)
            return
        if self._waiting.get(send.to, 0) >= self.limits.max_waiting_per_recipient:
            self._reply_error(sender, ErrorCode.QUEUE_FULL, f"{send.to} already has {self.limits.max_waiting_per_recipient} messages waiting", send.ref)
            return
        message_id, _ = self.store.add(sender.name, send.ref, send.to, send.body, now)
        self._send(sender, Status(send.ref, "stored", message_id))
        self._waiting[send.to] = self._waiting.get(send.to, 0) + 1
        if self.narrate:
            where = "online" if recipient else "offline, kept for later"
            self._notice(sender, f"{sender.name} -> {send.to}: stored as #{message_id} ({send.to} {where})")
        if recipient is not None:
            unsent = self._waiting[send.to] - len(recipient.in_flight)
            if unsent == 1 and self._has_room(recipient):
                # The common live case: nothing else is queued, so skip the store read.
                self._put_in_flight(recipient, message_id, sender.name, send.ref, send.body)
            else:
                self._to_deliver[recipient.id] = recipient

    def _deliver(self, connection: _Connection) -> None:
        """Send stored messages to an online recipient, in id order, up to the window."""
        assert connection.name is not None
        room = self._window(connection) - len(connection.in_flight)
        unsent = self._waiting.get(connection.name, 0) - len(connection.in_flight)
        if unsent <= 0 or not self._has_room(connection):
            return
        # Read no more than the byte window admits too: with 64 KiB bodies a count of
        # 256 would read 16 MiB from the store to send the 16 that fit, on every ACK.
        byte_window = self._byte_window(connection)
        room_bytes = None if byte_window is None else byte_window - connection.in_flight_bytes
        for message in self.store.waiting(connection.name, after_id=connection.cursor, limit=room, max_bytes=room_bytes):
            if not self._has_room(connection):
                break
            self._put_in_flight(connection, message.id, message.sender, message.ref, message.body)

    def _has_room(self, connection: _Connection) -> bool:
        if not connection.in_flight:
            return True  # one message always fits, however large
        byte_window = self._byte_window(connection)
        return len(connection.in_flight) < self._window(connection) and (
            byte_window is None or connection.in_flight_bytes < byte_window
        )

    def _window(self, connection: _Connection) -> int:
        return self.limits.delivery_window if connection.window is None else connection.window

    def _byte_window(self, connection: _Connection) -> int | None:
        # A connection with a window of its own (plain UDP) counts messages only.
        return self.limits.delivery_window_bytes if connection.window is None else None

    def _put_in_flight(self, connection: _Connection, message_id: int, sender: str, ref: str, body: bytes) -> None:
        connection.in_flight[message_id] = (sender, ref, len(body))
        connection.in_flight_bytes += len(body)
        connection.cursor = message_id
        self._send(connection, Msg(message_id, sender, body))

    def _acknowledged(self, connection: _Connection, message_id: int) -> None:
        assert connection.name is not None
        owed = connection.in_flight.pop(message_id, None)
        if owed is None:
            return  # a repeated ACK; the message is already gone
        self.store.remove(message_id, connection.name)
        self._waiting[connection.name] -= 1
        sender_name, ref, size = owed
        connection.in_flight_bytes -= size
        if self.narrate:
            self._notice(connection, f"{connection.name} acknowledged #{message_id} from {sender_name}")
        sender = self._by_name.get(sender_name)
        if sender is not None:
            self._send(sender, Status(ref, "delivered", message_id))
        self._to_deliver[connection.id] = connection

    # ------------------------------------------------------------ plumbing

    def _send(self, connection: _Connection, frame: Frame) -> None:
        self._outbox.append(Transmit(connection.id, frame))

    def _send_each(self, connection: _Connection, frames: list[Frame]) -> None:
        for frame in frames:
            self._send(connection, frame)

    def _notice(self, connection: _Connection, text: str) -> None:
        self._outbox.append(Notice(connection.id, text))

    def _reply_error(self, connection: _Connection, error: ErrorCode, detail: str, ref: str | None = None) -> None:
        self._send(connection, Err.of(error, detail, ref))

    def _refuse(self, connection: _Connection, error: ErrorCode, detail: str) -> None:
        """Say why, then close."""
        self._reply_error(connection, error, detail)
        self._drop(connection, f"{error.code} {error.reason}")

    def _drop(self, connection: _Connection, reason: str) -> None:
        self._outbox.append(Disconnect(connection.id, reason))
        self._forget(connection, reason)

    def _forget(self, connection: _Connection, reason: str) -> None:
        # Unacknowledged messages stay in the store and go out again on the next connect.
        del self._connections[connection.id]
        if connection.name is not None and self._by_name.get(connection.name) is connection:
            del self._by_name[connection.name]
        self._notice(connection, f"{connection.name or connection.peer} left ({reason})")
