"""The hellohi relay over UDP: asyncio glue around hellohi.datagram_relay.DatagramRelay.

One socket serves every client. Compare tcp/server.py: there the kernel gave
us one connection per client with a reliable ordered stream; here each
datagram arrives on its own, and DatagramRelay sorts them into sessions and
runs the reliability layer for each. This file only owns the socket, the
clock and the one timer.

    python -m udp.server --host 127.0.0.1 --port 5000 --store hellohi-udp.sqlite3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys

from hellohi.datagram_relay import DatagramLimits, DatagramRelay
from hellohi.options import add_server_arguments, add_udp_arguments, limits_from, reliability_from
from hellohi.relay import Relay
from tcp.server import format_peer, open_store
from udp.lossy import LossyPath, impairments_from

log = logging.getLogger("hellohi.udp.server")


class UdpRelayServer(asyncio.DatagramProtocol):
    def __init__(self, relay: DatagramRelay, impair_send=None, impair_receive=None):
        self.relay = relay
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._send_path = LossyPath(impair_send, self._sendto)
        self._receive_path = LossyPath(impair_receive, self._datagram_in)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        address = self._transport.get_extra_info("sockname")
        return address[0], address[1]

    def close(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._transport:
            self._transport.close()
        self.relay.relay.store.close()

    # ------------------------------------------------------------ asyncio callbacks

    def datagram_received(self, data: bytes, addr) -> None:
        self._receive_path(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier datagram (a client went away): the
        # session's retransmissions, then its timeout, take care of it.
        log.debug("socket error: %s", exc)

    # ------------------------------------------------------------ plumbing

    def _datagram_in(self, data: bytes, addr) -> None:
        self.relay.receive(data, addr, asyncio.get_running_loop().time())
        self._send_all()

    def _send_all(self) -> None:
        for datagram, address in self.relay.outgoing():
            self._send_path(datagram, address)
        self._arm_timer()

    def _sendto(self, datagram: bytes, address) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram, address)

    def _arm_timer(self) -> None:
        deadline = self.relay.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.relay.on_timer(asyncio.get_running_loop().time())
        self._send_all()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m udp.server", description="hellohi chat relay over UDP (reliable and plain clients on one port)")
    add_server_arguments(parser, default_store="hellohi-udp.sqlite3")
    parser.add_argument("--amplification-limit", type=float, default=1.0, metavar="FACTOR",
                        help="bytes sent to an unverified address per byte received from it (default: %(default)s)")
    add_udp_arguments(parser, client=False)
    return parser


async def serve(args: argparse.Namespace) -> None:
    limits = limits_from(args)
    config = reliability_from(args)
    impair_send, impair_receive = impairments_from(args)
    relay = Relay(open_store(args.store), limits, narrate=args.verbose)
    datagram_relay = DatagramRelay(
        relay,
        config,
        new_token=lambda: secrets.randbits(64),
        limits=DatagramLimits(amplification_factor=args.amplification_limit),
        max_line=args.max_line,
        max_body=args.max_body,
        trace=log.info,
    )
    server = UdpRelayServer(datagram_relay, impair_send, impair_receive)
    try:
        host, port = await server.start(args.host, args.port)
    except OSError as error:
        relay.store.close()
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port}: {error.strerror}; pick another --port or --host") from None
    # This exact line is how scripts and tests learn the port when --port 0.
    print(f"hellohi udp server listening on {format_peer((host, port))} (store: {args.store})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down; waiting messages stay in %s", args.store)
    server.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.amplification_limit < 1:
        raise SystemExit("error: --amplification-limit below 1 would leave no room to answer Hello; use 1 or more")
    logging.basicConfig(level=logging.INFO, format="[server] %(message)s", stream=sys.stderr)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
