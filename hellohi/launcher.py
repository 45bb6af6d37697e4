"""Start a hellohi server as a child process and learn its port.

Demos, tests and the bench all run the real server program, exactly as a
student would from a shell. With `--port 0` the kernel picks a free port; the
server's first line on stdout says which one.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .relay import format_peer
from .store import MessageStore, StoreUnavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on \[?([^\]\s]+?)\]?:(\d+)")


class ServerDidNotStart(RuntimeError):
    pass


@dataclass
class ServerProcess:
    transport: str
    args: list[str]
    process: subprocess.Popen
    host: str
    port: int
    banner: str = field(default="")

    @property
    def address(self) -> str:
        return format_peer((self.host, self.port))

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last commit; what a crash looks like."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    transport: str,
    extra_args: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    stderr=None,
    command_prefix: list[str] | None = None,
    timeout: float = 15.0,
) -> ServerProcess:
    """Run `python -m {transport}.server --host HOST --port PORT EXTRA_ARGS`.

    `command_prefix` runs it through another command, e.g. `ip netns exec NS`.
    """
    argv = [sys.executable, "-m", f"{transport}.server", "--host", host, "--port", str(port), *extra_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        (command_prefix or []) + argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
    )
    assert process.stdout is not None  # stdout=PIPE
    # The banner comes quickly; a server that fails says why on stderr and exits.
    timer = _kill_after(process, timeout)
    try:
        banner = process.stdout.readline()
    except BaseException:  # Ctrl-C while we wait: the server must not outlive the program that started it
        process.kill()
        process.wait()
        raise
    finally:
        timer.cancel()
    match = LISTENING.search(banner)
    if not match:
        process.kill()
        process.wait()
        said = f": {banner.strip()}" if banner.strip() else " and printed nothing"
        raise ServerDidNotStart(f"{' '.join(argv)} did not start (exit status {process.returncode}){said}")
    return ServerProcess(transport, argv, process, match.group(1), int(match.group(2)), banner.strip())


def _kill_after(process: subprocess.Popen, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, process.kill)
    timer.daemon = True
    timer.start()
    return timer


def announce(transport: str, host: str, port: int, store: str) -> None:
    """Print the line start_server() reads (so --port 0 works): keep the two in step."""
    print(f"hellohi {transport} server listening on {format_peer((host, port))} (store: {store})", flush=True)


def cannot_listen(host: str, port: int, error: OSError) -> SystemExit:
    """The one line both servers exit with when they cannot bind. The kernel's own words
    ("Address already in use"): asyncio's TCP server wraps them in a sentence of its own.
    A host name that does not resolve is a gaierror, whose numbers are not errno's."""
    if isinstance(error, socket.gaierror):
        reason = error.strerror or str(error)
    else:
        reason = os.strerror(error.errno) if error.errno else str(error)
    return SystemExit(f"error: cannot listen on {format_peer((host, port))}: {reason}; pick another --port or --host")


def close_store(store: MessageStore, log: logging.Logger) -> None:
    """Close the store as a server stops. If its last writes fail (another program still
    holds the file's lock, the disk is full), one line in the log says what that means,
    not a traceback: nobody was told about those writes, so nothing confirmed is lost."""
    try:
        store.close()
    except StoreUnavailable as error:
        log.warning("could not write the message store as the server stopped (%s): messages no "
                    "client was told were stored are not kept (their senders send them again), "
                    "and messages acknowledged since its last write may be delivered again", error)


async def until_stopped() -> None:
    """Return when the server process gets SIGINT (Ctrl-C) or SIGTERM."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except NotImplementedError:  # Windows: only Unix loops have it; Python's own handler then
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    await stop.wait()
