"""One end of a reliable UDP conversation: the sender and the receiver.

Sans-I/O: the caller owns the socket and the clock.

    endpoint = ReliableEndpoint(config)
    message_id = endpoint.send_message(b"hello", now)
    for datagram in endpoint.datagrams_to_send(now): sock.sendto(datagram, peer)
    endpoint.receive_datagram(datagram_from_peer, now)
    events = endpoint.pop_events()   # MessageReceived / MessageDelivered / MessageFailed
    # and when time passes: at endpoint.next_deadline(), call handle_timer(now),
    # then send datagrams_to_send(now) again.

How it works, in TCP terms:
- Messages are cut into fragments; fragments are packed into numbered packets
  (1, 2, 3...). A packet is retransmitted under the same number until acked.
- The receiver acks cumulatively ("everything below N arrived") plus up to
  eight selective-ack ranges for what arrived above a gap. Acks ride on data
  packets, or go alone after `ack_delay`, at once after every `ack_every`
  packets, and at once when something arrives out of order or twice.
- The receiver buffers packets that arrive early and hands messages to the
  application strictly in order, each exactly once.
- The sender retransmits a packet when its timer (RTO, rtt.py) expires, or
  sooner, "fast retransmit", when a packet sent `fast_retransmit_threshold`
  transmissions after it has been acked (RFC 9002's packet threshold); with `resend_after_skips` (turbo) also when that
  many acks brought news of later packets since it last went out (KCP's
  skips). It keeps at most `send_window` packets unacked (the receiver's
  buffer) and at most the congestion window (congestion.py).
- A packet retransmitted `max_retries` times without an ack means the peer is
  unreachable: every message not yet acknowledged is reported MessageFailed
  and the endpoint stops (like a TCP connection timing out). A message is
  never dropped silently.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Union

from .config import DEFAULT, ReliabilityConfig
from .congestion import NewReno
from .packet import (
    FIXED_HEADER,
    FLAG_PING,
    FRAGMENT_HEADER,
    MAX_MESSAGE_ID,
    MAX_PACKET_NUMBER,
    MAX_SACK_RANGES,
    RANGE,
    Fragment,
    Packet,
    decode,
    encode_fields,
)
from .rtt import RttEstimator

# ------------------------------------------------------------------ events

# Values, though not frozen: a frozen dataclass takes about three times as long to
# build, and every message makes two of these (received on one side, delivered on
# the other). Nothing changes one after it is made (codec.py's frames, likewise).


@dataclass(slots=True)
class MessageReceived:
    """A whole message from the peer, in order, exactly once."""

    message_id: int
    data: bytes


@dataclass(slots=True)
class MessageDelivered:
    """The peer has acknowledged every fragment of one of our messages."""

    message_id: int


@dataclass(slots=True)
class MessageFailed:
    """We gave up on one of our messages: the peer did not acknowledge it."""

    message_id: int
    reason: str


@dataclass(slots=True)
class MessageTooLarge:
    """The peer sent a message over our max_message: it was dropped, not delivered.
    (What follows may depend on it, so the caller should end the session.)"""

    message_id: int
    limit: int


Event = Union[MessageReceived, MessageDelivered, MessageFailed, MessageTooLarge]


@dataclass
class EndpointStats:
    """Counters for the demo and the bench. `retransmitted` counts data packets sent again."""

    messages_sent: int = 0
    messages_delivered: int = 0
    messages_failed: int = 0
    messages_received: int = 0
    packets_sent: int = 0  # data packets, first transmission only
    retransmitted: int = 0  # data packet retransmissions (timeouts + fast)
    fast_retransmits: int = 0
    skip_resends: int = 0  # of the fast retransmits, those sent by KCP's skip rule (turbo)
    timeouts: int = 0  # retransmission timer expiries
    acks_sent: int = 0  # datagrams that carried only an ack
    keepalives_sent: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duplicates_dropped: int = 0  # data packets that had already arrived
    out_of_order_buffered: int = 0  # data packets that arrived before an earlier one
    beyond_window_dropped: int = 0  # data packets outside the receive buffer (max_early_bytes, send_window)
    fragments_discarded: int = 0  # fragments that broke the message order or size limit
    srtt: float | None = None
    rto: float = 0.0
    cwnd: float = 0.0


# What holding one fragment costs in memory besides its data (a tuple and a bytes object,
# about 120 bytes in CPython): without it, packets of empty fragments would count as nothing.
FRAGMENT_COST = 128


def _held_size(fragments: tuple[Fragment, ...]) -> int:
    """What a packet held above a gap counts against max_early_bytes."""
    return sum(len(fragment.data) for fragment in fragments) + FRAGMENT_COST * len(fragments)


@dataclass(slots=True)  # one per packet in flight: no per-instance dict
class _SentPacket:
    number: int
    fragments: tuple[Fragment, ...]
    last_sent: float
    serial: int  # transmission counter at the last (re)transmission; orders loss detection
    deadline: float
    retries: int = 0
    first_serial: int = 0  # transmission counter at the first transmission
    skips: int = 0  # acks that brought news of a later-numbered packet since the last transmission

    @property
    def proof_serial(self) -> int:
        """The latest transmission an ack of this packet proves was sent before the ack.

        For loss detection, an ack of a retransmitted packet only proves that its *first*
        copy was sent before the ack: it may be that copy that arrived. Counting it as the
        newer copy would make every packet sent in between look lost (a cascade of
        spurious fast retransmits).
        """
        return self.serial if self.retries == 0 else self.first_serial


class ReliableEndpoint:
    def __init__(
        self,
        config: ReliabilityConfig = DEFAULT,
        token: int = 0,
        now: float = 0.0,
        trace: Callable[[str], None] | None = None,
    ):
        self.config = config
        self.token = token  # carried in every datagram we send; the glue sets it
        # Called with a short sentence for every retransmission, duplicate and
        # out-of-order packet, for narration (the demo) and debugging.
        self.trace = trace
        self.rtt = RttEstimator(
            config.initial_rto,
            config.min_rto,
            config.max_rto,
            config.backoff,
            config.clock_granularity,
            peer_ack_delay=config.ack_delay,
        )
        self.cc = NewReno(config.initial_cwnd, config.min_cwnd, config.congestion_control)
        self._stats = EndpointStats()
        self._events: list[Event] = []
        self.failed: str | None = None  # why we gave up, once we have
        self.last_heard = now
        self._last_sent = now

        # ---- sender
        self._ranges_budget = min(config.max_sack_ranges, MAX_SACK_RANGES)
        header_budget = FIXED_HEADER + self._ranges_budget * RANGE.size
        self._body_budget = config.max_datagram - header_budget  # bytes for fragments per packet
        self._fragment_size = self._body_budget - FRAGMENT_HEADER
        self._next_message_id = 1
        self._next_packet = 1
        self._serial = 0
        self._largest_acked_serial = 0
        self._queue: deque[Fragment] = deque()  # fragments not yet in a packet
        self._queued_bytes = 0  # their data
        self._unacked: OrderedDict[int, _SentPacket] = OrderedDict()  # by packet number
        self._to_retransmit: OrderedDict[int, None] = OrderedDict()
        self._fragments_left: dict[int, int] = {}  # message id -> fragments not yet acked
        self._ping_due = False
        # The fast lane (receive_next_message) answers first and accounts for the ack
        # it took afterwards: the acked packet waits here, and packets sent meanwhile
        # wait for their retransmission timers, until the next call that needs them
        # (_settle). Every other entry point settles first, so none can tell.
        # (Timers are owed only while an ack waits, so that ack alone says "unsettled".)
        self._ack_to_account: tuple[_SentPacket, float, float] | None = None  # (packet, ack delay, when)
        self._timers_owed: list[_SentPacket] = []

        # ---- receiver
        self._expected = 1  # next packet number to hand on; our cumulative ack
        self._early: dict[int, tuple[Fragment, ...]] = {}  # arrived above a gap
        self._early_bytes = 0  # what they count (_held_size), bounded by config.max_early_bytes
        self._largest_received = 0
        self._largest_received_at = now
        self._unacked_received = 0  # data packets received since we last sent an ack
        self._ack_deadline: float | None = None
        self._ack_now = False
        self._partial: list[Fragment] = []  # fragments of the message being reassembled
        self._partial_size = 0

    # ------------------------------------------------------------ application side

    def send_message(self, data: bytes, now: float) -> int:
        """Queue a message; returns its id (MessageDelivered/MessageFailed name it)."""
        if len(data) > self.config.max_message:
            # Refused before it takes an id or a place in the counters: it was counted as
            # sent and then never delivered nor failed.
            raise ValueError(f"a message of {len(data)} bytes is larger than max_message ({self.config.max_message})")
        message_id = self._next_message_id
        # The wire holds 32 bits and 0 is not used: after 0xFFFFFFFF comes 1 (it crashed
        # the encoder before). Only messages not yet acknowledged must have distinct ids.
        self._next_message_id = message_id + 1 if message_id < MAX_MESSAGE_ID else 1
        self._stats.messages_sent += 1
        if self.failed:
            self._fail_message(message_id, self.failed)
            return message_id
        size = self._fragment_size
        if len(data) <= size:
            # Most chat frames fit in one fragment: skip the slicing (this runs per message).
            self._queue.append(Fragment(message_id, 0, 1, data))
            pieces = 1
        else:
            # At most 65535 of them: ReliabilityConfig keeps max_datagram large enough.
            chunks = [data[start : start + size] for start in range(0, len(data), size)]
            for index, piece in enumerate(chunks):
                self._queue.append(Fragment(message_id, index, len(chunks), piece))
            pieces = len(chunks)
        self._queued_bytes += len(data)
        self._fragments_left[message_id] = pieces
        return message_id

    def pop_events(self) -> list[Event]:
        if self._ack_to_account is not None:
            self._settle()
        events, self._events = self._events, []
        return events

    @property
    def stats(self) -> EndpointStats:
        if self._ack_to_account is not None:
            self._settle()
        self._stats.srtt = self.rtt.srtt
        self._stats.rto = self.rtt.rto
        self._stats.cwnd = self.cc.cwnd
        return self._stats

    @property
    def unacknowledged(self) -> int:
        """Messages sent or queued and not yet acknowledged by the peer."""
        if self._ack_to_account is not None:
            self._settle()
        return len(self._fragments_left)

    @property
    def queued_bytes(self) -> int:
        """Message bytes waiting for room in the windows: they grow while the peer acknowledges nothing."""
        return self._queued_bytes

    @property
    def largest_received(self) -> int:
        """The highest packet number that has arrived from the peer (0: none yet)."""
        return self._largest_received

    # ------------------------------------------------------------ network side

    def receive_datagram(self, datagram: bytes, now: float) -> Packet:
        """Take one datagram from the peer. Malformed ones raise PacketError and change nothing."""
        packet = decode(datagram)
        self.receive_packet(packet, now, len(datagram))
        return packet

    def acknowledge_at_once(self) -> None:
        """Send the next ack without waiting for `ack_delay`: the server's answer to a new
        session's first datagram carries the token the client needs before it can go on."""
        self._ack_now = True

    def receive_packet(self, packet: Packet, now: float, size: int = 0) -> None:
        """Like receive_datagram, for a packet the glue has already decoded (and checked)."""
        if self._ack_to_account is not None:
            self._settle()
        if self.failed:
            return
        self.last_heard = now
        self._stats.datagrams_received += 1
        self._stats.bytes_received += size
        if self._take_predicted(packet, now):
            return
        self._take_ack(packet, now)
        if packet.number:
            self._take_data(packet, now)
        elif packet.is_ping:
            self._ack_now = True  # a keepalive: answer so the peer hears from us

    def receive_next_message(self, number: int, cumulative_ack: int, ack_delay: float, data: bytes, now: float, size: int = 0) -> bool:
        """The fast lane: header prediction on a datagram's fields, before anything is
        built from them (packet.unpack_common_shape reads them).

        True if packet `number` is the next one in order, carries `data` as one whole
        message and acknowledges at most the one packet we have in flight. Then it is
        taken: `data` is the caller's to deliver, and no MessageReceived is queued for
        it. What its ack tells us (an RTT sample, a larger congestion window, a
        MessageDelivered) is accounted for at the next call into the endpoint: a server
        sends its answer, a client its next message, before that work is done.
        False, with nothing changed, for any other packet: decode it and call
        receive_packet(). `size` is the datagram's length, for the byte counter.
        """
        if self._ack_to_account is not None:
            self._settle()
        if self.failed or not self._take_next(number, cumulative_ack, ack_delay, len(data), now):
            return False
        self.last_heard = now
        self._stats.datagrams_received += 1
        self._stats.bytes_received += size
        return True

    def _take_predicted(self, packet: Packet, now: float) -> bool:
        """Header prediction (Van Jacobson's, in TCP since 1988) for a decoded packet:
        see _take_next. Any other packet returns False, nothing changed, and takes the
        general path. (tests/test_reliable_prediction.py holds both paths to the same
        datagrams, events and counters.)
        """
        fragments = packet.fragments
        if packet.ranges or len(fragments) != 1 or fragments[0].count != 1:
            return False  # the peer has a gap to report, or the message is in pieces
        fragment = fragments[0]
        if not self._take_next(packet.number, packet.cumulative_ack, packet.ack_delay, len(fragment.data), now):
            return False
        # Accounted for at once on this path, so the events come in the general path's order.
        self._settle()
        self._events.append(MessageReceived(fragment.message_id, fragment.data))
        return True

    def _take_next(self, number: int, cumulative_ack: int, ack_delay: float, size: int, now: float) -> bool:
        """Most packets of a conversation are the next one in order, carry one whole
        message and acknowledge at most the one packet we have in flight, as every
        packet of a ping-pong does. A few comparisons recognise such a packet (the
        caller has checked that it is one whole message of `size` bytes); then a few
        lines do what _take_ack and _take_data would, except the ack's accounting,
        which waits in _ack_to_account (see _settle).
        """
        if number != self._expected or self._early or self._partial or self._to_retransmit or size > self.config.max_message:
            return False  # out of order, a gap on either side, a message half built, a loss being repaired
        if number == MAX_PACKET_NUMBER:
            return False  # never sent by us; _take_data drops it (our ack of it would not fit)
        unacked = self._unacked
        if unacked:
            if len(unacked) != 1 or cumulative_ack != self._next_packet:
                return False
            acked, sent = unacked.popitem()
            if acked + 1 != cumulative_ack:
                # A later packet was acknowledged before (selectively): the ack's largest
                # is not new, so no RTT sample (see _take_ack). The general path knows.
                unacked[acked] = sent
                return False
            self._ack_to_account = (sent, ack_delay, now)
        # (Nothing in flight: the ack has nothing to tell us, as in _take_ack.)
        self._largest_received, self._largest_received_at = number, now
        self._expected += 1
        self._stats.messages_received += 1
        self._schedule_ack(now)
        return True

    def _settle(self) -> None:
        """The accounting the fast lane left for later: the ack it took (the packet
        it freed, the RTT sample), then the retransmission timers of packets sent
        since, which depend on that sample."""
        if self._ack_to_account is not None:
            sent, ack_delay, when = self._ack_to_account
            self._ack_to_account = None
            self._acknowledged(sent)
            self._learn_from_ack(sent, sent.proof_serial, ack_delay, when)
        for sent in self._timers_owed:
            sent.deadline = sent.last_sent + self._timeout_for(sent.retries)
        self._timers_owed.clear()

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now: retransmissions, new data the windows allow, acks, a keepalive."""
        if self.failed:
            return []
        out: list[bytes] = []
        if self._to_retransmit:
            for number in self._to_retransmit:
                out.append(self._retransmit(self._unacked[number], now))
            self._to_retransmit.clear()
        while self._queue:
            if not self._may_send_new():
                if self._ack_to_account is None:
                    if not self._unacked and self._next_packet >= MAX_PACKET_NUMBER:
                        # Every number used up and acknowledged: what is queued can never
                        # go. Report it (MessageFailed) rather than hold it forever.
                        self._fail("packet numbers exhausted")
                        return out
                    break
                self._settle()  # the ack not yet accounted for may have opened the window
                continue
            out.append(self._send_new_packet(now))
        if self._ack_now or (self._ack_deadline is not None and now >= self._ack_deadline):
            out.append(self._encode(0, (), now))
            self._stats.acks_sent += 1
        elif self._ping_due and not out:
            out.append(self._encode(0, (), now, FLAG_PING))
            self._stats.keepalives_sent += 1
        self._ping_due = False
        if out:
            self._last_sent = now
            self._stats.datagrams_sent += len(out)
            self._stats.bytes_sent += sum(map(len, out))
        return out

    def next_deadline(self) -> float | None:
        """When handle_timer() (or datagrams_to_send()) next has work; None if never."""
        if self._ack_to_account is not None:
            self._settle()
        if self.failed:
            return None
        # The earliest of: every packet's retransmission timer (retransmissions
        # leave them out of number order, so all are looked at), the delayed ack,
        # and, with nothing in flight, the keepalive. Asked after every datagram.
        soonest = self._ack_deadline
        if self._unacked:
            for packet in self._unacked.values():
                if soonest is None or packet.deadline < soonest:
                    soonest = packet.deadline
        elif self.config.keepalive_interval is not None:
            keepalive = self._keepalive_due()
            if soonest is None or keepalive < soonest:
                soonest = keepalive
        return soonest

    def handle_timer(self, now: float) -> None:
        """Time has passed: find packets whose retransmission timer expired, keepalives due."""
        if self._ack_to_account is not None:
            self._settle()
        if self.failed:
            return
        expired = [p for p in self._unacked.values() if p.deadline <= now and p.number not in self._to_retransmit]
        if expired:
            if max(p.retries for p in expired) >= self.config.max_retries:
                self._fail(f"no acknowledgement after {self.config.max_retries} retransmissions")
                return
            self._stats.timeouts += 1
            oldest = min(expired, key=lambda p: p.serial)
            if not self.cc.in_recovery(oldest.serial):
                self.cc.on_timeout(self._serial)
            for packet in expired:
                self._to_retransmit[packet.number] = None
                self._say(f"timeout: packet #{packet.number} unacked after {now - packet.last_sent:.3f} s, retransmitting")
            # Back off (RFC 6298 5.5); the level is the retry count the retransmission will have.
            self.rtt.on_timeout(max(p.retries for p in expired) + 1)
        interval = self.config.keepalive_interval
        # Compare against the same sum next_deadline() returned: `now - last >= interval`
        # can be False at that very instant through floating-point rounding.
        if interval is not None and not self._unacked and now >= self._keepalive_due():
            self._ping_due = True

    def _keepalive_due(self) -> float:
        # Only a silence in both directions needs a keepalive: whichever side
        # notices first pings, the other's answer resets both clocks, so a quiet
        # conversation costs one round trip per interval, not one per side.
        assert self.config.keepalive_interval is not None
        return max(self._last_sent, self.last_heard) + self.config.keepalive_interval

    # ------------------------------------------------------------ sender internals

    def _may_send_new(self) -> bool:
        if not self._unacked:
            # Nothing in flight (a ping-pong's every message): both windows hold at least one packet.
            # (The largest number is never used: its cumulative ack, MAX + 1, would not fit.)
            return self._next_packet < MAX_PACKET_NUMBER
        lowest = next(iter(self._unacked))
        return (
            len(self._unacked) < self.cc.window
            and self._next_packet < lowest + self.config.send_window
            and self._next_packet < MAX_PACKET_NUMBER
        )

    def _send_new_packet(self, now: float) -> bytes:
        fragments: list[Fragment] = []
        room = self._body_budget
        if len(self._queue) == 1:
            lone = self._queue.popleft()  # a lone fragment always fits (see _fragment_size)
            fragments.append(lone)
            self._queued_bytes -= len(lone.data)
        while self._queue and len(fragments) < 255:
            size = FRAGMENT_HEADER + len(self._queue[0].data)
            if size > room:
                break
            fragment = self._queue.popleft()
            fragments.append(fragment)
            room -= size
            self._queued_bytes -= len(fragment.data)
        number = self._next_packet
        self._next_packet += 1
        self._serial += 1
        packet = _SentPacket(number, tuple(fragments), now, self._serial, 0.0, first_serial=self._serial)
        if self._ack_to_account is not None:
            self._timers_owed.append(packet)  # its timeout depends on the RTT sample not yet taken
        else:
            packet.deadline = now + self._timeout_for(retries=0)
        self._unacked[number] = packet
        self._stats.packets_sent += 1
        return self._encode(number, packet.fragments, now)

    def _retransmit(self, packet: _SentPacket, now: float) -> bytes:
        """The same packet, under the same number, with fresh acks and a backed-off timer."""
        packet.retries += 1
        self._stats.retransmitted += 1
        self._serial += 1
        packet.serial = self._serial
        packet.last_sent = now
        packet.skips = 0  # KCP resets its fastack counter on every transmission too
        packet.deadline = now + self._timeout_for(packet.retries)
        return self._encode(packet.number, packet.fragments, now)

    def _timeout_for(self, retries: int) -> float:
        """The retransmission timeout of a packet sent now that was already sent `retries` times."""
        # Karn's rule, second half: keep the backed-off timeout for every packet
        # until a fresh RTT sample; and a packet's own retries back it off further.
        rtt = self.rtt
        level = max(retries, rtt.backoffs)
        if level == 0:
            return rtt.base_rto  # the usual case: no backoff (base_rto is already capped)
        return min(rtt.base_rto * rtt.backoff_factor ** min(level, 64), rtt.max_rto)

    def _take_ack(self, packet: Packet, now: float) -> None:
        # Ignore acknowledgements of packets we never sent (a confused or hostile peer).
        unacked = self._unacked
        if not unacked:
            return  # nothing in flight: nothing to acknowledge
        cumulative = min(packet.cumulative_ack, self._next_packet)
        newly: list[_SentPacket] = []
        while unacked:
            number = next(iter(unacked))
            if number >= cumulative:
                break
            newly.append(unacked.pop(number))
        for first, last in packet.ranges:
            if last - first + 1 <= len(unacked):
                numbers = [n for n in range(first, last + 1) if n in unacked]
            else:
                numbers = [n for n in unacked if first <= n <= last]
            newly.extend(unacked.pop(n) for n in numbers)
        if not newly:
            return
        # One pass over the newly acknowledged packets does the bookkeeping and
        # finds the three figures used below (instead of one max() scan each).
        latest = newly[0]  # the most recently sent one
        proven = 0  # the largest serial it proves was sent before this ack
        newest = 0  # the largest packet number
        for sent in newly:
            if sent.serial > latest.serial:
                latest = sent
            if sent.proof_serial > proven:
                proven = sent.proof_serial
            if sent.number > newest:
                newest = sent.number
            self._acknowledged(sent)
        if latest.number == (packet.ranges[0][1] if packet.ranges else packet.cumulative_ack - 1):
            self._learn_from_ack(latest, proven, packet.ack_delay, now)
        elif proven > self._largest_acked_serial:
            # The ack's largest packet was acknowledged before: no RTT sample (RFC 9002 5.1).
            # The ack delay the peer reports is how long it held that largest packet's ack;
            # subtracted from a sample of another packet (one that arrived late, reordered),
            # it made the sample too small.
            self._largest_acked_serial = proven
        if unacked:  # (with nothing left in flight, nothing can be lost or skipped)
            self._detect_losses()
            if self.config.resend_after_skips is not None:
                self._resend_skipped(newest, now)

    def _learn_from_ack(self, latest: _SentPacket, proven: int, ack_delay: float, now: float) -> None:
        """What an ack tells beyond the packets it frees. `latest`: the most recently sent
        packet it covers; `proven`: the largest proof_serial among them."""
        # An RTT sample, if `latest` was never retransmitted (Karn's rule: otherwise we
        # cannot tell which copy arrived).
        if latest.retries == 0:
            self.rtt.on_sample(now - latest.last_sent, ack_delay)
        if proven > self._largest_acked_serial:
            self._largest_acked_serial = proven

    def _acknowledged(self, sent: _SentPacket) -> None:
        """The peer has packet `sent`: grow the window, report the messages it completes."""
        self._to_retransmit.pop(sent.number, None)
        self.cc.on_ack(sent.serial)
        for fragment in sent.fragments:
            left = self._fragments_left.get(fragment.message_id)
            if left is None:
                continue
            if left == 1:
                del self._fragments_left[fragment.message_id]
                self._stats.messages_delivered += 1
                self._events.append(MessageDelivered(fragment.message_id))
            else:
                self._fragments_left[fragment.message_id] = left - 1

    def _detect_losses(self) -> None:
        """Fast retransmit: a packet is lost once one sent `threshold` transmissions after it was acked."""
        threshold = self.config.fast_retransmit_threshold
        for sent in self._unacked.values():
            if sent.serial + threshold > self._largest_acked_serial:
                if sent.retries == 0:
                    # Packets are numbered in the order they were first sent, and a
                    # retransmission is sent later still: every packet after this one
                    # has a larger serial and cannot pass this test either. Stopping
                    # here keeps an ack from scanning the whole send window.
                    break
                continue
            if sent.number in self._to_retransmit:
                continue
            self._to_retransmit[sent.number] = None
            self._stats.fast_retransmits += 1
            self.cc.on_loss(sent.serial, self._serial)
            self._say(f"gap: packet #{sent.number} missing while later ones were acked; fast retransmit")

    def _resend_skipped(self, newest_acked: int, now: float) -> None:
        """KCP's skip rule (ikcp_parse_fastack): this ack brought news of packet
        `newest_acked`, so every packet below it still unacknowledged was skipped
        once more; at `resend_after_skips` skips it is sent again.

        Unlike the rule in _detect_losses, this also fires for a packet that was
        already retransmitted, without proof that the retransmission was lost:
        proof takes a round trip (an ack of a packet sent after it), while skips
        keep coming with every ack. Counted once per datagram, like KCP, and in
        packet numbers, not transmissions. `skip_resend_spacing` keeps at least
        that fraction of the smoothed RTT between two copies of a packet.
        """
        wanted = self.config.resend_after_skips
        assert wanted is not None
        srtt = self.rtt.srtt if self.rtt.srtt is not None else self.rtt.initial_rto
        spacing = self.config.skip_resend_spacing * srtt
        for sent in self._unacked.values():
            if sent.number >= newest_acked:
                break  # ordered by number: nothing further on was skipped
            sent.skips += 1
            if sent.skips < wanted or now - sent.last_sent < spacing or sent.number in self._to_retransmit:
                continue
            self._to_retransmit[sent.number] = None
            self._stats.fast_retransmits += 1
            self._stats.skip_resends += 1
            self.cc.on_loss(sent.serial, self._serial)
            self._say(f"skipped: packet #{sent.number} passed by {sent.skips} acks of later packets; sending it again")

    def _fail(self, reason: str) -> None:
        self.failed = reason
        self._say(f"giving up: {reason}")
        for message_id in list(self._fragments_left):
            self._fail_message(message_id, reason)
        self._fragments_left.clear()
        self._unacked.clear()
        self._to_retransmit.clear()
        self._queue.clear()
        self._queued_bytes = 0

    def _fail_message(self, message_id: int, reason: str) -> None:
        self._stats.messages_failed += 1
        self._events.append(MessageFailed(message_id, reason))

    # ------------------------------------------------------------ receiver internals

    def _take_data(self, packet: Packet, now: float) -> None:
        number = packet.number
        if number < self._expected or number in self._early:
            self._stats.duplicates_dropped += 1
            self._ack_now = True  # our ack was probably lost: repeat it at once
            self._say(f"duplicate: packet #{number} already received, dropped")
            return
        if number >= self._expected + self.config.send_window or number == MAX_PACKET_NUMBER:
            # The peer broke the window; it will send it again. The largest number is never
            # sent: a cumulative ack of it (MAX + 1) would not fit in 32 bits, and taking
            # it made every later datagram of ours raise struct.error.
            self._stats.beyond_window_dropped += 1
            return
        held_size = 0  # counted only for a packet that waits above the gap
        if number != self._expected:
            held_size = _held_size(packet.fragments)
            if self._early_bytes + held_size > self.config.max_early_bytes:
                # What waits above the gap has a limit in bytes too: a peer sending 64 KB
                # datagrams would otherwise make us hold 512 of them (33 MB) per session. Not
                # acknowledged, so the sender sends it again, after the gap has filled.
                self._stats.beyond_window_dropped += 1
                return
        if number > self._largest_received:
            self._largest_received, self._largest_received_at = number, now
        filled_gap = bool(self._early)
        if number != self._expected:
            self._stats.out_of_order_buffered += 1
            self._ack_now = True  # a gap: tell the sender at once (RFC 5681 4.2)
            self._say(f"out of order: packet #{number} buffered, waiting for #{self._expected}")
            self._early[number] = packet.fragments
            self._early_bytes += held_size
        else:
            self._reassemble(packet.fragments)
            self._expected += 1
            while self._expected in self._early:
                fragments = self._early.pop(self._expected)
                self._early_bytes -= _held_size(fragments)
                self._reassemble(fragments)
                self._expected += 1
        if filled_gap:
            self._ack_now = True
        self._schedule_ack(now)

    def _schedule_ack(self, now: float) -> None:
        """One more data packet to acknowledge: at once after `ack_every`, else within `ack_delay`."""
        self._unacked_received += 1
        if self._unacked_received >= self.config.ack_every:
            self._ack_now = True
        elif self._ack_deadline is None:
            self._ack_deadline = now + self.config.ack_delay

    def _reassemble(self, fragments: tuple[Fragment, ...]) -> None:
        for fragment in fragments:
            if fragment.count == 1 and fragment.index == 0 and not self._partial and len(fragment.data) <= self.config.max_message:
                # A whole message in one fragment (most chat frames), nothing half-built:
                # the general path below would append it, join it and reset.
                self._stats.messages_received += 1
                self._events.append(MessageReceived(fragment.message_id, fragment.data))
                continue
            if fragment.index == 0:
                if self._partial:
                    self._stats.fragments_discarded += len(self._partial)
                self._partial, self._partial_size = [], 0
            elif not self._partial or fragment.message_id != self._partial[0].message_id or fragment.index != len(self._partial):
                self._stats.fragments_discarded += 1
                continue
            self._partial.append(fragment)
            self._partial_size += len(fragment.data)
            if self._partial_size > self.config.max_message:
                self._stats.fragments_discarded += len(self._partial)
                self._partial, self._partial_size = [], 0
                self._events.append(MessageTooLarge(fragment.message_id, self.config.max_message))
                continue
            if fragment.index == fragment.count - 1:
                data = b"".join(piece.data for piece in self._partial)
                self._partial, self._partial_size = [], 0
                self._stats.messages_received += 1
                self._events.append(MessageReceived(fragment.message_id, data))

    def _ack_ranges(self) -> tuple[tuple[int, int], ...]:
        """Runs of packets received above the gap, newest first, as many as fit."""
        if not self._early:
            return ()
        ranges: list[tuple[int, int]] = []
        numbers = sorted(self._early, reverse=True)
        last = first = numbers[0]
        for number in numbers[1:]:
            if number == first - 1:
                first = number
                continue
            ranges.append((first, last))
            if len(ranges) == self._ranges_budget:
                return tuple(ranges)
            first = last = number
        ranges.append((first, last))
        return tuple(ranges[: self._ranges_budget])

    def _encode(self, number: int, fragments: tuple[Fragment, ...], now: float, flags: int = 0) -> bytes:
        # Every datagram carries our latest ack, so it is no longer owed...
        self._ack_now = False
        self._ack_deadline = None
        if self._unacked_received and self.config.ack_repeat_delay is not None:
            # ...but an ack is never retransmitted: if this datagram, the only one
            # saying "it arrived", is lost, the peer sends the data again after its
            # RTO. One more copy shortly after (unless another datagram repeats the
            # ack first) makes that p^2 instead of p, for a few bytes.
            self._ack_deadline = now + self.config.ack_repeat_delay
        self._unacked_received = 0
        # The time since the newest packet we acknowledge arrived; with nothing received yet
        # there is nothing to hold, and the field says 0 (not the time since we were created).
        ack_delay = now - self._largest_received_at if self._largest_received else 0.0
        ranges = self._ack_ranges() if self._early else ()
        return encode_fields(self.token, number, self._expected, ack_delay, ranges, fragments, flags)

    def _say(self, text: str) -> None:
        if self.trace is not None:
            self.trace(text)

