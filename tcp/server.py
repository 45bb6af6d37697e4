"""The hellohi relay over TCP: asyncio glue around hellohi.relay.Relay.

Everything interesting happens in the relay core; this file only moves bytes.
TCP already gives us a reliable, ordered byte stream per client, so one frame
decoder per connection is all the protocol machinery we need here. Compare
udp/server.py, which has to build that stream itself.

    python -m tcp.server --host 127.0.0.1 --port 5000 --store hellohi-tcp.sqlite3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys

from hellohi.codec import DEFAULT_MAX_BODY, DEFAULT_MAX_LINE, Decoder, encode
from hellohi import eventloop
from hellohi.errors import ErrorCode, ProtocolError
from hellohi.launcher import announce, cannot_listen, close_store, until_stopped
from hellohi.options import add_server_arguments, limits_from
from hellohi.relay import DEFAULT_MAX_OUTBOUND, Disconnect, Notice, Relay, RelayLimits, Transmit, format_peer
from hellohi.store import STORE_WAIT, MessageStore, StoreInUse

log = logging.getLogger("hellohi.tcp.server")


class TcpRelayServer:
    def __init__(
        self,
        relay: Relay,
        max_line: int = DEFAULT_MAX_LINE,
        max_body: int = DEFAULT_MAX_BODY,
        max_outbound: int = DEFAULT_MAX_OUTBOUND,
    ):
        self.relay = relay
        self.max_line = max_line
        self.max_body = max_body
        self.max_outbound = max_outbound
        self._transports: dict[int, asyncio.Transport] = {}
        self._server: asyncio.base_events.Server | None = None
        # One timer, always set for the relay's next deadline (heartbeat or timeout).
        self._timer: asyncio.TimerHandle | None = None
        self.closing = False  # close() has begun: the store is closed or about to be

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientConnection(self), host, port)
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def close(self) -> None:
        self.closing = True
        if self._timer:
            self._timer.cancel()
        if self._server:
            self._server.close()
        for transport in list(self._transports.values()):
            transport.abort()
        if self._server:
            await self._server.wait_closed()
        close_store(self.relay.store, log)

    def flush(self) -> None:
        """Carry out what the relay decided, after it committed the store."""
        while actions := self.relay.flush():
            # Frames for one connection are joined into one write: one system call
            # per connection per batch instead of one per frame.
            outgoing: dict[int, list[bytes]] = {}
            for action in actions:
                if isinstance(action, Transmit):
                    outgoing.setdefault(action.connection, []).append(encode(action.frame))
                    continue
                self._write_all(outgoing)  # keep the order: frames before a close
                if isinstance(action, Disconnect):
                    self._disconnect(action.connection, action.reason)
                elif isinstance(action, Notice):
                    log.info("%s", action.text)
            self._write_all(outgoing)
        self._arm_timer()

    def _write_all(self, outgoing: dict[int, list[bytes]]) -> None:
        for connection, chunks in outgoing.items():
            self._transmit(connection, b"".join(chunks))
        outgoing.clear()

    def _transmit(self, connection: int, data: bytes) -> None:
        transport = self._transports.get(connection)
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.max_outbound:
            # Its ERR will most likely never be read, but it costs nothing to try.
            self.relay.reject(connection, ProtocolError(ErrorCode.SLOW_READER, f"more than {self.max_outbound} bytes unread", fatal=True))

    def _disconnect(self, connection: int, reason: str) -> None:
        transport = self._transports.pop(connection, None)
        if transport is None:
            return
        log.info("closing connection #%d (%s)", connection, reason)
        if transport.get_write_buffer_size() > self.max_outbound:
            transport.abort()  # close() would wait for a reader that never reads
        else:
            transport.close()  # sends what is buffered (the ERR or BYE), then FIN

    def _arm_timer(self) -> None:
        if self._timer is not None:
            # Already set, and never too late: every relay deadline is some event's time
            # plus the heartbeat interval or timeout, so traffic only moves deadlines
            # later and a new connection's deadline is never earlier than one computed
            # before it. At worst the timer fires early; on_timer() then has nothing to
            # do and we arm it again. This saves a scan of every connection per read.
            return
        deadline = self.relay.next_deadline()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.relay.on_timer(asyncio.get_running_loop().time())
        self.flush()


class _ClientConnection(asyncio.Protocol):
    """One TCP client: decode its bytes into frames for the relay."""

    def __init__(self, server: TcpRelayServer):
        self.server = server
        self.decoder = Decoder(server.max_line, server.max_body)
        self.id = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # a stream's is a Transport
        peer = format_peer(transport.get_extra_info("peername"))
        self.id = self.server.relay.connect(peer, asyncio.get_running_loop().time())
        self.server._transports[self.id] = transport
        log.info("accepted connection #%d from %s", self.id, peer)
        self.server.flush()

    def data_received(self, data: bytes) -> None:
        relay, now = self.server.relay, asyncio.get_running_loop().time()
        self.decoder.feed(data)
        while True:
            try:
                frame = self.decoder.next_frame()
            except ProtocolError as error:
                relay.reject(self.id, error)
                if error.fatal:
                    break
                continue
            if frame is None:
                break
            relay.receive(self.id, frame, now)
        # One commit for everything this read brought: many frames, one write to disk.
        self.server.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server.closing:
            # Shutting down, every connection at once. The event loop reports them lost
            # after close() has closed the store (wait_closed() does not wait for them),
            # and there is nothing to record: waiting messages are on disk already.
            return
        if self.server._transports.pop(self.id, None) is not None:
            log.info("connection #%d lost%s", self.id, f" ({exc})" if exc else "")
        if self.decoder.mid_frame:
            log.info("connection #%d left an unfinished frame; ignored", self.id)
        self.server.relay.disconnected(self.id)
        self.server.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tcp.server", description="hellohi chat relay over TCP")
    add_server_arguments(parser, default_store="hellohi-tcp.sqlite3")
    return parser


def open_store(path: str, write_wait: float = STORE_WAIT) -> MessageStore:
    if not path.strip():
        # SQLite would take "" for a temporary file, deleted at exit: waiting messages would
        # not survive a restart, which is the store's whole point.
        raise SystemExit("error: --store is empty; give it a file name, e.g. --store hellohi.sqlite3")
    try:
        return MessageStore(path, exclusive=True, write_wait=write_wait)
    except StoreInUse as error:
        raise SystemExit(f"error: the message store {path!r} is in use: {error}; give each server its own --store") from None
    except (sqlite3.Error, OSError) as error:
        raise SystemExit(f"error: cannot open the message store {path!r}: {error}; pick another --store") from None


async def serve(args: argparse.Namespace, limits: RelayLimits) -> None:
    relay = Relay(open_store(args.store, args.store_wait), limits, narrate=args.verbose)
    server = TcpRelayServer(relay, args.max_line, args.max_body, args.max_outbound)
    try:
        host, port = await server.start(args.host, args.port)
    except OSError as error:
        relay.store.close()
        raise cannot_listen(args.host, args.port, error) from None
    announce("tcp", host, port, args.store)
    await until_stopped()
    log.info("shutting down; waiting messages stay in %s", args.store)
    await server.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    loop = eventloop.apply_choice(args.loop)
    limits = limits_from(args)
    logging.basicConfig(level=logging.INFO, format="[server] %(message)s", stream=sys.stderr)
    eventloop.run(serve(args, limits), loop)


if __name__ == "__main__":
    main()
