"""The hellohi chat client over UDP: the same library API and command line as tcp/client.py.

    client = UdpChatClient("127.0.0.1", 5000, name="alice")          # reliable
    client = UdpChatClient("127.0.0.1", 5000, name="alice", plain=True)  # fire and forget
    await client.connect()
    client.send("bob", b"hi bob")
    event = await client.next_event(timeout=5)
    await client.close()

What TCP did for tcp/client.py, hellohi.datagram_client.DatagramLink and the
reliability layer under it do here: acks, retransmission, ordering. This file
only owns the socket and the timer. "Reconnecting" over UDP means starting a
new session on the same socket: the server forgot us (RESET), or stopped
answering.

Command line: python -m udp.client --server 127.0.0.1:5000 --name alice [--plain] [--loss 0.2]
"""

from __future__ import annotations

import asyncio
from typing import Callable

from hellohi.chat_client import ChatClient, ConnectFailed
from hellohi.codec import Ack, Bye, Frame
from hellohi.datagram_client import PLAIN_MAX_BODY, DatagramLink, LinkFailed, SessionReset
from hellohi.reliable import DEFAULT, Impairment, ReliabilityConfig
from udp.deadline import DeadlineTimer, clock
from udp.lossy import LossyPath, lossy_path

__all__ = ["ConnectFailed", "UdpChatClient"]


