"""The hellohi relay over UDP: asyncio glue around hellohi.datagram_relay.DatagramRelay.

One socket serves every client. Compare tcp/server.py: there the kernel gave
us one connection per client with a reliable ordered stream; here each
datagram arrives on its own, and DatagramRelay sorts them into sessions and
runs the reliability layer for each. This file only owns the socket, the
clock and the one timer (udp/deadline.py).

    python -m udp.server --host 127.0.0.1 --port 5000 --store hellohi-udp.sqlite3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import socket
import sys
from collections import deque

from hellohi import eventloop
from hellohi.datagram_relay import DatagramLimits, DatagramRelay
from hellohi.launcher import announce, cannot_listen, close_store, until_stopped
from hellohi.options import add_server_arguments, add_udp_arguments, limits_from, positive, reliability_from
from hellohi.relay import Relay, format_peer
from tcp.server import open_store
from udp.deadline import DeadlineTimer, clock
from udp.lossy import impairments_from, lossy_path

log = logging.getLogger("hellohi.udp.server")


class UdpRelayServer:
    """Owns the UDP socket, the clock and the one timer; DatagramRelay does the rest.

    The socket is non-blocking and watched by the event loop. When it becomes
    readable we read one datagram, hand it to the relay and send what the relay
    answered; then we read every datagram that arrived meanwhile (up to
    MAX_BATCH) and do the same with them as one batch. Under load a read brings
    many datagrams, so the store's commit and the acks are paid once per batch
    instead of once per datagram; when traffic is light nothing waits.
    """

    MAX_BATCH = 256  # datagrams per batch (after the first): bounds how long timers and sends wait behind reads
    MAX_DATAGRAM = 65535

    def __init__(self, relay: DatagramRelay, impair_send=None, impair_receive=None):
        self.relay = relay
        self._socket: socket.socket | None = None
        self._timer = DeadlineTimer(self._on_timer)
        self._send_path = lossy_path(impair_send, self._sendto)
        self._receive_path = lossy_path(impair_receive, self._datagram_in)
        self._batch: list[tuple[bytes, tuple]] | None = None  # set while reading a batch
        # Datagrams the kernel had no room for yet (EAGAIN), sent when the socket is writable.
        self._unsent: deque[tuple[bytes, tuple]] = deque()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.bind(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            self._socket = sock
            break
        if self._socket is None:
            raise error or OSError(f"cannot bind {host}:{port}")
        loop.add_reader(self._socket.fileno(), self._on_readable)
        address = self._socket.getsockname()
        return address[0], address[1]

    def close(self) -> None:
        self._timer.cancel()
        if self._socket is not None:
            self.relay.shutdown()
            for datagram, address in self.relay.outgoing():  # the RESETs: straight out, the socket closes next
                self._sendto(datagram, address)
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._socket.fileno())
            loop.remove_writer(self._socket.fileno())
            self._socket.close()
            self._socket = None
        close_store(self.relay.relay.store, log)

    # ------------------------------------------------------------ reading

    def _on_readable(self) -> None:
        # The first datagram is answered before we look for more. On a quiet server
        # looking finds the socket empty (a recvfrom that fails with EAGAIN), and a
        # ping-pong should not wait for that: answering first took 7-9 us off a
        # loopback Hello/HI round trip. What arrived meanwhile is read as one batch.
        # (If the first read brings nothing, the event loop calls us again while the
        # socket holds datagrams: a reader is called for as long as there is data.)
        if self._read_batch(1):
            self._read_batch(self.MAX_BATCH)

    def _read_batch(self, limit: int) -> int:
        """Read up to `limit` datagrams, hand them to the relay, send its answers.

        Returns how many came off the socket (the in-process loss injection may
        drop or delay some of them before the relay sees them)."""
        assert self._socket is not None
        self._batch = []
        read = 0
        try:
            for _ in range(limit):
                try:
                    data, address = self._socket.recvfrom(self.MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break  # the socket is empty: the batch is complete
                except OSError as exc:
                    # An ICMP error about an earlier datagram (a client went away), which
                    # Windows reports here; Linux keeps it to itself unless IP_RECVERR is
                    # set. The session's retransmissions, then its timeout, take care of it.
                    log.debug("socket error: %s", exc)
                    continue
                read += 1
                self._receive_path(data, address)
            batch = self._batch
        finally:
            self._batch = None
        if batch:
            self.relay.receive_many(batch, clock())
            self._send_all()
        return read

    def _datagram_in(self, data: bytes, address) -> None:
        if self._batch is not None:
            self._batch.append((data, address))
        else:
            # Delivered later by the in-process loss injection (a delayed datagram).
            self.relay.receive(data, address, clock())
            self._send_all()

    # ------------------------------------------------------------ sending

    def _send_all(self) -> None:
        for datagram, address in self.relay.outgoing():
            self._send_path(datagram, address)
        self._arm_timer()

    def _sendto(self, datagram: bytes, address) -> None:
        if self._socket is None:
            return
        if self._unsent:
            self._unsent.append((datagram, address))  # keep the order
            return
        try:
            self._socket.sendto(datagram, address)
        except (BlockingIOError, InterruptedError):
            self._unsent.append((datagram, address))
            asyncio.get_running_loop().add_writer(self._socket.fileno(), self._on_writable)
        except OSError as exc:
            log.debug("socket error sending to %s: %s", format_peer(address), exc)

    def _on_writable(self) -> None:
        assert self._socket is not None
        while self._unsent:
            datagram, address = self._unsent[0]
            try:
                self._socket.sendto(datagram, address)
            except (BlockingIOError, InterruptedError):
                return  # still full; we are called again when there is room
            except OSError as exc:
                log.debug("socket error sending to %s: %s", format_peer(address), exc)
            self._unsent.popleft()
        asyncio.get_running_loop().remove_writer(self._socket.fileno())

    # ------------------------------------------------------------ the timer

    def _arm_timer(self) -> None:
        self._timer.set(self.relay.next_deadline())

    def _on_timer(self) -> None:
        self.relay.on_timer(clock())
        self._send_all()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m udp.server", description="hellohi chat relay over UDP (reliable and plain clients on one port)")
    add_server_arguments(parser, default_store="hellohi-udp.sqlite3")
    parser.add_argument("--amplification-limit", type=positive(float), default=1.0, metavar="FACTOR",
                        help="bytes sent to an unverified address per byte received from it (default: %(default)s)")
    add_udp_arguments(parser, client=False)
    return parser


async def serve(args: argparse.Namespace) -> None:
    limits = limits_from(args)
    config = reliability_from(args)
    impair_send, impair_receive = impairments_from(args)
    relay = Relay(open_store(args.store, args.store_wait), limits, narrate=args.verbose)
    datagram_relay = DatagramRelay(
        relay,
        config,
        new_token=lambda: secrets.randbits(64),
        limits=DatagramLimits(amplification_factor=args.amplification_limit, max_outbound=args.max_outbound),
        max_line=args.max_line,
        max_body=args.max_body,
        trace=log.info,
    )
    server = UdpRelayServer(datagram_relay, impair_send, impair_receive)
    try:
        host, port = await server.start(args.host, args.port)
    except OSError as error:
        relay.store.close()
        raise cannot_listen(args.host, args.port, error) from None
    announce("udp", host, port, args.store)
    await until_stopped()
    log.info("shutting down; waiting messages stay in %s", args.store)
    server.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    loop = eventloop.apply_choice(args.loop)
    if args.amplification_limit < 1:
        raise SystemExit("error: --amplification-limit below 1 would leave no room to answer Hello; use 1 or more")
    logging.basicConfig(level=logging.INFO, format="[server] %(message)s", stream=sys.stderr)
    eventloop.run(serve(args), loop)


if __name__ == "__main__":
    main()
