"""Command-line options shared by the TCP and UDP servers and clients.

Both transports take the same flags, so a lab handout can say "the same
command with udp instead of tcp". Most limits the relay enforces are flags; README and
docs/udp.md list the few that are fixed.
"""

from __future__ import annotations

import argparse
import math

from .codec import DEFAULT_MAX_BODY, DEFAULT_MAX_LINE
from .eventloop import add_loop_argument
from .relay import DEFAULT_MAX_OUTBOUND, RelayLimits
from .store import STORE_WAIT


def host_port(text: str) -> tuple[str, int]:
    """Parse HOST:PORT (IPv6 as [::1]:PORT) for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:5000")
    if not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: port {port} is not from 1 to 65535")
    return host.strip("[]"), int(port)


def listen_port(text: str) -> int:
    """A port for a server to listen on, for argparse: 0 (any free port) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 0 to 65535 (0 picks a free one)")
    return int(text)


# The largest count or size a limit flag takes: more than any machine holds, and small
# enough for SQLite's 64-bit integers (a delivery window is the LIMIT of a query).
MAX_LIMIT = 10**12

# What a MSG in flight costs besides its body: "MSG ID SENDER LENGTH" and two LFs, at most
# 92 bytes (a 19-digit id, a 64-character address name).
MSG_OVERHEAD = 100

# The longest a server's heartbeat or timeout may be: a day is already "never" in a lab,
# and it keeps the heartbeat's milliseconds in HI a number of ordinary size.
MAX_SERVER_SECONDS = 86400.0


def _number(kind: type, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):  # float() reads "nan" and "inf": no limit or timer can use them
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive(kind: type, at_most: float | None = None, because: str = ""):
    """A number above 0, and at most `at_most`; `because` says why, after the error."""
    def parse(text: str):
        value = _number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        if at_most is not None and value > at_most:
            limit = f"{at_most:,}" if at_most >= 10**6 else f"{at_most:g}"
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {limit}{because}")
        return value

    return parse


def at_least(kind: type, low: float, at_most: float | None = None):
    def parse(text: str):
        value = _number(kind, text)
        if value < low or (at_most is not None and value > at_most):
            wanted = f"from {low:g} to {at_most:g}" if at_most is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r} must be {wanted}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def add_server_arguments(parser: argparse.ArgumentParser, default_store: str) -> None:
    defaults = RelayLimits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    parser.add_argument("--port", type=listen_port, default=5000, help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--store", default=default_store, help="SQLite file for messages waiting for offline clients (default: %(default)s)")
    parser.add_argument("--heartbeat", type=positive(float, MAX_SERVER_SECONDS), default=defaults.heartbeat_interval, metavar="SECONDS", help="PING a client silent this long (default: %(default)s)")
    parser.add_argument("--timeout", type=positive(float, MAX_SERVER_SECONDS), default=defaults.heartbeat_timeout, metavar="SECONDS", help="drop a client silent this long (default: %(default)s)")
    parser.add_argument("--max-clients", type=positive(int, MAX_LIMIT), default=defaults.max_clients, help="clients at once, named or not yet; one more gets ERR 503 (UDP: unless a session never proved its address; the oldest such makes room) (default: %(default)s)")
    parser.add_argument("--max-waiting", type=positive(int, MAX_LIMIT), default=defaults.max_waiting_per_recipient, help="stored messages per recipient before ERR 429 (default: %(default)s)")
    parser.add_argument("--window", type=positive(int, MAX_LIMIT), default=defaults.delivery_window, help="messages sent to a client and not yet ACKed (default: %(default)s)")
    parser.add_argument("--window-bytes", type=positive(int, MAX_LIMIT), default=defaults.delivery_window_bytes, metavar="BYTES", help="body bytes sent to a client and not yet ACKed (default: %(default)s)")
    parser.add_argument("--max-body", type=positive(int, DEFAULT_MAX_BODY, because=": clients read no larger body (PROTOCOL.md)"),
                        default=DEFAULT_MAX_BODY, metavar="BYTES", help="largest message body; may be lowered, not raised (default: %(default)s)")
    parser.add_argument("--max-line", type=positive(int, MAX_LIMIT), default=DEFAULT_MAX_LINE, metavar="BYTES", help="longest header line, in bytes before its LF (default: %(default)s)")
    parser.add_argument("--max-outbound", type=positive(int, MAX_LIMIT), default=DEFAULT_MAX_OUTBOUND, metavar="BYTES",
                        help="bytes a client may owe, unread (TCP) or queued while it acknowledges nothing (UDP), before ERR 507 drops it (default: %(default)s)")
    parser.add_argument("--store-wait", type=at_least(float, 0, 60), default=STORE_WAIT, metavar="SECONDS",
                        help="how long a write waits for another program's lock on --store; the whole server waits meanwhile, "
                             "then the clients involved get ERR 500 (default: %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every message, not only connections")
    add_loop_argument(parser)


def limits_from(args: argparse.Namespace) -> RelayLimits:
    if args.timeout <= args.heartbeat:
        raise SystemExit(f"error: --timeout ({args.timeout}) must be longer than --heartbeat ({args.heartbeat})")
    # A full window: its bodies, one more body that may cross it, and each MSG's header and LF.
    # (Over reliable UDP the relay queues a whole window at once, e.g. a backlog on Hello.)
    full_window = args.window_bytes + args.max_body + min(args.window, args.max_waiting) * MSG_OVERHEAD
    if args.max_outbound <= full_window:
        raise SystemExit(f"error: --max-outbound must be larger than --window-bytes plus --max-body plus {MSG_OVERHEAD} "
                         f"bytes per message of --window (here {full_window}), or normal deliveries would trip it")
    return RelayLimits(
        max_clients=args.max_clients,
        max_waiting_per_recipient=args.max_waiting,
        delivery_window=args.window,
        delivery_window_bytes=args.window_bytes,
        heartbeat_interval=args.heartbeat,
        heartbeat_timeout=args.timeout,
    )


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", type=host_port, default=("127.0.0.1", 5000), metavar="HOST:PORT", help="the server's address (default: 127.0.0.1:5000)")
    parser.add_argument("--name", help="name to register with Hello; without it the server calls you by IP:PORT")
    parser.add_argument("--send", action="append", type=parse_send, default=[], metavar="NAME:TEXT", help="send TEXT to NAME (repeatable); makes the client scripted")
    parser.add_argument("--expect", type=non_negative_int, default=0, metavar="N", help="wait until N messages have arrived")
    parser.add_argument("--timeout", type=positive(float), default=10.0, metavar="SECONDS", help="give up connecting after this long; once connected, scripted mode gives up after this long again (default: %(default)s)")
    parser.add_argument("--wait-delivered", action="store_true", help="scripted mode also waits until each sent message is delivered")
    parser.add_argument("--json", action="store_true", help="print one JSON object per event")
    parser.add_argument("--poll", nargs="?", const=1.0, type=positive(float), metavar="IDLE_SECONDS", help="poll mode: collect waiting messages, leave after IDLE_SECONDS of quiet (default 1)")
    parser.add_argument("--heartbeat", type=positive(float), default=None, metavar="SECONDS", help="keep-alive PING interval (default: what the server's HI says)")
    parser.add_argument("--no-reconnect", action="store_true", help="exit instead of reconnecting when the server goes away")
    add_loop_argument(parser)


def parse_send(text: str) -> tuple[str, str]:
    """NAME:TEXT for argparse, as (NAME, TEXT)."""
    name, sep, message = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} should be NAME:TEXT, e.g. --send bob:hello")
    return name, message


