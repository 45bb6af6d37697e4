"""The client's end of a datagram session, sans-I/O (see datagram_relay.py for the server's).

It turns frames into datagrams and datagrams into frames, reliably or plainly:

    link = DatagramLink(DEFAULT)            # or DatagramLink(None) for plain UDP
    link.start(now)                         # a new session: token 0 until the server answers
    link.send_frame(Hello("alice"), now)
    for datagram in link.datagrams_to_send(now): sock.send(datagram)
    for item in link.receive(datagram, now): ...   # Frame, SessionReset or LinkFailed
    # one layer down (reliable mode): link.send_message(b"Hello\n", now), and
    # link.receive_messages(datagram, now) gives each message's bytes instead of frames
    # at link.next_deadline(): link.handle_timer(now), then send again

The session rules it follows:
- Until the server has given us a token, every datagram we send carries token
  0 and is padded to a full datagram, so the server, which never sends an
  unverified address more bytes than it received, has room to answer (with
  an ack that carries the token, or ERR 503; HI comes after the proof below).
- The first datagram that carries a token gives us our token. We answer that
  first datagram at once with an empty reliable message, which proves to the
  server that we receive at this address. From then on a datagram with any
  other token is a leftover of an old session, and ignored.
- A CHALLENGE with our token is answered at once with a RESPONSE carrying its
  secret: after our address changed (a NAT rebinding), the server sends us no
  more than we send it until we prove we receive at the new address.
- RESET with our token means the server no longer knows us (it stopped,
  restarted, or timed us out): the glue starts a new session and says Hello again.
- A session we abandon (we gave up on the server, or start a new one) is
  ended with a RESET of our own, so that the server frees our name and its
  client slot at once instead of at its --timeout; a name still held there
  would get our next Hello ERR 409. The RESET is said again with each new
  session's first datagrams until one gets HI, as it may be lost. Nothing else
  of it goes out any more, and its late datagrams are ignored.
- Plain mode retransmits nothing, except the Hello that starts a session: a
  client whose Hello or HI was lost would otherwise wait for an answer that
  never comes. Until HI (or an ERR) arrives, the link says Hello again every
  PLAIN_HELLO_RETRY seconds; the glue's connect timeout ends it. A Hello that
  did arrive twice is harmless: the relay answers a repeated Hello with the
  same name with HI again (PROTOCOL.md, "HELLO / HI").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from .codec import Decoder, Err, Frame, Hello, Hi, encode
from .datagram_relay import MAX_UDP_PAYLOAD
from .errors import ErrorCode, ProtocolError
from .reliable import ReliabilityConfig, ReliableEndpoint
from .reliable.endpoint import EndpointStats, MessageFailed, MessageReceived, MessageTooLarge
from .reliable.packet import (ACK_DELAY_UNIT, FLAG_CHALLENGE, PacketError, decode, is_reliable, reset_packet,
                              response_packet, unpack_common_shape)

# A plain Hello is padded with blank lines (which the decoder skips) to this size,
# for the same reason as the reliable padding: room for the server's answer.
# Lines of spaces rather than bare newlines: fewer lines for the server to skip.
PLAIN_HELLO_SIZE = 1200

# A plain message travels in one datagram, as one frame: its SEND, and the server's MSG with
# it, must fit. The longest framing this client's SEND can have: "SEND ", a 64-character
# name, " ", a 32-character ref, " ", 5 digits of LENGTH, the header's LF and the body's
# (a MSG's "MSG ", 18-digit id, name and LENGTH are shorter). Over TCP and with acks the
# protocol's 65536 bytes hold.
_LONGEST_SEND_FRAMING = len("SEND ") + 64 + 1 + 32 + 1 + 5 + 1 + 1
PLAIN_MAX_BODY = MAX_UDP_PAYLOAD - _LONGEST_SEND_FRAMING
_BLANK_LINE = b" " * 99 + b"\n"

# Seconds a plain client waits for HI before it says Hello again. Long enough
# for any real round trip (a second Hello is answered with a second HI, not
# harmful but not useful either), short enough that a lost Hello costs a
# person at a prompt one second, not the whole connect timeout.
PLAIN_HELLO_RETRY = 1.0

HELLO_FIRST = ErrorCode.HELLO_FIRST.code


def padded_plain_hello(hello: bytes) -> bytes:
    """An encoded Hello, padded to PLAIN_HELLO_SIZE bytes for a plain client's first datagram."""
    room = PLAIN_HELLO_SIZE - len(hello)
    return hello + _BLANK_LINE * (room // len(_BLANK_LINE)) + b"\n" * (room % len(_BLANK_LINE))


@dataclass(frozen=True)
class SessionReset:
    """The server does not know our session any more."""

    reason: str


@dataclass(frozen=True)
class LinkFailed:
    """The server stopped acknowledging, or sent something we cannot read."""

    reason: str


Received = Union[Frame, SessionReset, LinkFailed]


class DatagramLink:
    def __init__(
        self,
        config: ReliabilityConfig | None,
        max_line: int = 1024,
        max_body: int = 64 * 1024,
        trace: Callable[[str], None] | None = None,
    ):
        self.config = config  # None: plain mode, no acks and no retransmission
        self.max_line, self.max_body = max_line, max_body
        self.trace = trace
        self.endpoint: ReliableEndpoint | None = None
        self.ignored = 0  # datagrams that were malformed or from an old session
        self._decoder = Decoder(max_line, max_body)
        self._plain_out: list[bytes] = []
        self._failed = False
        self._heard_from_server = False  # plain mode: until then, our address is unproven
        # Plain mode, before HI: the Hello to say again, and when (see the module docstring).
        self._unanswered_hello: Frame | None = None
        self._hello_retry_at: float | None = None
        self._abandoned = False  # the session is over here; start() begins the next
        self._server_forgot = False  # it sent RESET: our session is gone there already
        self._goodbyes: list[bytes] = []  # RESETs for sessions we abandoned, to send first
        self._responses: list[bytes] = []  # RESPONSEs to the server's CHALLENGEs, to send next
        # ...and said again with each new session's first datagrams until one gets HI: one RESET
        # sent while the network is down is lost, and the name stayed taken until --timeout.
        self._resets_owed: deque[bytes] = deque(maxlen=8)
        # A few recent abandoned tokens: a late datagram of one must not become the new session's.
        self._old_tokens: deque[int] = deque(maxlen=8)

    @property
    def plain(self) -> bool:
        return self.config is None

    @property
    def token(self) -> int:
        return self.endpoint.token if self.endpoint else 0

    @property
    def stats(self) -> EndpointStats | None:
        """The reliability counters of the current session (None in plain mode)."""
        return self.endpoint.stats if self.endpoint else None

    def start(self, now: float) -> None:
        """Begin a new session: the old one is abandoned (see abandon())."""
        self.abandon()
        self._goodbyes = list(self._resets_owed)
        self._abandoned = self._failed = self._server_forgot = False
        self._decoder = Decoder(self.max_line, self.max_body)
        self._heard_from_server = False
        if self.config is not None:
            self.endpoint = ReliableEndpoint(self.config, token=0, now=now, trace=self.trace)

    def abandon(self) -> None:
        """End this session here (connect gave up, or a new one begins): nothing of it goes
        out any more, and a server that gave it a token is told with a RESET to forget it."""
        if self._abandoned:
            return
        self._abandoned = True
        self.stop_hello_retry()
        self._plain_out.clear()
        self._responses.clear()  # the session they prove an address for is over
        token = self.token
        if token:
            self._old_tokens.append(token)
            if not self._server_forgot:
                self._goodbyes.append(reset_packet(token))
                self._resets_owed.append(reset_packet(token))

    # ------------------------------------------------------------ out

    def send_frame(self, frame: Frame, now: float) -> None:
        if self._abandoned:
            return  # no session to carry it; the glue sends what matters again after HI
        data = encode(frame)
        if self.endpoint is not None:
            self.endpoint.send_message(data, now)
        else:
            if isinstance(frame, Hello) and not self._heard_from_server:
                data = padded_plain_hello(data)
            self._plain_out.append(data)
            if isinstance(frame, Hello) and (self._unanswered_hello is not None or not self._heard_from_server):
                # The Hello that starts the session (a later Hello, such as the
                # bench's round-trip probe, is not retried: its caller waits for it).
                self._unanswered_hello = frame
                self._hello_retry_at = now + PLAIN_HELLO_RETRY

    def send_message(self, data: bytes, now: float) -> None:
        """send_frame() one layer down, reliable mode only: `data` is sent as one
        message as it is, already encoded (the bench's hello-raw sends a fixed Hello)."""
        if self.endpoint is None:
            raise ValueError("send_message() is for reliable mode; in plain mode use send_frame()")
        self.endpoint.send_message(data, now)

    def stop_hello_retry(self) -> None:
        """Nobody waits for HI any more (connect gave up): stop saying Hello."""
        self._unanswered_hello = self._hello_retry_at = None

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self._goodbyes or self._abandoned:
            goodbyes, self._goodbyes = self._goodbyes, []
            return goodbyes if self._abandoned else goodbyes + self._datagrams_of_session(now)
        return self._datagrams_of_session(now)

    def _datagrams_of_session(self, now: float) -> list[bytes]:
        if self.endpoint is None:
            out, self._plain_out = self._plain_out, []
            return out
        datagrams = self.endpoint.datagrams_to_send(now)
        if self._responses:  # rare: only after our address changed
            datagrams = self._responses + datagrams
            self._responses = []
        if self.endpoint.token == 0:
            # Zero padding is part of the packet format; see the module docstring.
            datagrams = [d.ljust(self.endpoint.config.max_datagram, b"\0") for d in datagrams]
        return datagrams

    # ------------------------------------------------------------ in

    def receive(self, datagram: bytes, now: float) -> list[Received]:
        if self._abandoned:
            self.ignored += 1
            return []
        if self.endpoint is None:
            return self._receive_plain(datagram)
        return self._frames(self.receive_messages(datagram, now))

    def receive_messages(self, datagram: bytes, now: float) -> list[bytes | SessionReset | LinkFailed]:
        """receive() one layer down, reliable mode only: the messages themselves, each
        as the bytes the server sent (one encoded frame each), instead of frames. The
        bench's hello-raw reads them itself, as its TCP version reads lines; a client
        that mixed the two would lose frames that span messages."""
        endpoint = self.endpoint
        if endpoint is None:
            raise ValueError("receive_messages() is for reliable mode; a plain datagram is its own message")
        fields = unpack_common_shape(datagram)
        if fields is not None:
            # The fast lane: a whole message from our session, most likely the next one
            # in order (the endpoint checks), taken without building a Packet.
            flags, token, number, cumulative_ack, delay_units, _, _, count, data = fields
            if token == endpoint.token != 0 and not flags and count == 1 and endpoint.receive_next_message(
                    number, cumulative_ack, delay_units * ACK_DELAY_UNIT, data, now, len(datagram)):
                return [data]
        try:
            packet = decode(datagram)
        except PacketError:
            self.ignored += 1
            return []
        if packet.flags & FLAG_CHALLENGE:
            if packet.token == endpoint.token != 0:
                self._responses.append(response_packet(packet.token, packet.secret))
            return []
        if packet.is_reset:
            if packet.token == endpoint.token and packet.token != 0:
                self._server_forgot = True
                return [SessionReset("the server reset this session: it stopped, restarted, or timed us out")]
            self.ignored += 1
            return []
        if endpoint.token == 0 and packet.token != 0 and packet.token not in self._old_tokens:
            endpoint.token = packet.token  # the server's answer: our session from now on
            # Until the server sees this token come from our address, it may send us
            # no more bytes than we sent it, and it may have much to send (stored
            # messages). An empty message is carried reliably, retransmitted until
            # acknowledged, so the server is sure to see the token soon.
            endpoint.send_message(b"", now)
        elif packet.token != endpoint.token:
            self.ignored += 1
            return []
        endpoint.receive_packet(packet, now, len(datagram))
        return self._take_events()

    def handle_timer(self, now: float) -> list[Received]:
        if self._abandoned:
            return []
        if self.endpoint is not None:
            self.endpoint.handle_timer(now)
            return self._frames(self._take_events())
        hello = self._unanswered_hello
        if hello is not None and self._hello_retry_at is not None and now >= self._hello_retry_at:
            if self.trace:
                self.trace(f"no HI within {PLAIN_HELLO_RETRY:g} s: saying Hello again (plain mode)")
            self.send_frame(hello, now)  # sets the next retry time too
        return []

    def next_deadline(self) -> float | None:
        if self._abandoned:
            return None
        return self.endpoint.next_deadline() if self.endpoint is not None else self._hello_retry_at

    def _take_events(self) -> list[bytes | SessionReset | LinkFailed]:
        assert self.endpoint is not None
        out: list[bytes | SessionReset | LinkFailed] = []
        for event in self.endpoint.pop_events():
            if isinstance(event, MessageReceived):
                out.append(event.data)
            elif isinstance(event, MessageFailed) and not self._failed:
                self._failed = True
                out.append(LinkFailed(f"the server stopped answering: {event.reason}"))
            elif isinstance(event, MessageTooLarge) and not self._failed:
                self._failed = True
                out.append(LinkFailed(f"the server sent a message over {event.limit} bytes"))
        return out

    def _frames(self, messages: Sequence[bytes | SessionReset | LinkFailed]) -> list[Received]:
        """Messages decoded into frames; the session's own items pass through."""
        out: list[Received] = []
        for item in messages:
            if isinstance(item, bytes):
                out += self._decode(item)
            else:
                out.append(item)
        return out

    def _receive_plain(self, datagram: bytes) -> list[Received]:
        if is_reliable(datagram):
            self.ignored += 1
            return []
        self._decoder = Decoder(self.max_line, self.max_body)  # each plain datagram stands alone
        frames = self._decode(datagram)
        self._heard_from_server = self._heard_from_server or bool(frames)
        if any(isinstance(frame, Hi) or (isinstance(frame, Err) and frame.code != HELLO_FIRST) for frame in frames):
            # Hello was answered: HI, or an ERR refusing it. (Any other frame,
            # such as the PING that comes with HI, is no answer: HI may be lost.
            # Nor is 401 hello-first: it answers a frame sent before this Hello.)
            self.stop_hello_retry()
        return frames

    def _decode(self, data: bytes) -> list[Received]:
        self._decoder.feed(data)
        frames: list[Received] = []
        try:
            while (frame := self._decoder.next_frame()) is not None:
                frames.append(frame)
                if self._resets_owed and isinstance(frame, Hi):
                    self._resets_owed.clear()  # the name is ours again: whatever we abandoned is gone or harmless
        except ProtocolError as error:
            if self.endpoint is None:
                self.ignored += 1  # plain: one bad datagram, the next may be fine
            else:
                frames.append(LinkFailed(f"the server sent bad data: {error}"))
        return frames
