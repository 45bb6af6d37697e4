"""The relay over datagrams: sessions, tokens, address checks, and reliability.

TCP hands the relay one connection per client, already verified by its
three-way handshake, with a reliable ordered byte stream. UDP hands us loose
datagrams from addresses that may be spoofed. This object builds what the relay
needs on top of them, sans-I/O like the rest of hellohi: the glue (udp/server.py)
passes in each datagram with its source address and the time, and sends what
`outgoing()` returns.

Two kinds of datagram share one port; byte 0 tells them apart:

- RELIABLE (byte 0 is 0xB1, hellohi.reliable.packet): a session with a token.
  The first datagrams from a client carry token 0 and are padded to a full
  datagram; the server answers with a fresh random 64-bit token in every
  datagram. A datagram with a known token belongs to that session whatever
  address it comes from, so a client whose NAT mapping changes keeps its
  session, and someone who can only spoof addresses (and never sees our
  answers) cannot guess a token to take one over. But the client who owns a
  token can spoof its source: a session that moves is unproven at its new
  address until the client answers a CHALLENGE we send there with a RESPONSE
  carrying its secret (QUIC's path validation, RFC 9000 section 8.2), or the
  server could be made to pour a backlog onto a victim's address.
- PLAIN (printable text): raw hellohi frames, one datagram holding whole
  frames, no acks, no retransmission. Fire and forget, to show what UDP alone
  loses. A session is just the source address.

No amplification: until an address has proved it receives what we send to it,
we send it no more bytes than it sent us (RFC 9000 section 8 uses 3x; we use
1x, configurable). A reliable address is proved when a datagram carrying the
token we issued comes from it the first time, and after a move when the RESPONSE
to our CHALLENGE does; a plain one when it answers our `PING <secret>` with
`PONG <secret>`. Clients pad their first datagrams so that the answers to an
address not yet proven fit: a reliable session's ack with the token (or an ERR 503),
a plain session's HI and PING.

Nothing a reliable session says reaches the relay before its address is proven
the first time: until then its messages wait here, and the server answers only
with an ack (at once, as it carries the token). Otherwise anyone could forge a
first datagram "from" any address saying `HELLO alice` and `ACK <id>`: alice's
name taken from an address that never answers, and her messages acknowledged,
removed from the store, by someone who never received them. It is TCP's rule
too: accept() returns, and the server reads the first byte, only after the
handshake has proved the client's address. Until the client has the token it
sends only its first packet, so a later token-0 packet "from" its address is
forged, and dropped: else it would be heard as that client's after the proof.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .codec import Decoder, Frame, Hi, Ping, Pong, encode
from .errors import ErrorCode, ProtocolError
from .reliable import ReliabilityConfig, ReliableEndpoint
from .reliable.endpoint import MessageFailed, MessageReceived, MessageTooLarge
from .reliable.packet import (
    ACK_DELAY_UNIT,
    FLAG_CHALLENGE,
    FLAG_RESPONSE,
    PacketError,
    challenge_packet,
    decode,
    is_reliable,
    packet_number,
    reset_packet,
    unpack_common_shape,
)
from .relay import DEFAULT_MAX_OUTBOUND, Disconnect, Notice, Relay, Transmit, format_peer

Address = tuple  # (host, port) or (host, port, flowinfo, scope) for IPv6

# The largest UDP payload over IPv4 (65,535 - 8 UDP header - 20 IP header bytes):
# a plain datagram never grows past it.
MAX_UDP_PAYLOAD = 65507

# At most one "ignored a malformed datagram" line per this many seconds: anyone can send
# garbage to a UDP port as fast as they like, and a line each would fill the server's log
# (stats.malformed counts every one).
MALFORMED_LOG_INTERVAL = 1.0


@dataclass
class DatagramLimits:
    # Bytes we may send to an unverified address per byte received from it.
    amplification_factor: float = 1.0
    # Datagrams held back for an unverified address (beyond that they are dropped:
    # a reliable session sends them again; a plain one loses them, as plain UDP does).
    max_held_datagrams: int = 64
    # Bytes queued for a reliable session that acknowledges nothing, before ERR 507 drops it.
    max_outbound: int = DEFAULT_MAX_OUTBOUND


@dataclass
class _Session:
    connection: int  # the relay's connection id
    address: Address
    decoder: Decoder
    token: int = 0  # reliable sessions only
    endpoint: ReliableEndpoint | None = None  # None: a plain session
    secret: str = ""  # plain sessions: the PING token that proves the address
    challenge: bytes = b""  # a reliable session that moved: the secret its RESPONSE must carry
    verified: bool = False
    received_bytes: int = 0  # from the address, while unverified
    sent_bytes: int = 0  # to the address, while unverified
    held: deque = field(default_factory=deque)  # datagrams waiting for more budget
    # What a reliable session said before its address was ever proven: the relay hears it
    # once the address is (see the module docstring).
    unheard: bytearray = field(default_factory=bytearray)
    # The endpoint's next_deadline() as of our last call into it. Only our calls
    # change an endpoint, and every call is followed by _drain, after which this is
    # refreshed; so next_deadline() and on_timer() need not ask every endpoint again.
    deadline: float | None = None

    @property
    def plain(self) -> bool:
        return self.endpoint is None


@dataclass
class DatagramStats:
    datagrams_received: int = 0
    malformed: int = 0  # not a hellohi datagram at all: ignored
    unknown_token: int = 0  # answered with RESET
    spoofed: int = 0  # a known token with stale data from another address: ignored
    rebinds: int = 0  # a session moved to a new address
    amplification_held: int = 0  # datagrams delayed by the no-amplification rule
    amplification_dropped: int = 0


class DatagramRelay:
    def __init__(
        self,
        relay: Relay,
        config: ReliabilityConfig,
        new_token: Callable[[], int],
        limits: DatagramLimits | None = None,
        max_line: int = 1024,
        max_body: int = 64 * 1024,
        trace: Callable[[str], None] | None = None,
    ):
        self.relay = relay
        self.config = config
        # Where tokens come from: the glue passes secrets.randbits(64); tests pass a counter.
        self.new_token = new_token
        self.limits = limits or DatagramLimits()
        self.max_line, self.max_body = max_line, max_body
        self.trace = trace
        self.stats = DatagramStats()
        self._by_token: dict[int, _Session] = {}
        self._by_connection: dict[int, _Session] = {}
        # Sessions not yet verified, and plain sessions, are found by address.
        self._by_address: dict[Address, _Session] = {}
        # Sessions whose address was never proven, by connection, oldest first.
        self._never_proven: dict[int, _Session] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._touched: set[int] = set()
        # Never later than the soonest deadline of any session or of the relay; see next_deadline().
        self._soonest: float | None = None
        # Sessions drained since their deadline was last read: it is read when the glue
        # asks for next_deadline(), after it has sent the answers, not before.
        self._deadlines_to_read: dict[int, _Session] = {}
        self._malformed_said_at: float | None = None
        self._malformed_unsaid = 0  # ignored since that line, not logged one by one

    # ------------------------------------------------------------ events in

    def receive(self, datagram: bytes, address: Address, now: float) -> None:
        """One datagram arrived from `address`."""
        self.receive_many([(datagram, address)], now)

    def receive_many(self, datagrams: list[tuple[bytes, Address]], now: float) -> None:
        """Several datagrams arrived together (the glue read all the socket held).

        Handling them as one batch is what makes a busy server fast: the store
        is committed once for the whole batch, not once per datagram, and each
        session's replies (acks, MSGs) are packed into as few datagrams as they
        fit in. Nothing anyone hears about is sent before that one commit.
        """
        for datagram, address in datagrams:
            self.stats.datagrams_received += 1
            session = None
            if is_reliable(datagram):
                session = self._receive_reliable(datagram, address, now)
            elif datagram:
                session = self._receive_plain(datagram, address, now)
            if session is not None and session.connection in self._by_connection and not self.relay.is_connected(session.connection):
                # The relay closed this session (BYE, a fatal ERR, server full): carry that
                # out now, so that a later datagram of the batch from the same client meets
                # a closed session, exactly as it would have one datagram at a time.
                self._flush(now)
        self._flush(now)

    def on_timer(self, now: float) -> None:
        """Time passed: heartbeats and timeouts (relay), retransmissions and acks (endpoints)."""
        self._read_deadlines()
        self.relay.on_timer(now)
        for session in list(self._by_connection.values()):
            endpoint = session.endpoint
            if endpoint is None:
                continue
            deadline = session.deadline
            if deadline is not None and deadline <= now:
                timeouts = endpoint.stats.timeouts
                endpoint.handle_timer(now)
                if session.challenge and endpoint.stats.timeouts > timeouts:
                    # What it retransmits waits for the proof, and the CHALLENGE may have been
                    # lost with the client waiting in silence: send it again (budget allowing).
                    self._challenge(session)
                self._touched.add(session.connection)
                self._take_endpoint_events(session, now)
        self._flush(now)
        self._read_deadlines()
        self._soonest = self._exact_soonest()

    def shutdown(self) -> None:
        """The server is stopping: a RESET to every reliable session, the UDP stand-in for
        the FIN a TCP client gets when the server closes. Without it a client would learn
        only from silence, at its heartbeat timeout; with it the client reconnects (or,
        told not to, gives up) at once. A RESET lost on the way leaves silence as before.
        Plain sessions get nothing: plain UDP has no session to reset, as it has no acks."""
        for session in self._by_connection.values():
            if session.endpoint is not None:
                reset = reset_packet(session.token)
                # An address not yet proven gets no more than it sent us, even now:
                # its budget may be spent already (on acks), and then it gets nothing.
                if self._may_send(session, len(reset)):
                    self._emit(session, reset)

    def next_deadline(self) -> float | None:
        """When on_timer() should next be called: at the soonest deadline, or earlier.

        The glue asks after every batch of datagrams, so this must not cost a loop
        over every session: with a thousand clients that loop took 250 us a batch
        here. Instead we keep a bound that only moves earlier while datagrams come
        in: each session's new deadline (after each call into its endpoint) and each
        new connection's first heartbeat. Deadlines that move later (an ack that
        stops a retransmission timer, traffic that postpones a heartbeat) leave it
        early; then on_timer() finds nothing due, computes the exact soonest deadline
        again and the timer is set for that. One early call beats a loop per batch.
        """
        if self._deadlines_to_read:
            self._read_deadlines()
        return self._soonest

    def _read_deadlines(self) -> None:
        for connection, session in self._deadlines_to_read.items():
            if connection in self._by_connection:
                assert session.endpoint is not None
                session.deadline = session.endpoint.next_deadline()
                self._lower_soonest(session.deadline)
        self._deadlines_to_read.clear()

    def _lower_soonest(self, deadline: float | None) -> None:
        if deadline is not None and (self._soonest is None or deadline < self._soonest):
            self._soonest = deadline

    def _exact_soonest(self) -> float | None:
        # A loop over the sessions' remembered deadlines, without a call into each
        # endpoint (plain sessions have None).
        soonest = self.relay.next_deadline()
        for session in self._by_connection.values():
            deadline = session.deadline
            if deadline is not None and (soonest is None or deadline < soonest):
                soonest = deadline
        return soonest

    def outgoing(self) -> list[tuple[bytes, Address]]:
        """Datagrams to send now, with their destination."""
        out, self._outgoing = self._outgoing, []
        return out

    # ------------------------------------------------------------ queries

    def session_stats(self, name: str):
        """The reliability counters of the session registered as `name`, or None."""
        for session in self._by_connection.values():
            if session.endpoint is not None and self.relay.name_of(session.connection) == name:
                return session.endpoint.stats
        return None

    # ------------------------------------------------------------ reliable datagrams

    def _receive_reliable(self, datagram: bytes, address: Address, now: float) -> _Session | None:
        session = self._receive_next_message(datagram, address, now)
        if session is not None:
            return session
        try:
            packet = decode(datagram)
        except PacketError as error:
            self.stats.malformed += 1
            self._say_malformed(address, error, now)
            return None
        if packet.is_reset:
            self._take_reset(packet.token, address)
            return None  # never answer a RESET: two sides could answer each other for ever
        if packet.flags & (FLAG_CHALLENGE | FLAG_RESPONSE):
            return self._take_response(packet, address, len(datagram), now)
        if packet.token == 0:
            session = self._by_address.get(address)
            if session is None or session.plain or session.verified:
                session = self._new_reliable_session(address, now)
            elif packet.number > 1:
                # Until it has our token a client sends only its first packet (again, if our
                # answer was lost). A later one with token 0 is someone forging its address in
                # its first round trip, to be heard as that client once it proves the address.
                self.stats.spoofed += 1
                return None
        else:
            session = self._by_token.get(packet.token)
            if session is None:
                # A session we do not know (we restarted, or it timed out): tell the
                # client to start over. A 22-byte header is never more than we got, but
                # with an amplification factor under 1 it may be more than we may send.
                self.stats.unknown_token += 1
                reset = reset_packet(packet.token)
                if len(reset) <= len(datagram) * self.limits.amplification_factor:
                    self._outgoing.append((reset, address))
                return None
        assert session.endpoint is not None
        if address != session.address:
            if packet.token == 0 or packet.number <= session.endpoint.largest_received:
                # Old news from a new address: a replay or a spoof, not the client moving.
                self.stats.spoofed += 1
                return None
            self.stats.rebinds += 1
            self._say(f"session #{session.connection} moved from {format_peer(session.address)} to {format_peer(address)}")
            self._move(session, address)
        if packet.token == session.token and not session.verified and not session.challenge:
            # The client echoed the token it could only have learned from us, here.
            self._unlist(session)  # found by its token from now on
            self._proven(session, now)
        if not session.verified:
            session.received_bytes += len(datagram)
            if session.challenge:
                self._challenge(session)  # again: the last one may be lost
        session.endpoint.receive_packet(packet, now, len(datagram))
        if session.connection in self._never_proven:
            session.endpoint.acknowledge_at_once()  # it carries the token the client waits for
        self._touched.add(session.connection)
        self._take_endpoint_events(session, now)
        return session

    def _move(self, session: _Session, address: Address) -> None:
        """The session's datagrams now come from `address`: a NAT rebinding, or its owner
        spoofing a victim's address. Until the client proves it receives there, by answering
        the CHALLENGE sent there with its secret, the new address gets no more than it sends."""
        assert session.endpoint is not None
        self._unlist(session)
        session.address = address
        session.verified = False
        session.received_bytes = session.sent_bytes = 0
        session.held.clear()  # they were for the old address, and are retransmitted anyway
        session.challenge = self.new_token().to_bytes(8, "big")

    def _challenge(self, session: _Session) -> None:
        """Send the moved session's CHALLENGE, ahead of anything held for it, as far as the
        address's budget allows (each datagram from it allows another)."""
        challenge = challenge_packet(session.token, session.challenge)
        if challenge not in session.held:
            # Always, even when the held queue is full: without the CHALLENGE the address is
            # never proven, and held data trickles out at the client's pace until the session
            # times out. The newest held datagram makes room (it is retransmitted anyway).
            if session.held and len(session.held) >= self.limits.max_held_datagrams:
                session.held.pop()
                self.stats.amplification_dropped += 1
            if len(session.held) < self.limits.max_held_datagrams:
                session.held.appendleft(challenge)
            elif self._may_send(session, len(challenge)):  # nothing may be held at all
                self._emit(session, challenge)
        self._release_held(session)

    def _take_response(self, packet, address: Address, size: int, now: float) -> _Session | None:
        """A RESPONSE to the CHALLENGE of a session that moved: from the address we sent it
        to, with its secret, it proves the client receives there. Returns the session, as
        _receive_reliable does: a proof may let the relay hear a first HELLO that it refuses
        and closes, which receive_many() must carry out before the rest of the batch."""
        session = self._by_token.get(packet.token)
        if session is None or address != session.address or session.verified or not session.challenge:
            return None
        session.received_bytes += size
        if packet.flags & FLAG_RESPONSE and packet.secret == session.challenge:
            # A CHALLENGE still held would only be answered again, for nothing.
            challenge = challenge_packet(session.token, session.challenge)
            session.held = deque(d for d in session.held if d != challenge)
            session.challenge = b""
            self._say(f"session #{session.connection} proved its new address {format_peer(address)}")
            self._proven(session, now)
        self._touched.add(session.connection)  # what is held for it may go now
        return session

    def _proven(self, session: _Session, now: float) -> None:
        """The client showed that it receives what we send to session.address. The first time,
        the relay hears at last what it said so far."""
        session.verified = True
        if self._never_proven.pop(session.connection, None) is not None and session.unheard:
            unheard, session.unheard = bytes(session.unheard), bytearray()
            self._frames_in(session, unheard, now)

    def _take_reset(self, token: int, address: Address) -> None:
        """The client abandoned this session (it gave up on us, or is starting over): its
        name and client slot are free now, not at --timeout. Only from the session's own
        address: the token alone might have been overheard. Verified or not: a RESET that
        carries the token from the address we sent it to proves that address as any datagram
        with the token does, and a client whose connect timed out before its proof arrived
        (the proof lost, again and again) abandons the session with a RESET from an address
        the server has not yet seen the token come from."""
        session = self._by_token.get(token)
        if session is None or address != session.address:
            return
        self._say(f"session #{session.connection} reset by the client")
        self._close_silently(session)

    def _receive_next_message(self, datagram: bytes, address: Address, now: float) -> _Session | None:
        """The fast lane: a whole message in a verified session, from the session's own
        address, most likely the next one in order (the endpoint checks), taken without
        building a Packet. None, nothing changed, for anything else: _receive_reliable
        goes on the general way, which would do the same with this datagram."""
        fields = unpack_common_shape(datagram)
        if fields is None:
            return None
        flags, token, number, cumulative_ack, delay_units, _, _, count, data = fields
        session = self._by_token.get(token)
        if session is None or not session.verified or address != session.address or flags or count != 1:
            return None
        assert session.endpoint is not None
        if not session.endpoint.receive_next_message(number, cumulative_ack, delay_units * ACK_DELAY_UNIT, data, now, len(datagram)):
            return None
        self._touched.add(session.connection)
        self._frames_in(session, data, now)
        return session

    def _new_reliable_session(self, address: Address, now: float) -> _Session:
        token = self.new_token()
        while token == 0 or token in self._by_token:
            token = self.new_token()
        connection = self._connect(address, now)
        endpoint = ReliableEndpoint(self.config, token=token, now=now)
        session = _Session(connection, address, Decoder(self.max_line, self.max_body), token=token, endpoint=endpoint)
        self._by_token[token] = session
        self._by_connection[connection] = session
        self._by_address[address] = session
        self._never_proven[connection] = session
        self._say(f"new session #{connection} from {format_peer(address)}")
        return session

    def _connect(self, address: Address, now: float, window: int | None = None) -> int:
        """A new relay connection for `address`; its first heartbeat may be the soonest deadline.

        When the server is full, the oldest session whose address never proved it exists makes
        room, silently: otherwise anyone could fill --max-clients with one forged datagram per
        made-up address, and every real client would get ERR 503 until those timed out. TCP
        has no such slots to fill: accept() returns only after the handshake. A session proven
        once is never dropped for this, not even while it proves a new address (it has a name,
        and maybe messages in flight); a real client still in its first round trip may be,
        under a flood faster than one forged datagram per free slot per round trip, and starts
        over on the RESET that answers its next datagram. A plain session never proven may
        have a name (the relay hears a plain HELLO at once: `nc -u` cannot answer the PING);
        dropped, it loses nothing stored, and its next frame gets ERR 401."""
        if self.relay.is_full() and self._never_proven:
            oldest = next(iter(self._never_proven.values()))
            self._say(f"server full: dropped session #{oldest.connection} from {format_peer(oldest.address)}, which never proved that address")
            self._close_silently(oldest)
        connection = self.relay.connect(format_peer(address), now, window=window)
        self._lower_soonest(self.relay.deadline_of(connection))
        return connection

    def _take_endpoint_events(self, session: _Session, now: float) -> None:
        assert session.endpoint is not None
        for event in session.endpoint.pop_events():
            if isinstance(event, MessageReceived):
                if session.connection in self._never_proven:
                    self._keep_unheard(session, event.data)
                else:
                    self._frames_in(session, event.data, now)
            elif isinstance(event, MessageFailed) and session.connection in self._by_connection:
                # The client stopped acknowledging: it is gone, like a TCP connection
                # timing out. What we sent it stays in the store for its return.
                self._say(f"session #{session.connection}: {event.reason}")
                self._close_silently(session)
            elif isinstance(event, MessageTooLarge):
                # Dropped whole, and frames may span messages: nothing after it can be trusted.
                too_large = ProtocolError(ErrorCode.TOO_LARGE, f"a message over {event.limit} bytes", fatal=True)
                self.relay.reject(session.connection, too_large)

    def _keep_unheard(self, session: _Session, data: bytes) -> None:
        """Keep what a session says before its address is proven, up to one frame of the
        largest size: a client waits for HI before it says more than its HELLO. Past that it is
        someone forging datagrams from an address that never answers, and is dropped."""
        session.unheard += data
        if len(session.unheard) > self.max_line + self.max_body + 2:  # + the two LFs
            self._say(f"session #{session.connection}: too much said before proving its address {format_peer(session.address)}; dropped")
            self._close_silently(session)

    # ------------------------------------------------------------ plain datagrams

    def _receive_plain(self, datagram: bytes, address: Address, now: float) -> _Session:
        session = self._by_address.get(address)
        if session is None or not session.plain:
            # Fire and forget: nothing paces a plain client, as nothing paces plain UDP.
            # (A lost MSG or ACK would otherwise stay "in flight" for good and, once
            # there were a window's worth, stop all delivery to this client.)
            connection = self._connect(address, now, window=self.relay.limits.max_waiting_per_recipient)
            session = _Session(connection, address, Decoder(self.max_line, self.max_body))
            session.secret = f"{self.new_token():016x}"
            self._by_connection[connection] = session
            self._by_address[address] = session
            self._never_proven[connection] = session
            self._say(f"new plain session #{connection} from {format_peer(address)}")
        if not session.verified:
            session.received_bytes += len(datagram)
        # Each plain datagram stands alone: a frame never continues in the next one,
        # because the next one may never come.
        session.decoder = Decoder(self.max_line, self.max_body)
        self._frames_in(session, datagram, now)
        if session.decoder.mid_frame and session.connection in self._by_connection:
            self.relay.reject(session.connection, ProtocolError(ErrorCode.BAD_FRAME, "a plain datagram must hold whole frames"))
        self._touched.add(session.connection)
        return session

    # ------------------------------------------------------------ frames

    def _frames_in(self, session: _Session, data: bytes, now: float) -> None:
        session.decoder.feed(data)
        while session.connection in self._by_connection:
            try:
                frame = session.decoder.next_frame()
            except ProtocolError as error:
                self.relay.reject(session.connection, error)
                if error.fatal:
                    return
                continue
            if frame is None:
                return
            if session.plain and isinstance(frame, Pong) and frame.token == session.secret:
                self._proven(session, now)  # it answered the secret we sent to that address
            self.relay.receive(session.connection, frame, now)

    def _flush(self, now: float) -> None:
        """Commit the relay's store, turn its actions into datagrams, send what is allowed."""
        while actions := self.relay.flush():
            for action in actions:
                session = self._by_connection.get(action.connection)
                if isinstance(action, Transmit) and session is not None:
                    self._frame_out(session, action.frame, now)
                elif isinstance(action, Disconnect) and session is not None:
                    self._say(f"closing session #{session.connection} ({action.reason})")
                    self._drain(session, now)
                    self._forget(session)
                elif isinstance(action, Notice):
                    self._say(action.text)
        for connection in self._touched:
            session = self._by_connection.get(connection)
            if session is not None:
                self._drain(session, now)
        self._touched.clear()

    def _frame_out(self, session: _Session, frame: Frame, now: float) -> None:
        data = encode(frame)
        if session.endpoint is not None:
            session.endpoint.send_message(data, now)
            if session.endpoint.queued_bytes > self.limits.max_outbound:
                # It acknowledges nothing, yet may still send (PINGs, WHOs): what we owe it
                # would grow without end. As TCP drops a client that does not read. Its
                # ERR is queued behind the rest and most likely never arrives.
                error = ProtocolError(ErrorCode.SLOW_READER, f"more than {self.limits.max_outbound} bytes queued: it acknowledges nothing", fatal=True)
                self.relay.reject(session.connection, error)
        else:
            self._send(session, data)
            if not session.verified and isinstance(frame, Hi):
                self._send(session, encode(Ping(session.secret)))
        self._touched.add(session.connection)

    def _drain(self, session: _Session, now: float) -> None:
        if session.endpoint is not None:
            for datagram in session.endpoint.datagrams_to_send(now):
                self._send(session, datagram)
            self._deadlines_to_read[session.connection] = session
        self._release_held(session)

    def _release_held(self, session: _Session) -> None:
        """Send what is held for the session, in order, as far as its address's budget allows."""
        while session.held and self._may_send(session, len(session.held[0])):
            self._emit(session, session.held.popleft())

    def _send(self, session: _Session, datagram: bytes) -> None:
        if len(datagram) > MAX_UDP_PAYLOAD:
            self._say(f"session #{session.connection}: a {len(datagram)}-byte frame does not fit in one datagram; dropped")
            return
        if not session.held and self._may_send(session, len(datagram)):
            self._emit(session, datagram)
        else:
            self._hold(session, datagram)

    def _hold(self, session: _Session, datagram: bytes) -> None:
        """Keep `datagram` until the address's budget allows it. A retransmission takes the
        place of its packet's copy held earlier: it carries newer acks, and both would reach
        the client once the address is proven, the same packet twice."""
        number = packet_number(datagram)
        if number:
            for position, held in enumerate(session.held):
                if packet_number(held) == number:
                    session.held[position] = datagram
                    return
        if len(session.held) < self.limits.max_held_datagrams:
            self.stats.amplification_held += 1
            session.held.append(datagram)
        else:
            self.stats.amplification_dropped += 1

    def _may_send(self, session: _Session, size: int) -> bool:
        return session.verified or session.sent_bytes + size <= session.received_bytes * self.limits.amplification_factor

    def _emit(self, session: _Session, datagram: bytes) -> None:
        if not session.verified:
            session.sent_bytes += len(datagram)
        self._outgoing.append((datagram, session.address))

    def _close_silently(self, session: _Session) -> None:
        """End the session here and in the relay, sending nothing (its messages stay stored)."""
        self._forget(session)
        self.relay.disconnected(session.connection)

    def _forget(self, session: _Session) -> None:
        self._by_connection.pop(session.connection, None)
        self._by_token.pop(session.token, None)
        self._never_proven.pop(session.connection, None)
        self._unlist(session)

    def _unlist(self, session: _Session) -> None:
        """Stop finding `session` by its address. Only if the entry is its own: another
        session (a plain one, a new token-0 one) may have taken that address since."""
        if self._by_address.get(session.address) is session:
            del self._by_address[session.address]

    def _say_malformed(self, address: Address, error: PacketError, now: float) -> None:
        if self._malformed_said_at is not None and now < self._malformed_said_at + MALFORMED_LOG_INTERVAL:
            self._malformed_unsaid += 1
            return
        more = f" (and {self._malformed_unsaid} more since the last such line)" if self._malformed_unsaid else ""
        self._say(f"ignored a malformed datagram from {format_peer(address)}: {error}{more}")
        self._malformed_said_at, self._malformed_unsaid = now, 0

    def _say(self, text: str) -> None:
        if self.trace is not None:
            self.trace(text)
