"""`make demo-udp`: what it takes to make UDP deliver, narrated on loopback.

The server and the clients run in this one process, so the demo can show
everyone's counters; every line says who is speaking. Steps:

 1. the server binds a UDP socket (no listen, no accept: UDP has no connections)
 2. bob: Hello -> HI; the server issues a session token
 3. carol says Hello and leaves, so the server knows her name
 4. alice -> bob, both online: relayed live, stored then delivered
 5. alice -> carol while carol is offline: stored; carol comes back and gets it
 6. the same traffic with 20% of datagrams dropped (seeded, inside the process):
    drops, retransmissions and suppressed duplicates as they happen, then
    "N of N delivered exactly once, in order"
 7. plain UDP (no acks, no retransmission) under the same loss: what is lost
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from hellohi import eventloop
from hellohi.client_session import DuplicateDropped, MessageReceived, StatusChanged
from hellohi.datagram_relay import DatagramRelay
from hellohi.narration import frame_tracer, say, step, wait_for
from hellohi.reliable import DEFAULT, Impairment
from hellohi.reliable.packet import PacketError, decode, is_reliable
from hellohi.relay import Relay, RelayLimits
from hellohi.store import MessageStore
from udp.client import UdpChatClient
from udp.server import UdpRelayServer

LOSS = 0.20
MESSAGES = 40


def describe(datagram: bytes) -> str:
    """A short name for a datagram, for the loss narration."""
    if not is_reliable(datagram):
        first_line = datagram.split(b"\n", 1)[0].decode("ascii", "replace")
        return f"plain datagram {first_line[:30]!r}"
    try:
        packet = decode(datagram)
    except PacketError:
        return "a malformed datagram"
    if packet.number:
        return f"data packet #{packet.number}"
    return f"ack (all below #{packet.cumulative_ack})"


def link_narrator(path: str, quiet: bool):
    verbs = {"drop": "dropped", "duplicate": "duplicated", "reorder": "held back (reordered)"}

    def tell(what: str, datagram: bytes) -> None:
        if not quiet:
            say("network", f"{path}: {verbs.get(what, what)} {describe(datagram)}")

    return tell


async def collect(client: UdpChatClient, count: int, quiet_for: float, limit: float) -> tuple[list[bytes], int]:
    """Message bodies received until `count` arrived or nothing came for `quiet_for` s; and duplicates seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    bodies: list[bytes] = []
    duplicates = 0
    while len(bodies) < count and (left := deadline - loop.time()) > 0:
        event = await client.next_event(timeout=min(quiet_for, left))
        if event is None:
            break
        if isinstance(event, MessageReceived):
            bodies.append(event.body)
        elif isinstance(event, DuplicateDropped):
            duplicates += 1
    return bodies, duplicates


