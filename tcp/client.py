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
import random
from typing import Callable

from hellohi.client_session import ClientSession, ConnectionLost, ErrorReceived, Event, Registered
from hellohi.codec import Bye, Decoder, Frame, Hello, Ping, Who, encode
from hellohi.errors import ProtocolError


class ConnectFailed(Exception):
    pass


class TcpChatClient:
    transport_name = "tcp"

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
    ):
        self.host, self.port = host, port
        self.session = ClientSession(name)
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        # Called with ("->", frame) for each frame sent and ("<-", frame) for each received.
        self.trace = trace
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._registered = asyncio.Event()
        # Resolved by the server's answer to Hello: the HI, or the ERR refusing it.
        self._hello_answer: asyncio.Future[Event] | None = None
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._last_heard = 0.0

    @property
    def name(self) -> str | None:
        return self.session.registered_as

    @property
    def connected(self) -> bool:
        return self._registered.is_set()

    # ------------------------------------------------------------ public API

    async def connect(self, timeout: float = 10.0) -> str:
        """Connect and say Hello; returns the name the server registered."""
        try:
            await asyncio.wait_for(self._open(), timeout)
        # First: asyncio.TimeoutError is an OSError too, since Python 3.11.
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no HI from {self.host}:{self.port} within {timeout} s") from None
        except OSError as error:
            raise ConnectFailed(f"cannot reach {self.host}:{self.port}: {error.strerror or error}") from None
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        assert self.name is not None
        return self.name

    def send(self, to: str, body: bytes | str) -> str:
        """Queue a message for `to`; returns its ref (STATUS events name it)."""
        frame = self.session.send(to, body.encode() if isinstance(body, str) else body)
        if self.connected:
            self._write(frame)
        return frame.ref  # if not connected, it goes out with the unconfirmed ones on reconnect

    def request_who(self) -> None:
        self._write(Who())

    def say_hello(self) -> None:
        """Send Hello again on a registered connection; the server answers HI (a ping)."""
        self._write(self.session.hello())

    async def next_event(self, timeout: float | None = None) -> Event | None:
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        self._closing = True
        if self._writer and not self._writer.is_closing():
            try:
                self._write(Bye())
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            self._writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ plumbing

    def _write(self, frame: Frame) -> None:
        if self._writer is not None and not self._writer.is_closing():
            if self.trace:
                self.trace("->", frame)
            self._writer.write(encode(frame))

    async def _open(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._registered.clear()
        self._last_heard = asyncio.get_running_loop().time()
        self._hello_answer = asyncio.get_running_loop().create_future()
        self._write(self.session.hello())
        # Anything the server never confirmed goes again; it drops repeats by ref.
        for frame in self.session.unconfirmed():
            self._write(frame)
        self._tasks.append(asyncio.create_task(self._read(reader)))
        answer = await self._hello_answer
        if isinstance(answer, ErrorReceived):
            self._writer.close()
            raise ConnectFailed(f"the server refused Hello: {answer.code} {answer.reason}: {answer.detail}")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = Decoder()
        reason = "server closed the connection"
        try:
            while data := await reader.read(65536):
                self._last_heard = asyncio.get_running_loop().time()
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self._handle(frame)
        except ProtocolError as error:
            reason = f"server sent bad data: {error}"
        except ConnectionError as error:
            reason = str(error) or type(error).__name__
        was_registered = self._registered.is_set()
        self._registered.clear()
        if self._hello_answer is not None and not self._hello_answer.done():
            self._hello_answer.set_exception(ConnectionResetError(reason))
        if self._closing or not was_registered:
            return  # a failed handshake is reported by whoever is waiting in _open()
        will_retry = self.reconnect
        self._events.put_nowait(ConnectionLost(reason, reconnecting=will_retry))
        if will_retry:
            self._tasks.append(asyncio.create_task(self._reconnect()))

    def _handle(self, frame: Frame) -> None:
        if self.trace:
            self.trace("<-", frame)
        events, replies = self.session.receive(frame)
        for reply in replies:
            self._write(reply)
        for event in events:
            if isinstance(event, Registered):
                self._registered.set()
                if self.heartbeat is None:
                    self.heartbeat = event.heartbeat_ms / 1000
            waiting_for_hello = self._hello_answer is not None and not self._hello_answer.done()
            if waiting_for_hello and isinstance(event, (Registered, ErrorReceived)) and not getattr(event, "ref", None):
                self._hello_answer.set_result(event)
            self._events.put_nowait(event)

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closing:
            # Jitter spreads out a classroom of clients whose server just restarted.
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
            if loop.time() - self._last_heard > 3 * interval and self._writer:
                self._writer.close()  # the server is gone without a FIN; _read notices and reconnects
            else:
                self._write(Ping())


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from hellohi.chat_cli import run
    from hellohi.options import add_client_arguments

    parser = argparse.ArgumentParser(prog="python -m tcp.client", description="hellohi chat client over TCP")
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    try:
        sys.exit(asyncio.run(run(args, TcpChatClient)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