class UdpChatClient(ChatClient):
    """A ChatClient whose frames travel in datagrams (hellohi/chat_client.py has the rest)."""

    transport_name = "udp"

    def __init__(
        self,
        host: str,
        port: int,
        name: str | None = None,
        *,
        plain: bool = False,
        config: ReliabilityConfig = DEFAULT,
        impair_send: Impairment | None = None,
        impair_receive: Impairment | None = None,
        link_trace: Callable[[str], None] | None = None,
        **options,
    ):
        super().__init__(host, port, name, **options)
        # link_trace gets a sentence for each retransmission, duplicate, out-of-order packet.
        self.link = DatagramLink(None if plain else config, trace=link_trace)
        if plain:
            self.transport_name = "udp (plain, no acks)"
            self.max_body, self.max_body_note = PLAIN_MAX_BODY, " over plain UDP, where it must fit one datagram"
        self.impair_send, self.impair_receive = impair_send, impair_receive
        self._send_path = lossy_path(impair_send, self._sendto)
        self._receive_path = lossy_path(impair_receive, self._datagram_in)
        self._transport: asyncio.DatagramTransport | None = None
        self._timer = DeadlineTimer(self._on_timer)
        self._pump_scheduled = False  # an end-of-turn pump is due
        self._sent_this_turn = False  # a frame has left at once in this turn
        self._reading = False  # inside _datagram_in: replies wait for the end-of-turn pump

    @property
    def _server_close_is_signalled(self) -> bool:  # see ChatClient
        return not self.link.plain

    @property
    def stats(self):
        """Reliability counters of the current session (None in plain mode)."""
        return self.link.stats

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        said_bye = False
        if self._transport is not None and self.connected:
            self._write(Bye())
            self._pump()  # now: the socket closes below
            # Give a reliable BYE a moment to be acknowledged.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 0.5
            while self._bye_unacknowledged() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            said_bye = not self._bye_unacknowledged()
        if self._transport is not None:
            if not said_bye:
                # The server may still hold our session (the BYE is unacknowledged, or we
                # were between attempts to reconnect): a RESET frees our name there at once.
                self.link.abandon()
                self._pump()
            if isinstance(self._send_path, LossyPath):  # --delay, --jitter, --reorder may still hold the BYE
                await self._send_path.drained(limit=2.0)
        self._timer.cancel()
        await self._stop_tasks()
        if self._transport is not None:
            self._transport.close()
        self._registered.clear()

    def _bye_unacknowledged(self) -> bool:
        """Plain mode has nothing to acknowledge: its BYE is as said as it will ever be."""
        return bool(self.link.endpoint and self.link.endpoint.unacknowledged)

    async def rebind(self) -> None:
        """Carry on from a new local port, as if a NAT had changed our address."""
        old = self._transport
        await self._open_socket()
        if old is not None:
            old.close()

    # ------------------------------------------------------------ the transport's part

    async def _open(self) -> None:
        if self._transport is None:
            await self._open_socket()
        # "Reconnecting" over UDP is a new session on the same socket.
        self._expect_hello_answer()
        self._start_session()
        try:
            await self._await_hello_answer()
        except BaseException:  # refused, unreachable (ICMP), or connect() timed out and cancelled us
            # The attempt is over: nothing of it may go out any more. A Hello still being
            # retransmitted would register our name with a server that comes back meanwhile,
            # in a session nobody waits for, and the next attempt's Hello would get 409.
            # (If the server did answer, the RESET abandon() sends tells it to forget us.)
            self.link.abandon()
            self._pump()
            self._timer.cancel()
            raise
        # Anything the server never confirmed goes again; it drops repeats by ref.
        for frame in self.session.unconfirmed():
            self._write(frame)

    def _start_session(self) -> None:
        """A new session on this socket (token 0, packet 1), opened with our Hello."""
        self.link.start(clock())
        self._write(self.session.hello())  # plain mode: said again until HI comes (DatagramLink)

    def _write(self, frame: Frame) -> None:
        if self._transport is None:
            return
        if self.trace:
            self.trace("->", frame)
        self.link.send_frame(frame, clock())
        if isinstance(frame, Ack):
            # Written as the program takes a message: nobody waits for it, and what the program
            # writes next in this turn (an echo, say) carries it in the same datagram.
            self._pump_at_end_of_turn()
            return
        # The first frame of a turn of the event loop leaves at once, so a lone
        # request waits for nothing; frames written after it in the same turn (a
        # burst of SENDs) leave together at the turn's end and share datagrams.
        # Replies to a datagram (a PONG to its PING) wait for the end of its turn.
        if not self._sent_this_turn and not self._reading:
            self._sent_this_turn = True
            self._pump()
            self._pump_at_end_of_turn()

    def _pump_at_end_of_turn(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._pump_scheduled = self._sent_this_turn = False
        self._pump()

    def _server_silent(self) -> None:
        silent = asyncio.get_running_loop().time() - self._last_heard
        self._connection_lost(f"the server stopped answering: nothing heard from it for {silent:.1f} s")

    # ------------------------------------------------------------ datagrams and the timer

    async def _open_socket(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _ClientProtocol(self), remote_addr=(self.host, self.port)
        )

    def _pump(self) -> None:
        """Send whatever the link has ready, and set the timer for its next deadline."""
        now = clock()
        for datagram in self.link.datagrams_to_send(now):
            self._send_path(datagram)
        self._arm_timer()

    def _sendto(self, datagram: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram)

    def _arm_timer(self) -> None:
        self._timer.set(self.link.next_deadline())

    def _on_timer(self) -> None:
        self._take(self.link.handle_timer(clock()))
        self._pump()

    def _datagram_in(self, datagram: bytes) -> None:
        items = self.link.receive(datagram, clock())
        self._last_heard = asyncio.get_running_loop().time()  # the heartbeat's clock (chat_client.py)
        self._reading = True
        try:
            self._take(items)
        finally:
            self._reading = False
        # The acks and replies for this datagram leave at the end of the turn, after
        # the application's task has run on the events it got: what it writes then
        # (a Hello on HI) leaves at once and carries them.
        self._pump_at_end_of_turn()

    def _saying_hello(self) -> bool:
        """A connect (or reconnect) is waiting for HI."""
        return not self._closing and self._pending_hello_answer() is not None

    def _take(self, items) -> None:
        for item in items:
            if isinstance(item, SessionReset) and self._saying_hello():
                # The server dropped the session before our address was proven (a full server
                # makes room so): start over, within this connect's time, as after HI.
                self._start_session()
                return
            if isinstance(item, (SessionReset, LinkFailed)):
                self._connection_lost(item.reason)
                return
            self._frame_in(item)


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpChatClient):
        self.client = client

    def datagram_received(self, data: bytes, addr) -> None:
        self.client._receive_path(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable": nobody listens there. While saying Hello that
        # is a clear answer; later, retransmission (the server may be restarting)
        # or the heartbeat timeout deals with it.
        answer = self.client._pending_hello_answer()
        if answer is not None and not self.client._closing:
            answer.set_exception(exc)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from hellohi import eventloop
    from hellohi.chat_cli import run
    from hellohi.console import exit_status, stop_on_terminate_or_hangup
    from hellohi.options import add_client_arguments, add_udp_arguments, reliability_from
    from udp.lossy import impairments_from

    parser = argparse.ArgumentParser(prog="python -m udp.client", description="hellohi chat client over UDP")
    add_client_arguments(parser)
    add_udp_arguments(parser, client=True)
    args = parser.parse_args(argv)
    loop = eventloop.apply_choice(args.loop)
    config = reliability_from(args)
    impair_send, impair_receive = impairments_from(args)
    stop_on_terminate_or_hangup()

    def make_client(host, port, name, **kwargs):
        return UdpChatClient(host, port, name, plain=args.plain, config=config,
                             impair_send=impair_send, impair_receive=impair_receive, **kwargs)

    try:
        sys.exit(eventloop.run(run(args, make_client), loop))
    except KeyboardInterrupt as interrupt:
        sys.exit(exit_status(interrupt))


if __name__ == "__main__":
    main()
