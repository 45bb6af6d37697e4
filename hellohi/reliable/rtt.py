"""The retransmission timeout (RTO), computed as RFC 6298 says.

    first sample R:   SRTT = R,  RTTVAR = R/2
    later samples:    RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|
                      SRTT   = 7/8 SRTT   + 1/8 R
    RTO = SRTT + max(G, 4 RTTVAR), clamped to [min_rto, max_rto]

Karn's rule (RFC 6298 section 3): a packet that was retransmitted gives no RTT
sample, because we cannot tell which copy the ack answers. The caller enforces
the "no sample" half by never calling `on_sample` for such packets; this class
keeps the other half: after a timeout the RTO is multiplied by `backoff` and
stays backed off until a fresh sample arrives (RFC 6298 5.5 and 5.7).

One addition from RFC 9002 (QUIC): the peer may hold an ack back for up to
`peer_ack_delay` to piggyback it on data, so the timer allows for that too;
otherwise every delayed ack would look like a loss.
"""

from __future__ import annotations


class RttEstimator:
    def __init__(
        self,
        initial_rto: float = 1.0,
        min_rto: float = 0.2,
        max_rto: float = 60.0,
        backoff: float = 2.0,
        granularity: float = 0.001,
        peer_ack_delay: float = 0.0,
    ):
        self.initial_rto = initial_rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.backoff_factor = backoff
        self.granularity = granularity
        self.peer_ack_delay = peer_ack_delay
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.min_rtt: float | None = None
        self.latest_rtt: float | None = None
        self.samples = 0
        # How many timeouts in a row since the last valid sample.
        self.backoffs = 0

    def on_sample(self, rtt: float, ack_delay: float = 0.0) -> None:
        """A measured round trip of a never-retransmitted packet (Karn's rule).

        `ack_delay` is how long the peer says it held the ack; like RFC 9002
        5.3 we subtract it, but never below the smallest RTT ever seen.
        """
        # (Comparisons rather than max()/min(): this runs for nearly every ack.)
        if rtt < 0.0:
            rtt = 0.0
        self.latest_rtt = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if rtt - ack_delay >= self.min_rtt:
            rtt -= ack_delay
        if self.srtt is None or self.rttvar is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1
        self.backoffs = 0  # a valid sample ends the backoff (RFC 6298 5.7)

    def on_timeout(self, level: int | None = None) -> None:
        """The retransmission timer expired: back off (RFC 6298 5.5).

        `level` is how many times in a row the packet that timed out has now
        been sent again; several packets timing out together back off once.
        """
        self.backoffs = self.backoffs + 1 if level is None else max(self.backoffs, level)

    @property
    def base_rto(self) -> float:
        """The RTO before backoff."""
        if self.srtt is None or self.rttvar is None:
            rto = self.initial_rto
        else:
            rto = self.srtt + max(self.granularity, 4 * self.rttvar) + self.peer_ack_delay
        # Clamped to [min_rto, max_rto]; comparisons, as this runs for every packet sent.
        if rto < self.min_rto:
            rto = self.min_rto
        if rto > self.max_rto:
            rto = self.max_rto
        return rto

    @property
    def rto(self) -> float:
        """The timeout to use now: the base RTO times backoff^timeouts, capped."""
        # Computed in a loop-free way but capped early so the power cannot overflow.
        exponent = min(self.backoffs, 64)
        return min(self.base_rto * self.backoff_factor**exponent, self.max_rto)
