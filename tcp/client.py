"""The hellohi chat client over TCP: a library and a command line.

Library use (asyncio):

    client = TcpChatClient("127.0.0.1", 5000, name="alice")
    await client.connect()                  # Hello -> HI
    ref = client.send("bob", b"hi bob")     # queued; STATUS events follow
    event = await client.next_event(timeout=5)
    await client.close()                    # BYE

Command line: python -m tcp.client --server 127.0.0.1:5000 --name alice
(see `--help`, and hellohi/chat_cli.py for the interactive and scripted modes).
"""

from __future__ import annotations

import asyncio

from hellohi.chat_client import ChatClient, ConnectFailed
from hellohi.codec import Bye, Decoder, Frame, encode
from hellohi.errors import ProtocolError

__all__ = ["ConnectFailed", "TcpChatClient"]


class TcpChatClient(ChatClient):
    """A ChatClient whose frames travel on one TCP connection (hellohi/chat_client.py has the rest)."""

    transport_name = "tcp"

    def __init__(self, host: str, port: int, name: str | None = None, **options):
        super().__init__(host, port, name, **options)
        self._transport: asyncio.Transport | None = None
        self._protocol: _StreamProtocol | None = None
        self._closed: asyncio.Future[None] | None = None  # resolved when the connection is gone
        # The first frame written in a turn of the event loop leaves at once, so a
        # lone request (Hello, one SEND) waits for nothing. Frames written after it
        # in the same turn wait for the turn's end and leave in one write(), and so
        # do the replies (ACKs) to everything one read brought: a burst costs one or
        # two system calls and segments, not one each.
        self._pending: list[bytes] | None = None  # None: nothing written this turn yet

    async def close(self) -> None:
        self._closing = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._write(Bye())
            self._flush_writes()  # now, not on the next turn: we are about to close
            transport.close()  # sends what is buffered first, then FIN
            assert self._closed is not None
            await asyncio.wait([self._closed], timeout=5.0)
            if not self._closed.done():
                transport.abort()  # the server stopped reading; no use waiting longer
        await self._stop_tasks()

    # ------------------------------------------------------------ the transport's part

    def _write(self, frame: Frame) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.trace:
                self.trace("->", frame)
            if self._pending is None:
                self._transport.write(encode(frame))
                self._pending = []
                asyncio.get_running_loop().call_soon(self._flush_writes)
            else:
                self._pending.append(encode(frame))

    def _hold_writes(self) -> None:
        if self._pending is None:
            self._pending = []

    def _flush_writes(self) -> None:
        data, self._pending = b"".join(self._pending or ()), None
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        self._closed = closed
        self._transport, self._protocol = await loop.create_connection(lambda: _StreamProtocol(self, closed), self.host, self.port)
        self._pending = None  # meant for the old connection; what matters goes again below
        self._expect_hello_answer()
        self._write(self.session.hello())
        # Anything the server never confirmed goes again, right behind the Hello (TCP
        # keeps the order, so it need not wait for HI); the server drops repeats by ref.
        sent_ahead = set()
        for frame in self.session.unconfirmed():
            self._write(frame)
            sent_ahead.add(frame.ref)
        try:
            await self._await_hello_answer()
        except BaseException:  # refused, closed, or connect() timed out and cancelled us
            # The attempt is over: a connection left open would register our name
            # once a slow server got to it, and take messages nobody reads.
            self._transport.close()
            raise
        # What send() was given while we waited for HI: it held them (not connected yet).
        for frame in self.session.unconfirmed():
            if frame.ref not in sent_ahead:
                self._write(frame)

    def _server_silent(self) -> None:
        if self._transport and self._protocol:
            # Not "server closed the connection": the connection is open, the server just went quiet.
            silent = asyncio.get_running_loop().time() - self._last_heard
            self._protocol.reason = f"the server stopped answering: nothing heard from it for {silent:.1f} s"
            self._transport.abort()  # the server is gone without a FIN; connection_lost reconnects


class _StreamProtocol(asyncio.Protocol):
    """Bytes from the server straight into the decoder, in the event loop's own callback.

    (asyncio's StreamReader would need a task of ours to wake up and read()
    each time data arrives: one more hop per frame for nothing.)
    """

    def __init__(self, client: TcpChatClient, closed: asyncio.Future[None]):
        self.client = client
        self.closed = closed
        self.decoder = Decoder()
        self.reason = "server closed the connection"

    def data_received(self, data: bytes) -> None:
        client = self.client
        client._last_heard = asyncio.get_running_loop().time()
        self.decoder.feed(data)
        client._hold_writes()  # the replies to everything this read brought leave together
        try:
            while (frame := self.decoder.next_frame()) is not None:
                client._frame_in(frame)
        except ProtocolError as error:
            self.reason = f"server sent bad data: {error}"
            if client._transport is not None:
                client._transport.abort()
        client._flush_writes()

    def connection_lost(self, error: Exception | None) -> None:
        if error is not None and self.reason == "server closed the connection":
            self.reason = str(error) or type(error).__name__
        if not self.closed.done():
            self.closed.set_result(None)
        self.client._connection_lost(self.reason)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from hellohi import eventloop
    from hellohi.chat_cli import run
    from hellohi.console import exit_status, stop_on_terminate_or_hangup
    from hellohi.options import add_client_arguments

    parser = argparse.ArgumentParser(prog="python -m tcp.client", description="hellohi chat client over TCP")
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    loop = eventloop.apply_choice(args.loop)
    stop_on_terminate_or_hangup()
    try:
        sys.exit(eventloop.run(run(args, TcpChatClient), loop))
    except KeyboardInterrupt as interrupt:
        sys.exit(exit_status(interrupt))


if __name__ == "__main__":
    main()
