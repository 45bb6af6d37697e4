"""Which client library and server program each protocol name stands for.

The bench drives the real code of tcp/ and udp/; this is the only place that knows
their module names, so a protocol that is not built yet is reported as unavailable
instead of crashing the run.
"""

from __future__ import annotations

import importlib
import socket

from hellohi.datagram_relay import MAX_UDP_PAYLOAD

PROTOCOLS = ("tcp", "udp", "udp-raw", "udp-turbo")
# What the default matrices run when --protocols is not given; udp-turbo is added
# to a few workloads only (see bench/matrix.py), to keep `make bench` quick.
DEFAULT_PROTOCOLS = ("tcp", "udp", "udp-raw")
# Protocols whose client sends each frame as one bare datagram: no acks, no
# retransmission, so a message can be lost for good.
PLAIN_PROTOCOLS = ("udp-raw",)


class ProtocolUnavailable(RuntimeError):
    pass


# protocol -> (client module, client class, extra client kwargs, server package, extra server args)
# A kwarg value written as "preset:NAME" is replaced by hellohi.reliable.preset(NAME)
# when the client is made (so importing this module never imports udp/ or hellohi.reliable).
_TABLE = {
    "tcp": ("tcp.client", "TcpChatClient", {}, "tcp", []),
    "udp": ("udp.client", "UdpChatClient", {}, "udp", []),
    # The plain mode without acks: same programs, reliability switched off in the
    # client (the UDP server serves plain and reliable clients on one port).
    "udp-raw": ("udp.client", "UdpChatClient", {"plain": True}, "udp", []),
    # The latency preset (KCP "fast mode"-like) on both sides: client and server.
    "udp-turbo": ("udp.client", "UdpChatClient", {"config": "preset:turbo"}, "udp", ["--preset", "turbo"]),
}


def is_plain(protocol: str) -> bool:
    return protocol in PLAIN_PROTOCOLS


def _resolve(kwargs: dict) -> dict:
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("preset:"):
            from hellohi.reliable import preset

            value = preset(value.removeprefix("preset:"))
        out[key] = value
    return out


def reliability_config(protocol: str):
    """The ReliabilityConfig a UDP protocol's client uses, or None for plain UDP."""
    if protocol not in _TABLE or not protocol.startswith("udp"):
        raise ProtocolUnavailable(f"{protocol!r} is not a UDP protocol; choose from udp, udp-raw, udp-turbo")
    kwargs = _resolve(_TABLE[protocol][2])
    if kwargs.get("plain"):
        return None
    if "config" in kwargs:
        return kwargs["config"]
    from hellohi.reliable import DEFAULT

    return DEFAULT


def client_factory(protocol: str):
    """Returns make(host, port, name) -> an unconnected client with the tcp.client API."""
    if protocol not in _TABLE:
        raise ProtocolUnavailable(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    module_name, class_name, kwargs, _, _ = _TABLE[protocol]
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        kwargs = _resolve(kwargs)
    except (ImportError, AttributeError, ValueError) as error:
        raise ProtocolUnavailable(f"{protocol}: {module_name}.{class_name} is not available ({error})") from None

    def make(host: str, port: int, name: str | None):
        return cls(host, port, name, reconnect=False, **kwargs)

    return make


def server_program(protocol: str) -> tuple[str, list[str]]:
    """(package whose `server` module to run, extra arguments) for a protocol."""
    _, _, _, package, args = _TABLE[protocol]
    try:
        importlib.import_module(f"{package}.server")
    except ImportError as error:
        raise ProtocolUnavailable(f"{protocol}: {package}.server is not available ({error})") from None
    return package, list(args)


def plain_frame_problem(protocol: str, payload: int, sender: str = "bench-alice",
                        recipient: str = "bench-bob") -> str | None:
    """Why a plain-UDP scenario with bodies of `payload` bytes cannot run, or None.

    Plain UDP sends each frame as exactly one datagram (no fragmentation, unlike the
    reliable mode), so a frame longer than the largest UDP payload can never be sent:
    the kernel refuses it (EMSGSIZE). Running such a scenario would only show 100 %
    "loss" that is really a size limit, so the bench reports it as not applicable.
    Both frames a message becomes are checked: SEND (client -> server) and MSG
    (server -> recipient), with the longest ids the bench will use and the scenario's longest
    names (bench.workloads.longest_body_names).
    """
    if not is_plain(protocol):
        return None
    from hellohi.codec import Msg, Send, encode

    body = b"." * payload
    send = len(encode(Send(recipient, "9" * 20, body)))
    deliver = len(encode(Msg(10**20, sender, body)))
    largest = max(send, deliver)
    if largest <= MAX_UDP_PAYLOAD:
        return None
    return (f"not applicable: plain UDP carries one frame per datagram, and a {payload:,}-byte body "
            f"makes a {largest:,}-byte frame, more than the {MAX_UDP_PAYLOAD:,} bytes one UDP datagram can carry")


def udp_socket(host: str) -> socket.socket:
    """A UDP socket of the address family `host` is written in (an IPv6 address has colons)."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
