"""A NewReno-like congestion window, counted in packets (RFC 5681, RFC 9002 7).

RFC 8085 asks every UDP application that sends in bulk to react to loss the
way TCP does, so that it does not flood a slow or congested link:

- slow start: each acknowledged packet grows the window by one packet, so the
  window doubles every round trip, until it reaches ssthresh;
- congestion avoidance: above ssthresh it grows by about one packet per round
  trip (1/cwnd per acknowledged packet);
- on loss it halves (ssthresh = cwnd / 2, cwnd = ssthresh), but at most once
  per recovery episode: losses among packets sent before the episode began
  were caused by the same congestion and must not halve it again;
- after a retransmission timeout the sender knows little about the path, so
  the window drops to its minimum and slow start begins again.

"Time" for the recovery episode is the sender's transmission counter: a packet
sent after the episode started has a larger number than `recovery_start`.
"""

from __future__ import annotations

import math


class NewReno:
    def __init__(self, initial_window: float = 10.0, minimum_window: float = 2.0, enabled: bool = True):
        self.enabled = enabled
        self.minimum_window = minimum_window
        self.cwnd = initial_window
        self.ssthresh = math.inf
        self.recovery_start = -1  # transmissions numbered <= this are in the current episode
        self.loss_events = 0

    @property
    def window(self) -> int:
        """Packets that may be in flight; unlimited when congestion control is off."""
        return math.inf if not self.enabled else max(int(self.cwnd), 1)  # type: ignore[return-value]

    def in_recovery(self, sent_serial: int) -> bool:
        return sent_serial <= self.recovery_start

    def on_ack(self, sent_serial: int) -> None:
        """A packet (sent as transmission `sent_serial`) was acknowledged."""
        if sent_serial <= self.recovery_start:  # in_recovery(), without the call: this runs per packet
            return  # acks of packets from before the loss do not grow the window
        if self.cwnd < self.ssthresh:
            self.cwnd += 1
        else:
            self.cwnd += 1 / self.cwnd

    def on_loss(self, sent_serial: int, latest_serial: int) -> None:
        """A packet sent as `sent_serial` was declared lost; `latest_serial` is the newest transmission."""
        if self.in_recovery(sent_serial):
            return
        self.loss_events += 1
        self.recovery_start = latest_serial
        self.ssthresh = max(self.cwnd / 2, self.minimum_window)
        self.cwnd = self.ssthresh

    def on_timeout(self, latest_serial: int) -> None:
        """The retransmission timer fired: back to the minimum window and slow start."""
        self.loss_events += 1
        self.recovery_start = latest_serial
        self.ssthresh = max(self.cwnd / 2, self.minimum_window)
        self.cwnd = self.minimum_window
