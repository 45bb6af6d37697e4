"""Helpers the TCP and UDP integration tests share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from hellohi.client_session import MessageReceived, StatusChanged
from hellohi.launcher import REPO_ROOT, start_server


class Servers:
    """Starts `python -m {transport}.server` processes on 127.0.0.1 and stops them all at the end."""

    def __init__(self, transport: str, tmp_path):
        self.transport, self.tmp_path = transport, tmp_path
        self.started = []

    def __call__(self, *extra: str, port: int = 0):
        # A server started after another ended takes over its store (the restart tests);
        # one started while another runs gets a store of its own, as a server claims its store.
        running = sum(process.process.poll() is None for process in self.started)
        store = self.tmp_path / ("store.sqlite3" if not running else f"store-{len(self.started)}.sqlite3")
        with open(self.tmp_path / "server.log", "a") as log:
            process = start_server(self.transport, ["--store", str(store), *extra], port=port, stderr=log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Return as soon as condition() is true; fail the test, saying `what` never happened, after `timeout`.

    For a state another process reaches (a line in its log, a process started): the
    test goes on the moment it is there, and a slow machine only takes longer."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


async def wait_until_async(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """wait_until() inside the event loop, which goes on running meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


def times_logged(log: Path, text: str) -> int:
    """How many times `text` is in the log file (0 while it does not exist)."""
    try:
        return log.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def refusing_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1"):
    """A port on `host` that nothing listens on for as long as the block lasts; yields its number.

    A port bound and closed again may be another program's by the time the test uses it, and
    port 9 may have a discard service. So the port is held by a socket that answers nobody:
    over TCP one bound but never listening (a connect is refused at once); over UDP one
    connected to its own address, which takes no datagram from anybody else, so the kernel
    answers theirs with ICMP port unreachable, as for a closed port. The UDP one sets
    SO_REUSEADDR, so that a test can open a socket of its own on the port later (a server
    that comes back) by setting it too; a program that binds the port the ordinary way
    cannot. (Not over TCP: there a listener with SO_REUSEADDR, as asyncio's servers set
    it, could take a port bound by a socket that does not listen.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as holder:
        if kind == socket.SOCK_DGRAM:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind((host, 0))
            holder.connect(holder.getsockname())
        else:
            holder.bind((host, 0))
        yield holder.getsockname()[1]


def registered_client_process(argv: list[str]) -> subprocess.Popen:
    """A client command line run with --json, returned once it has printed its "registered" event."""
    client = subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    while json.loads(client.stdout.readline())["event"] != "registered":
        pass
    return client


async def next_of(client, kind: type, timeout: float = 5.0):
    """The client's next event of `kind`, skipping others; fails the test after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        event = await client.next_event(timeout=left)
        if isinstance(event, kind):
            return event
    raise AssertionError(f"{client.name} got no {kind.__name__} within {timeout} s")


async def live_relay(make_client, port: int):
    """alice -> bob, both online: (bob's MessageReceived, alice's ref, alice's two STATUS states)."""
    alice, bob = make_client("127.0.0.1", port, "alice"), make_client("127.0.0.1", port, "bob")
    await alice.connect(), await bob.connect()
    ref = alice.send("bob", "hi bob")
    message = await next_of(bob, MessageReceived)
    states = [(await next_of(alice, StatusChanged)).state for _ in range(2)]
    await alice.close(), await bob.close()
    return message, ref, states


async def ring_of_clients(make_client, port: int, count: int, per_client: int):
    """`count` clients each send `per_client` messages to the next one in a ring.

    Returns each client's received bodies, in arrival order, and the one event
    (if any) each got in a further 0.3 s: a duplicate would show up there.
    """
    clients = [make_client("127.0.0.1", port, f"c{n}") for n in range(count)]
    await asyncio.gather(*(client.connect() for client in clients))
    for n, client in enumerate(clients):
        for k in range(per_client):
            client.send(f"c{(n + 1) % count}", f"{n}:{k}")

    async def collect(client):
        return [(await next_of(client, MessageReceived, timeout=20)).body for _ in range(per_client)]

    inboxes = await asyncio.gather(*(collect(client) for client in clients))
    extra = await asyncio.gather(*(client.next_event(timeout=0.3) for client in clients))
    await asyncio.gather(*(client.close() for client in clients))
    return inboxes, extra
