"""Helpers the TCP and UDP integration tests share."""

from __future__ import annotations

import asyncio

from hellohi.launcher import start_server


class Servers:
    """Starts `python -m {transport}.server` processes on 127.0.0.1 and stops them all at the end."""

    def __init__(self, transport: str, tmp_path):
        self.transport, self.tmp_path = transport, tmp_path
        self.started = []

    def __call__(self, *extra: str, port: int = 0):
        with open(self.tmp_path / "server.log", "a") as log:
            process = start_server(self.transport, ["--store", str(self.tmp_path / "store.sqlite3"), *extra], port=port, stderr=log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


async def next_of(client, kind: type, timeout: float = 5.0):
    """The client's next event of `kind`, skipping others; fails the test after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        event = await client.next_event(timeout=left)
        if isinstance(event, kind):
            return event
    raise AssertionError(f"{client.name} got no {kind.__name__} within {timeout} s")
