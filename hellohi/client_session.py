"""The client's half of the protocol, without any networking.

It labels outgoing messages, remembers the ones the server has not yet
confirmed (to send them again after a reconnect), acknowledges incoming
messages, and drops the duplicates a server may redeliver after a crash (or
plain UDP may deliver twice), without dropping messages plain UDP reordered.
The TCP and UDP clients wrap it; tests drive it directly.
"""

from __future__ import annotations

import heapq
import re
import secrets
from dataclasses import dataclass
from typing import Union

from .codec import DEFAULT_MAX_BODY, NAME_RULE, Ack, Bye, Err, Frame, Hello, Hi, Msg, Online, Ping, Pong, Send, Status


@dataclass(slots=True)
class Registered:
    name: str
    heartbeat_ms: int


@dataclass(slots=True)
class MessageReceived:
    id: int
    sender: str
    body: bytes


@dataclass(slots=True)
class DuplicateDropped:
    id: int
    sender: str


@dataclass(slots=True)
class StatusChanged:
    ref: str
    state: str  # "stored" or "delivered"
    id: int


@dataclass(slots=True)
class OnlineList:
    names: tuple[str, ...]


@dataclass(slots=True)
class ErrorReceived:
    code: int
    reason: str
    ref: str | None
    detail: str


@dataclass(slots=True)
class PongReceived:
    token: str | None


@dataclass(slots=True)
class ServerSaidBye:
    pass


@dataclass(slots=True)
class ConnectionLost:
    """Reported by the transport glue, not by the server: the link went away."""

    reason: str
    reconnecting: bool


Event = Union[ConnectionLost, Registered, MessageReceived, DuplicateDropped, StatusChanged, OnlineList, ErrorReceived, PongReceived, ServerSaidBye]


# How many message ids a client remembers one by one to drop second copies.
# Over TCP and reliable UDP, ids arrive in increasing order and the newest id
# alone would do; plain UDP can reorder them, so a lower id may be a message
# not yet seen. Beyond this many, the oldest remembered id becomes the floor
# below which every id counts as seen: a message overtaken by more than
# SEEN_IDS_REMEMBERED later ones would be dropped as a second copy.
SEEN_IDS_REMEMBERED = 1024

# A header line is printable ASCII text. A name with any other character cannot be written
# at all, and a control character would break the line (a LF ends it early, the rest read as
# a frame of its own). Whether a printable name is one anybody may have is the server's to say
# (ERR 422, or ERR 400 for a SEND's TO).
_PRINTABLE_ASCII = re.compile(r"[ -~]*\Z")


def _refuse_unwritable(name: str, what: str) -> None:
    """ValueError, before anything is kept, for a name no header line can carry."""
    if not _PRINTABLE_ASCII.match(name):
        raise ValueError(f"the {what} {name!r} is not printable ASCII, so no frame can carry it: {NAME_RULE}")


class ClientSession:
    def __init__(self, name: str | None = None):
        if name is not None:
            _refuse_unwritable(name, "name")
        self.name = name
        self.registered_as: str | None = None
        # A random prefix keeps refs unique across runs of the same client, so
        # the server never mistakes a new message for a repeat of an old one.
        self._ref_prefix = secrets.token_hex(3)
        self._next_ref = 1
        self._unconfirmed: dict[str, Send] = {}
        # The ids already handed to the application: those in _seen_ids (a heap
        # of the same ids finds the oldest to forget), and every id up to _seen_floor.
        self._seen_ids: set[int] = set()
        self._seen_heap: list[int] = []
        self._seen_floor = 0
        self._online_pages: list[str] = []  # names of an ONLINE answer whose last page is still to come

    def hello(self) -> Hello:
        """The first frame of every connection (a reconnect's too)."""
        self._online_pages = []  # the rest of a half-received ONLINE answer went with the old connection
        return Hello(self.name)

    def send(self, to: str, body: bytes, max_body: int = DEFAULT_MAX_BODY, note: str = "") -> Send:
        """The SEND for `body`, kept until the server confirms it. ValueError for a body over
        `max_body` (`note` says why it is less than the protocol's), or a recipient no frame
        can carry."""
        if len(body) > max_body:
            # The server would answer ERR 413 and close the connection (or, over plain UDP,
            # the datagram could not even be sent), and the SEND, still unconfirmed, would
            # go again on every reconnect.
            limit = f"the limit of {max_body}{note}" if note else f"the protocol's limit of {max_body}"
            raise ValueError(f"a message of {len(body)} bytes is over {limit}")
        _refuse_unwritable(to, "recipient")
        ref = f"{self._ref_prefix}-{self._next_ref}"
        self._next_ref += 1
        frame = Send(to, ref, body)
        self._unconfirmed[ref] = frame
        return frame

    def unconfirmed(self) -> list[Send]:
        """SENDs the server has not confirmed: send them again after reconnecting."""
        return list(self._unconfirmed.values())

    def receive(self, frame: Frame) -> tuple[list[Event], list[Frame]]:
        """Take a frame from the server; returns (events for the app, frames to send back)."""
        if isinstance(frame, Msg):
            # A second copy is ACKed again: the server sent it because it missed our first ACK.
            if frame.id <= self._seen_floor or frame.id in self._seen_ids:
                return [DuplicateDropped(frame.id, frame.sender)], [Ack(frame.id)]
            self._remember_seen(frame.id)
            # No ACK yet: an ACK tells the server it may forget the message, so it waits
            # until the application has it (acknowledge()), not just this object.
            return [MessageReceived(frame.id, frame.sender, frame.body)], []
        if isinstance(frame, Status):
            self._unconfirmed.pop(frame.ref, None)
            return [StatusChanged(frame.ref, frame.state, frame.id)], []
        if isinstance(frame, Hi):
            self.registered_as = frame.name
            return [Registered(frame.name, frame.heartbeat_ms)], []
        if isinstance(frame, Ping):
            return [], [Pong(frame.token)]
        if isinstance(frame, Pong):
            return [PongReceived(frame.token)], []
        if isinstance(frame, Online):
            self._online_pages += frame.names
            if frame.more:
                return [], []
            names, self._online_pages = tuple(self._online_pages), []
            return [OnlineList(names)], []
        if isinstance(frame, Err):
            if frame.ref:
                self._unconfirmed.pop(frame.ref, None)  # refused for good; sending again would not help
            return [ErrorReceived(frame.code, frame.reason, frame.ref, frame.detail)], []
        if isinstance(frame, Bye):
            return [ServerSaidBye()], []
        return [ErrorReceived(0, "unexpected-frame", None, f"server sent {type(frame).__name__}")], []

    def acknowledge(self, event: MessageReceived) -> Ack:
        """The ACK for a message the application now has."""
        return Ack(event.id)

    def _remember_seen(self, id: int) -> None:
        self._seen_ids.add(id)
        heapq.heappush(self._seen_heap, id)
        if len(self._seen_heap) > SEEN_IDS_REMEMBERED:
            oldest = heapq.heappop(self._seen_heap)
            self._seen_ids.discard(oldest)
            self._seen_floor = oldest  # the heap's smallest: every id below it was forgotten before
