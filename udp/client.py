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
import random
from typing import Callable

from hellohi.client_session import ClientSession, ConnectionLost, ErrorReceived, Event, Registered
from hellohi.codec import Bye, Frame, Ping, Who
from hellohi.datagram_client import DatagramLink, LinkFailed, SessionReset
from hellohi.reliable import DEFAULT, Impairment, ReliabilityConfig
from udp.lossy import LossyPath


class ConnectFailed(Exception):
    pass


class UdpChatClient:
    transport_name = "udp"

    def __init__(
        self,
        host: str,
        port: int,
        name: str | None = None,
        *,
        reconnect: bool = True,
        heartbeat: float | None = None,
        max_backoff: float = 5.0,
        trace: Callable[[str, Frame], None] | None = None,
        plain: bool = False,
        config: ReliabilityConfig = DEFAULT,
        impair_send: Impairment | None = None,
        impair_receive: Impairment | None = None,
        link_trace: Callable[[str], None] | None = None,
    ):
        self.host, self.port = host, port
        self.session = ClientSession(name)
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        self.trace = trace  # ("->" | "<-", frame), as in the TCP client
        self.link = DatagramLink(None if plain else config, trace=link_trace)
        if plain:
            self.transport_name = "udp (plain, no acks)"
        self.impair_send, self.impair_receive = impair_send, impair_receive
        self._send_path = LossyPath(impair_send, self._sendto)
        self._receive_path = LossyPath(impair_receive, self._datagram_in)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._transport: asyncio.DatagramTransport | None = None
        self._registered = asyncio.Event()
        self._hello_answer: asyncio.Future[Event] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._last_heard = 0.0

    @property
    def name(self) -> str | None:
        return self.session.registered_as

    @property
    def connected(self) -> bool:
        return self._registered.is_set()

    @property
    def stats(self):
        """Reliability counters of the current session (None in plain mode)."""
        return self.link.stats

    # ------------------------------------------------------------ public API

    async def connect(self, timeout: float = 10.0) -> str:
        try:
            await asyncio.wait_for(self._open(), timeout)
        # First: asyncio.TimeoutError is an OSError too, since Python 3.11.
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no HI from {self.host}:{self.port} within {timeout} s (UDP: nothing answered)") from None
        except OSError as error:
            raise ConnectFailed(f"cannot reach {self.host}:{self.port}: {error.strerror or error}") from None
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        assert self.name is not None
        return self.name

    def send(self, to: str, body: bytes | str) -> str:
        frame = self.session.send(to, body.encode() if isinstance(body, str) else body)
        if self.connected:
            self._write(frame)
        return frame.ref

    def request_who(self) -> None:
        self._write(Who())

    def say_hello(self) -> None:
        self._write(self.session.hello())

    async def next_event(self, timeout: float | None = None) -> Event | None:
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._transport is not None and self.connected:
            self._write(Bye())
            # Give a reliable BYE a moment to be acknowledged; the server's
            # heartbeat timeout covers us if it never arrives.
            deadline = asyncio.get_running_loop().time() + 0.5
            while self.link.endpoint and self.link.endpoint.unacknowledged and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        if self._timer:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        self._registered.clear()

    async def rebind(self) -> None:
        """Carry on from a new local port, as if a NAT had changed our address."""
        old = self._transport
        await self._open_socket()
        if old is not None:
            old.close()

    # ------------------------------------------------------------ plumbing

    async def _open_socket(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _ClientProtocol(self), remote_addr=(self.host, self.port)
        )

    async def _open(self) -> None:
        if self._transport is None:
            await self._open_socket()
        loop = asyncio.get_running_loop()
        self._registered.clear()
        self._last_heard = loop.time()
        self._hello_answer = loop.create_future()
        self.link.start(loop.time())
        self._write(self.session.hello())
        answer = await self._hello_answer
        if isinstance(answer, ErrorReceived):
            raise ConnectFailed(f"the server refused Hello: {answer.code} {answer.reason}: {answer.detail}")
        # Anything the server never confirmed goes again; it drops repeats by ref.
        for frame in self.session.unconfirmed():
            self._write(frame)

    def _write(self, frame: Frame) -> None:
        if self._transport is None:
            return
        if self.trace:
            self.trace("->", frame)
        self.link.send_frame(frame, asyncio.get_running_loop().time())
        self._pump()

    def _pump(self) -> None:
        """Send whatever the link has ready, and set the timer for its next deadline."""
        now = asyncio.get_running_loop().time()
        for datagram in self.link.datagrams_to_send(now):
            self._send_path(datagram)
        self._arm_timer()

    def _sendto(self, datagram: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram)

    def _arm_timer(self) -> None:
        deadline = self.link.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._handle(self.link.handle_timer(asyncio.get_running_loop().time()))
        self._pump()

    def _datagram_in(self, datagram: bytes) -> None:
        now = asyncio.get_running_loop().time()
        items = self.link.receive(datagram, now)
        self._last_heard = now
        self._handle(items)
        self._pump()

    def _handle(self, items) -> None:
        for item in items:
            if isinstance(item, (SessionReset, LinkFailed)):
                self._lost(item.reason)
                return
            if self.trace:
                self.trace("<-", item)
            events, replies = self.session.receive(item)
            for reply in replies:
                self._write(reply)
            for event in events:
                if isinstance(event, Registered):
                    self._registered.set()
                    if self.heartbeat is None:
                        self.heartbeat = event.heartbeat_ms / 1000
                waiting = self._hello_answer is not None and not self._hello_answer.done()
                if waiting and isinstance(event, (Registered, ErrorReceived)) and not getattr(event, "ref", None):
                    self._hello_answer.set_result(event)
                self._events.put_nowait(event)

    def _lost(self, reason: str) -> None:
        was_registered = self._registered.is_set()
        self._registered.clear()
        if self._hello_answer is not None and not self._hello_answer.done():
            self._hello_answer.set_exception(ConnectionResetError(reason))
        if self._closing or not was_registered:
            return
        self._events.put_nowait(ConnectionLost(reason, reconnecting=self.reconnect))
        if self.reconnect:
            self._tasks.append(asyncio.create_task(self._reconnect()))

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closing:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await asyncio.wait_for(self._open(), 5.0)
                return
            except (OSError, asyncio.TimeoutError, ConnectFailed):
                delay = min(delay * 2, self.max_backoff)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            interval = self.heartbeat or 15.0
            await asyncio.sleep(interval)
            if not self.connected:
                continue
            if loop.time() - self._last_heard > 3 * interval:
                self._lost(f"nothing heard from the server for {loop.time() - self._last_heard:.0f} s")
            else:
                self._write(Ping())


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpChatClient):
        self.client = client

    def datagram_received(self, data: bytes, addr) -> None:
        self.client._receive_path(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable": nobody listens there. While saying Hello that
        # is a clear answer; later, retransmission (the server may be restarting)
        # or the heartbeat timeout deals with it.
        answer = self.client._hello_answer
        if answer is not None and not answer.done() and not self.client._closing:
            answer.set_exception(exc)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from hellohi.chat_cli import run
    from hellohi.options import add_client_arguments, add_udp_arguments, reliability_from
    from udp.lossy import impairments_from

    parser = argparse.ArgumentParser(prog="python -m udp.client", description="hellohi chat client over UDP")
    add_client_arguments(parser)
    add_udp_arguments(parser, client=True)
    args = parser.parse_args(argv)
    config = reliability_from(args)
    impair_send, impair_receive = impairments_from(args)

    def make_client(host, port, name, **kwargs):
        return UdpChatClient(host, port, name, plain=args.plain, config=config,
                             impair_send=impair_send, impair_receive=impair_receive, **kwargs)

    try:
        sys.exit(asyncio.run(run(args, make_client)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
