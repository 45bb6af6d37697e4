"""Before a run against `--server`: does a hellohi server answer there?

Without this check, a wrong address or a firewall makes every scenario of the
run fail on its own, each after waiting out its timeout, with the same error
eleven times over. One Hello per transport first gives one line instead, with
what to do about it.
"""

from __future__ import annotations

import socket
import time

from hellohi.datagram_client import padded_plain_hello

from .clients import udp_socket

WAIT = 3.0  # seconds for an answer: far more than any round trip between two computers
UDP_TRIES = 3  # plain UDP Hellos sent (one may be lost on the way, or its HI on the way back)


def transport_of(protocol: str) -> str:
    """"TCP" or "UDP": what a bench protocol runs over."""
    return "TCP" if protocol == "tcp" else "UDP"


def server_problem(host: str, port: int, protocols: list[str], wait: float = WAIT) -> str | None:
    """None if a hellohi server answers Hello at host:port over every transport the
    protocols need; else one line saying what failed and how to fix it."""
    for transport in sorted({transport_of(protocol) for protocol in protocols}):
        why = _tcp_hello(host, port, wait) if transport == "TCP" else _udp_hello(host, port, wait)
        if why is None:
            continue
        if isinstance(why, _Stranger):  # the port is taken: starting a server there, or a firewall, is no fix
            return (f"no hellohi server answers at {host}:{port} over {transport}: {why}; another program "
                    f"listens on that port. Correct --server: the hellohi server prints the address and port "
                    f"it listens on when it starts")
        return (f"no hellohi server answers at {host}:{port} over {transport}: {why}. Start one on that "
                f"computer (make server-{transport.lower()} HOST=0.0.0.0 PORT={port}), let {transport} port "
                f"{port} through its firewall, or correct --server")
    return None


class _Stranger(str):
    """Why the check failed, when something did answer there: a program other than hellohi."""


def _tcp_hello(host: str, port: int, wait: float) -> str | None:
    try:
        sock = socket.create_connection((host, port), timeout=wait)
    except ConnectionRefusedError:
        return "nothing listens on that port (connection refused)"
    except socket.timeout:
        return f"no answer to a connection within {wait:g} s (a firewall dropping packets, or no such host)"
    except OSError as error:
        return error.strerror or str(error)
    with sock:
        try:
            sock.sendall(b"Hello\n")
            answer = sock.makefile("rb").readline(200)
        except socket.timeout:
            return _Stranger(f"it took the connection but did not answer Hello within {wait:g} s")
        except OSError as error:
            return error.strerror or str(error)
        _say_bye(sock)
    return _not_hi(answer)


def _say_bye(sock: socket.socket) -> None:
    """Leave politely, so the server frees the session at once; a stranger may have hung up already."""
    try:
        sock.send(b"BYE\n")
    except OSError:
        pass


def _udp_hello(host: str, port: int, wait: float) -> str | None:
    try:
        with udp_socket(host) as sock:
            sock.connect((host, port))
            # Padded: until our address is proven, the server sends it no more bytes than it got.
            hello = padded_plain_hello(b"Hello\n")
            deadline = time.monotonic() + wait
            for _ in range(UDP_TRIES):
                sock.send(hello)
                sock.settimeout(max(min(wait / UDP_TRIES, deadline - time.monotonic()), 0.01))
                try:
                    answer = sock.recv(65535)
                except socket.timeout:
                    continue  # lost on the way there or back: plain UDP does not retry, we do
                _say_bye(sock)
                return _not_hi(answer)
    except ConnectionRefusedError:  # an ICMP "port unreachable" came back
        return "nothing listens on that port (port unreachable)"
    except OSError as error:
        return error.strerror or str(error)
    return f"no answer to {UDP_TRIES} Hellos within {wait:g} s (a firewall dropping packets, or no such host)"


def _not_hi(answer: bytes) -> str | None:
    if answer[:2].upper() == b"HI":
        return None
    if not answer:
        return _Stranger("the connection was closed without an answer")
    shown = answer.split(b"\n", 1)[0].rstrip(b"\r")[:60].decode(errors="replace")
    return _Stranger(f"it answered {shown!r}, which is not a hellohi server's HI")
