"""`make demo-tcp`: the whole TCP story in one narrated run on loopback.

The server runs as its own process (its log lines start with [server]); alice,
bob and carol are clients in this process, and every frame they send (->) or
receive (<-) is printed as it crosses the wire. Steps:

 1. the server binds and listens on an ephemeral port
 2. bob connects; the server accepts; Hello -> HI
 3. carol connects, registers, and leaves (so the server knows her name)
 4. alice -> bob, both online: delivered live; alice sees stored then delivered
 5. alice -> carol, carol offline: the server stores it
 6. the server is killed with SIGKILL and restarted on the same store;
    alice and bob reconnect on their own
 7. carol connects and receives the stored message exactly once
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from hellohi import eventloop
from hellohi.client_session import MessageReceived, Registered, StatusChanged
from hellohi.launcher import ServerProcess, start_server
from hellohi.narration import frame_tracer, say, step, wait_for
from tcp.client import TcpChatClient


def launch(store: Path, port: int = 0) -> ServerProcess:
    return start_server("tcp", ["--store", str(store), "-v"], port=port, stderr=sys.stdout)


async def demo(workdir: Path) -> int:
    store = workdir / "demo-tcp.sqlite3"
    step(1, "server: bind and listen")
    server = launch(store)
    say("server", server.banner)
    clients: list[TcpChatClient] = []
    try:
        step(2, "bob connects: the server accepts, Hello -> HI")
        bob = TcpChatClient(server.host, server.port, "bob", trace=frame_tracer("bob"))
        clients.append(bob)
        await bob.connect()

        step(3, "carol connects, says Hello, and leaves")
        carol = TcpChatClient(server.host, server.port, "carol", trace=frame_tracer("carol"), reconnect=False)
        await carol.connect()
        await carol.close()
        # The server logs from its own process: a moment for its "carol left" to land in this step.
        await asyncio.sleep(0.2)

        step(4, "alice -> bob, both online: relayed live")
        alice = TcpChatClient(server.host, server.port, "alice", trace=frame_tracer("alice"))
        clients.append(alice)
        await alice.connect()
        ref = alice.send("bob", "hi bob, this is alice")
        await wait_for(alice, StatusChanged, ref=ref, state="stored")
        got = await wait_for(bob, MessageReceived)
        say("bob", f"got {got.body.decode()!r} from {got.sender}")
        await wait_for(alice, StatusChanged, ref=ref, state="delivered")
        say("alice", "✓✓ delivered to bob")

        step(5, "alice -> carol while carol is offline: stored")
        ref = alice.send("carol", "carol, read this when you are back")
        stored = await wait_for(alice, StatusChanged, ref=ref, state="stored")
        say("alice", f"✓ stored on the server as #{stored.id}; carol is offline")

        step(6, "the server is killed (SIGKILL) and restarted on the same store")
        server.kill()
        say("demo", f"server killed: exit status {server.process.returncode}; no chance to save anything")
        server = launch(store, port=server.port)
        say("server", server.banner)
        say("demo", "alice and bob saw their connections close: they reconnect on their own")
        for client in (alice, bob):
            await wait_for(client, Registered, timeout=15)

        step(7, "carol connects and receives the stored message")
        received: list[MessageReceived] = []
        carol = TcpChatClient(server.host, server.port, "carol", trace=frame_tracer("carol"), reconnect=False)
        clients.append(carol)
        await carol.connect()
        received.append(await wait_for(carol, MessageReceived))
        say("carol", f"got {received[0].body.decode()!r} from {received[0].sender} (#{received[0].id})")
        # Give any duplicate the chance to show up before we count.
        while (event := await carol.next_event(timeout=0.5)) is not None:
            if isinstance(event, MessageReceived):
                received.append(event)
                say("carol", f"got it again: #{event.id} (a duplicate)")
        if len(received) != 1:
            say("demo", f"FAILED: carol received {len(received)} copies")
            return 1
        say("demo", "carol received the message exactly once, after a SIGKILL of the server. Done.")
        return 0
    finally:
        for client in clients:
            await client.close()
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tcp.demo", description=__doc__.split("\n")[0])
    eventloop.add_loop_argument(parser)
    args = parser.parse_args(argv)
    loop = eventloop.apply_choice(args.loop)  # the server process inherits the choice
    with tempfile.TemporaryDirectory(prefix="hellohi-demo-") as workdir:
        try:
            sys.exit(eventloop.run(demo(Path(workdir)), loop))
        except KeyboardInterrupt:
            sys.exit(130)
        except subprocess.SubprocessError as error:
            sys.exit(f"demo failed: {error}")


if __name__ == "__main__":
    main()