def probability(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability; use 0 to 1, e.g. 0.2 for 20%")
    return value


def non_negative(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def add_udp_arguments(parser: argparse.ArgumentParser, client: bool) -> None:
    """The UDP-only flags: reliability tuning and in-process loss injection."""
    from .reliable.config import DEFAULT, LARGEST_UDP_PAYLOAD, PRESETS, smallest_max_datagram

    group = parser.add_argument_group("reliability (UDP)")
    if client:
        group.add_argument("--plain", action="store_true", help="plain UDP: no acks, no retransmission (fire and forget)")
    group.add_argument("--preset", choices=sorted(PRESETS), default="default", help="reliability tuning: default (TCP-like) or turbo (latency, like KCP's fast mode)")
    group.add_argument("--min-rto", type=positive(float), metavar="SECONDS", help="retransmission timeout floor (preset's if not given)")
    group.add_argument("--backoff", type=at_least(float, 1), metavar="FACTOR", help="RTO multiplier per timeout, e.g. 2 or 1.5")
    group.add_argument("--ack-delay", type=non_negative, metavar="SECONDS", help="longest an ack waits to ride on data")
    group.add_argument("--fast-retransmit", type=positive(int), metavar="N", help="retransmit a packet once one sent N after it is acked")
    group.add_argument("--max-retries", type=positive(int), metavar="N", help="retransmissions before the peer is given up")
    group.add_argument("--max-datagram", type=at_least(int, smallest_max_datagram(DEFAULT.max_message), LARGEST_UDP_PAYLOAD),
                       metavar="BYTES", help=f"UDP payload per datagram (default {DEFAULT.max_datagram})")
    lossy = parser.add_argument_group("injected impairment (in this process, seeded; no root needed)")
    lossy.add_argument("--loss", type=probability, default=0.0, metavar="P", help="drop each datagram with probability P")
    lossy.add_argument("--duplicate", type=probability, default=0.0, metavar="P", help="deliver a datagram twice with probability P")
    lossy.add_argument("--reorder", type=probability, default=0.0, metavar="P", help="hold a datagram back so later ones overtake it")
    lossy.add_argument("--delay", type=non_negative, default=0.0, metavar="MS", help="extra one-way delay in milliseconds")
    lossy.add_argument("--jitter", type=non_negative, default=0.0, metavar="MS", help="random extra delay up to MS")
    lossy.add_argument("--seed", type=int, default=1, help="random seed: the same seed drops the same datagrams (default: %(default)s)")
    lossy.add_argument("--impair", choices=("send", "receive", "both"), default="both", help="which direction to impair (default: %(default)s)")


def reliability_from(args: argparse.Namespace):
    """The ReliabilityConfig the UDP flags ask for; a clear error if they contradict each other."""
    from .reliable.config import preset

    changes = {
        "min_rto": args.min_rto,
        "backoff": args.backoff,
        "ack_delay": args.ack_delay,
        "fast_retransmit_threshold": args.fast_retransmit,
        "max_retries": args.max_retries,
        "max_datagram": args.max_datagram,
    }
    config = preset(args.preset)
    changes = {key: value for key, value in changes.items() if value is not None}
    if "min_rto" in changes:
        changes["initial_rto"] = max(config.initial_rto, changes["min_rto"])
        changes["max_rto"] = max(config.max_rto, changes["initial_rto"])
    try:
        return config.with_changes(**changes)
    except ValueError as error:
        raise SystemExit(f"error: {error}; check the reliability flags") from None