class Demo:
    def __init__(self, store: Path, quiet: bool):
        self.quiet = quiet
        self.relay = Relay(MessageStore(str(store)), RelayLimits())
        self.datagram_relay = DatagramRelay(self.relay, DEFAULT, new_token=lambda: secrets.randbits(64),
                                            trace=lambda text: say("server", text))
        self.server = UdpRelayServer(self.datagram_relay)
        self.clients: list[UdpChatClient] = []
        self.host, self.port = "127.0.0.1", 0

    def client(self, name: str, plain: bool = False, lossy: bool = False, trace_frames: bool = True) -> UdpChatClient:
        impair_send = impair_receive = None
        if lossy:
            # Loss starts at 0 and is switched on after Hello, so both modes face it
            # on the same traffic (a plain Hello that is lost is simply never answered).
            impair_send = Impairment(seed=len(self.clients) * 2 + 1, trace=link_narrator(f"{name} -> server", self.quiet))
            impair_receive = Impairment(seed=len(self.clients) * 2 + 2, trace=link_narrator(f"server -> {name}", self.quiet))

        def link_trace(text: str) -> None:
            say(name, text)

        client = UdpChatClient(
            self.host, self.port, name, plain=plain, reconnect=False,
            trace=frame_tracer(name) if trace_frames else None,
            link_trace=None if self.quiet else link_trace,
            impair_send=impair_send, impair_receive=impair_receive,
        )
        self.clients.append(client)
        return client

    async def run(self) -> int:
        step(1, "server: bind a UDP socket (no listen(), no accept(): UDP has no connections)")
        self.host, self.port = await self.server.start("127.0.0.1", 0)
        say("server", f"hellohi udp server listening on {self.host}:{self.port}")

        step(2, "bob: Hello -> HI; the server gives bob's session a token")
        bob = self.client("bob")
        await bob.connect()
        say("bob", f"session token {bob.link.token:#018x}; every datagram carries it from now on")
        say("bob", "(the Hello datagram was padded to 1200 bytes: until bob proves his address, "
                   "the server sends him no more bytes than he sent)")

        step(3, "carol says Hello and leaves, so the server knows her name")
        carol = self.client("carol")
        await carol.connect()
        await carol.close()

        step(4, "alice -> bob, both online: relayed live")
        alice = self.client("alice")
        await alice.connect()
        ref = alice.send("bob", "hi bob, this is alice over UDP")
        await wait_for(alice, StatusChanged, ref=ref, state="stored")
        got = await wait_for(bob, MessageReceived)
        say("bob", f"got {got.body.decode()!r} from {got.sender}")
        await wait_for(alice, StatusChanged, ref=ref, state="delivered")
        say("alice", "✓✓ delivered to bob")

        step(5, "alice -> carol while carol is offline: stored, then delivered when she returns")
        ref = alice.send("carol", "carol, read this when you are back")
        stored = await wait_for(alice, StatusChanged, ref=ref, state="stored")
        say("alice", f"✓ stored on the server as #{stored.id}; carol is offline")
        carol = self.client("carol")
        await carol.connect()
        got = await wait_for(carol, MessageReceived)
        say("carol", f"got {got.body.decode()!r} from {got.sender} (#{got.id})")
        for client in (alice, bob, carol):
            await client.close()

        reliable_ok = await self.lossy_round(6, plain=False)
        await self.lossy_round(7, plain=True)
        return 0 if reliable_ok else 1

    async def lossy_round(self, number: int, plain: bool) -> bool:
        kind = "plain UDP, no acks and no retransmission" if plain else "reliable UDP: acks and retransmission"
        step(number, f"{MESSAGES} messages alice -> bob with {LOSS:.0%} of datagrams dropped each way ({kind})")
        suffix = "-plain" if plain else "-lossy"
        sender_name, receiver_name = "alice" + suffix, "bob" + suffix
        sender = self.client(sender_name, plain=plain, lossy=True, trace_frames=False)
        receiver = self.client(receiver_name, plain=plain, lossy=True, trace_frames=False)
        await sender.connect(), await receiver.connect()
        links = [_impairments(client) for client in (sender, receiver)]
        for to_server, from_server in links:
            to_server.loss = from_server.loss = LOSS
            from_server.duplicate = 0.05  # the network may also deliver a datagram twice
        expected = [f"message {i:02d}".encode() for i in range(MESSAGES)]
        for body in expected:
            sender.send(receiver_name, body)
            # Typed one by one, as in a chat: each message travels in its own datagram
            # (a burst would share datagrams, and fewer would be at risk).
            await asyncio.sleep(0.02)
        bodies, duplicates = await collect(receiver, MESSAGES, quiet_for=3.0 if plain else 8.0, limit=15.0)
        dropped = sum(to_server.dropped + from_server.dropped for to_server, from_server in links)
        if plain:
            lost = MESSAGES - len(bodies)
            say("demo", f"plain UDP: {len(bodies)} of {MESSAGES} arrived; {lost} lost for good "
                        f"({dropped} datagrams dropped, and nobody noticed)")
            for (to_server, from_server), client in zip(links, (sender, receiver)):
                to_server.loss = from_server.loss = 0.0
                await client.close()
            return True
        stats = [sender.stats, receiver.stats]
        server_side = [self.datagram_relay.session_stats(name) for name in (sender_name, receiver_name)]
        retransmitted = sum(s.retransmitted for s in stats + server_side if s is not None)
        suppressed = sum(s.duplicates_dropped for s in stats + server_side if s is not None) + duplicates
        exact = bodies == expected
        verdict = "delivered exactly once, in order" if exact else "NOT delivered exactly once in order"
        say("demo", f"{len(bodies)} of {MESSAGES} {verdict}: {dropped} datagrams dropped, "
                    f"{retransmitted} retransmissions, {suppressed} duplicates suppressed")
        for name, stat in zip((sender_name, receiver_name), stats):
            srtt = f"{stat.srtt * 1000:.1f} ms" if stat.srtt is not None else "no sample yet"
            say(name, f"sent {stat.packets_sent} data packets, retransmitted {stat.retransmitted} "
                      f"({stat.fast_retransmits} fast), {stat.out_of_order_buffered} buffered out of order, "
                      f"{stat.duplicates_dropped} duplicates dropped; SRTT {srtt}, RTO {stat.rto * 1000:.0f} ms")
        for (to_server, from_server), client in zip(links, (sender, receiver)):
            to_server.loss = from_server.loss = 0.0
            from_server.duplicate = 0.0
            await client.close()
        return exact


def _impairments(client: UdpChatClient) -> tuple[Impairment, Impairment]:
    """The (to the server, from the server) impairments of a client made with lossy=True."""
    assert client.impair_send is not None and client.impair_receive is not None
    return client.impair_send, client.impair_receive


async def main_async(workdir: Path, quiet: bool) -> int:
    demo = Demo(workdir / "demo-udp.sqlite3", quiet)
    try:
        return await demo.run()
    finally:
        for client in demo.clients:
            await client.close()
        demo.server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m udp.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help="do not narrate every dropped datagram and retransmission")
    eventloop.add_loop_argument(parser)
    args = parser.parse_args(argv)
    loop = eventloop.apply_choice(args.loop)
    with tempfile.TemporaryDirectory(prefix="hellohi-demo-") as workdir:
        try:
            sys.exit(eventloop.run(main_async(Path(workdir), args.quiet), loop))
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
