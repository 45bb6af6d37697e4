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
        self._writer: asyncio.StreamWriter | None = None
        # Frames written during one turn of the event loop leave in one write():
        # a burst of SENDs, or the ACKs for everything one read brought, costs
        # one system call and reaches the server as one segment, not one each.
        self._pending: list[bytes] = []

    async def close(self) -> None:
        self._closing = True
        if self._writer and not self._writer.is_closing():
            try:
                self._write(Bye())
                self._flush_writes()  # now, not on the next turn: we are about to close
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            self._writer.close()
        await self._stop_tasks()

    # ------------------------------------------------------------ the transport's part

    def _write(self, frame: Frame) -> None:
        if self._writer is not None and not self._writer.is_closing():
            if self.trace:
                self.trace("->", frame)
            if not self._pending:
                asyncio.get_running_loop().call_soon(self._flush_writes)
            self._pending.append(encode(frame))

    def _flush_writes(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _open(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._pending.clear()  # meant for the old connection; what matters goes again below
        self._expect_hello_answer()
        self._write(self.session.hello())
        # Anything the server never confirmed goes again; it drops repeats by ref.
        for frame in self.session.unconfirmed():
            self._write(frame)
        self._tasks.append(asyncio.create_task(self._read(reader)))
        try:
            await self._await_hello_answer()
        except ConnectFailed:
            self._writer.close()
            raise

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = Decoder()
        reason = "server closed the connection"
        try:
            while data := await reader.read(65536):
                self._last_heard = asyncio.get_running_loop().time()
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    self._frame_in(frame)
        except ProtocolError as error:
            reason = f"server sent bad data: {error}"
        except ConnectionError as error:
            reason = str(error) or type(error).__name__
        self._connection_lost(reason)

    def _server_silent(self) -> None:
        if self._writer:
            self._writer.close()  # the server is gone without a FIN; _read notices and reconnects


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
