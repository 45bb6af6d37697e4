"""Every knob of the reliability layer, in one frozen dataclass.

Two presets:

- DEFAULT: TCP-like and polite to the network. RTO floor 50 ms: RFC 6298
  says 1 s and Linux uses 200 ms, floors chosen for slow timers and the
  Internet of their day; QUIC (RFC 9002) has no floor beyond the clock's
  granularity. Our RTO already adds 25 ms for the peer's ack delay, so 50 ms only
  matters on LAN-like paths, where a 200 ms floor would make every lost
  packet cost ten round trips. Exponential backoff x2, fast retransmit once a packet sent 3 after it is acknowledged, acks
  delayed up to 25 ms (or sent at once for every second packet), a NewReno
  congestion window that may shrink to 2 packets. A packet is sent again
  only when it is known (or timed out) to be lost.

- TURBO: for latency, in the spirit of KCP's "fast mode"
  (ikcp_nodelay(kcp, 1, 10, 2, 1)): RTO floor 30 ms (KCP's nodelay minimum),
  backoff x1.5 instead of x2, acks sent at once, and the congestion window
  never throttles below 64 packets (KCP's `nc` switch turns it off entirely).
  Loss detection is as eager as KCP's:
  * fast retransmit as soon as one packet sent later was acknowledged (the
    fastresend = 1 of KCP's own test.cpp);
  * KCP's "skips" (ikcp_parse_fastack): every ack that brings news of a later
    packet counts one skip for each packet still unacknowledged below it, and
    at 2 skips the packet goes again, even if it was retransmitted already.
    Without that, a lost *retransmission* is only noticed once a packet sent
    after it is acknowledged, a whole round trip later; in KCP's test the
    worst echoes are those whose retransmission was lost too. KCP resends
    on every second skip and ends up sending about 3x the loss-implied
    minimum; we wait at least half a smoothed RTT between two copies of a
    packet (`skip_resend_spacing`), which keeps it near 2x, also in a fast
    stream where skips arrive every few milliseconds.
  It recovers from loss much sooner, at the price of duplicate and spurious
  retransmissions and less restraint on a congested path: use it on links you
  own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Largest UDP payload that crosses the Internet without IP fragmentation with
# very high probability (QUIC's choice: IPv6 minimum MTU 1280 minus headers).
INTERNET_SAFE_PAYLOAD = 1200
LARGEST_UDP_PAYLOAD = 65507  # 65535 minus the IPv4 and UDP headers
MOST_FRAGMENTS = 0xFFFF  # a fragment's index and count are 16-bit


def smallest_max_datagram(max_message: int) -> int:
    """The smallest datagram that still carries a max_message in at most 65535 fragments."""
    from .packet import FRAGMENT_HEADER, MAX_HEADER

    data_per_fragment = -(-max_message // MOST_FRAGMENTS)  # rounded up
    return MAX_HEADER + FRAGMENT_HEADER + max(1, data_per_fragment)


@dataclass(frozen=True)
class ReliabilityConfig:
    # ---- retransmission timeout (RFC 6298)
    initial_rto: float = 1.0  # seconds, before the first RTT sample (RFC 6298 2.1)
    min_rto: float = 0.05  # floor; RFC 6298 2.4 says 1 s, Linux 200 ms, RFC 9002 none (see above)
    max_rto: float = 10.0  # cap for the backed-off RTO (RFC 6298 allows >= 60 s)
    backoff: float = 2.0  # RTO multiplier per timeout: 2 (RFC 6298) or 1.5 (KCP nodelay)
    clock_granularity: float = 0.001  # G in RFC 6298
    # ---- acknowledgements
    ack_delay: float = 0.025  # longest an ack waits to ride on data (RFC 9000 default 25 ms)
    ack_every: int = 2  # ...but ack at once after this many unacked data packets (RFC 1122)
    max_sack_ranges: int = 8  # selective-ack ranges per datagram
    ack_repeat_delay: float | None = 0.005  # send a new ack once more this much later (None: never)
    # ---- loss detection and retry budget
    fast_retransmit_threshold: int = 3  # a packet is lost once one sent this many transmissions after it is acked
    # KCP's skip rule (see above), off when None: a packet is sent again once this many acks
    # brought news of later-numbered packets since it last went out, retransmitted or not.
    # It catches lost retransmissions without waiting a round trip, at the price of copies
    # sent while the previous one is still on its way.
    resend_after_skips: int | None = None
    # ...but not sooner than this fraction of the smoothed RTT after the packet's previous
    # transmission: KCP has no such pause and, in a stream where acks arrive every few
    # milliseconds, resends a packet many times per round trip.
    skip_resend_spacing: float = 0.5
    max_retries: int = 12  # retransmissions of one packet before the peer is given up as unreachable
    # ---- windows
    send_window: int = 512  # packets sent and not yet acknowledged (flow control, also the receive buffer)
    # Bytes the receiver holds above a gap, waiting for it to fill (data, plus FRAGMENT_COST
    # per fragment); a packet that would pass it is dropped unacknowledged and comes again.
    # 512 datagrams of 1200 B fit with room to spare; 512 of 64 KB (a peer's --max-datagram
    # 65507) would be 33 MB.
    max_early_bytes: int = 4 * 1024 * 1024
    congestion_control: bool = True
    initial_cwnd: float = 10.0  # packets (RFC 9002 7.2 suggests ~10 datagrams)
    min_cwnd: float = 2.0  # the window never shrinks below this (packets)
    # ---- sizes
    max_datagram: int = INTERNET_SAFE_PAYLOAD  # bytes of UDP payload per datagram
    max_message: int = 1024 * 1024  # largest message the receiver reassembles
    # ---- idle
    keepalive_interval: float | None = 25.0  # send a keepalive after this long with nothing sent or received (NAT bindings)

    def __post_init__(self) -> None:
        smallest = smallest_max_datagram(self.max_message)
        if not smallest <= self.max_datagram <= LARGEST_UDP_PAYLOAD:
            # Smaller, and a message of max_message bytes would need more fragments than
            # the 16-bit count holds: send_message() could not take it.
            raise ValueError(f"max_datagram must be from {smallest} to {LARGEST_UDP_PAYLOAD}")
        if not self.backoff >= 1.0:
            raise ValueError("backoff must be at least 1")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.fast_retransmit_threshold < 1 or self.ack_every < 1 or self.send_window < 1 or self.max_early_bytes < 1:
            raise ValueError("fast_retransmit_threshold, ack_every, send_window and max_early_bytes must be >= 1")
        if self.resend_after_skips is not None and self.resend_after_skips < 1:
            raise ValueError("resend_after_skips must be None (off) or >= 1")
        if not self.skip_resend_spacing >= 0:
            raise ValueError("skip_resend_spacing must be >= 0")
        if self.max_retries < 0 or self.ack_delay < 0 or (self.ack_repeat_delay or 0) < 0:
            raise ValueError("max_retries and ack_delay must be >= 0")
        if not 1 <= self.min_cwnd <= self.initial_cwnd:
            raise ValueError("need 1 <= min_cwnd <= initial_cwnd")

    def with_changes(self, **changes) -> "ReliabilityConfig":
        return replace(self, **changes)


DEFAULT = ReliabilityConfig()

TURBO = ReliabilityConfig(
    initial_rto=0.2,
    min_rto=0.03,
    max_rto=2.0,
    backoff=1.5,
    ack_delay=0.0,
    ack_every=1,
    fast_retransmit_threshold=1,
    resend_after_skips=2,
    skip_resend_spacing=0.5,
    max_retries=30,
    initial_cwnd=64.0,
    min_cwnd=64.0,
)

PRESETS = {"default": DEFAULT, "turbo": TURBO}


def preset(name: str) -> ReliabilityConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
