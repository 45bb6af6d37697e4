"""Which client library and server program each protocol name stands for.

The bench drives the real code of tcp/ and udp/; this is the only place that knows
their module names, so a protocol that is not built yet is reported as unavailable
instead of crashing the run.
"""

from __future__ import annotations

import importlib

PROTOCOLS = ("tcp", "udp", "udp-raw")


class ProtocolUnavailable(RuntimeError):
    pass


# protocol -> (client module, client class, extra client kwargs, server package, extra server args)
_TABLE = {
    "tcp": ("tcp.client", "TcpChatClient", {}, "tcp", []),
    "udp": ("udp.client", "UdpChatClient", {}, "udp", []),
    # The plain mode without acks: same programs, reliability switched off in the
    # client (the UDP server serves plain and reliable clients on one port).
    "udp-raw": ("udp.client", "UdpChatClient", {"plain": True}, "udp", []),
}


def client_factory(protocol: str):
    """Returns make(host, port, name) -> an unconnected client with the tcp.client API."""
    if protocol not in _TABLE:
        raise ProtocolUnavailable(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    module_name, class_name, kwargs, _, _ = _TABLE[protocol]
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as error:
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
