"""Workloads that drive a real hellohi server with the real client library.

Each workload is an async function (endpoint, scenario) -> dict of figures. Latencies
are measured on this machine's monotonic clock, so:
- "round_trip" figures (Hello/HI, relay echo) need no clock synchronisation anywhere;
- "one_way" figures (alice -> server -> bob in the throughput workloads) are only
  reported when alice and bob run in this same process, which they always do here.

A message id travels in the first 16 bytes of every body (decimal digits, readable
in a capture), so the receiver can tell new, reordered and duplicated messages
apart (see bench/stats.py DeliveryLedger). That makes 16 bytes, the smallest
payload the issue asks for, the smallest a body workload can send.
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from hellohi.client_session import MessageReceived, Registered, StatusChanged
from hellohi.waiting import event_set_within

from .clients import client_factory, is_plain, reliability_config, udp_socket
from .stats import ONE_WAY, ROUND_TRIP, DeliveryLedger, LatencyRecorder, rate

WORKLOADS = ("hello", "hello-raw", "relay", "throughput", "throughput-raw", "fanin", "fanout", "drain")
ID_WIDTH = 16  # decimal digits of the message id at the start of each body
MAX_ID = 10**ID_WIDTH - 1

# Plain UDP never retransmits: a message that has not arrived within this many seconds
# will not arrive at all, so waiting the full `timeout` for it (5 s by default) only
# makes the run slow. One second is far more than any round trip on loopback or on
# the emulated links (tens of ms); reliable protocols keep the full `timeout`.
PLAIN_LOSS_WAIT = 1.0

now_ns = time.perf_counter_ns


def _id_number(value) -> str:
    """A link field's value as an id writes it: short (0.05, 10, not 10.0), yet never the same for
    two different values, as {:g} alone made loss 0.0500001 and 0.05 (its 6 digits) or seed
    1234567 and 1234568 (1.23457e+06)."""
    if isinstance(value, int):
        return str(value)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


@dataclass
class Scenario:
    """One cell of the matrix. Everything needed to repeat it is in here."""

    workload: str
    protocol: str = "tcp"
    count: int = 500  # messages (or pings) measured, after the warm-up
    payload: int = 64  # body bytes
    clients: int = 1  # fan-in / fan-out width
    window: int = 256  # bulk workloads: messages in flight (sent, not yet received)
    warmup: int = 20  # hello, hello-raw, relay, kcp-pingpong: pings sent first and not measured
    timeout: float = 5.0  # seconds to wait for an answer or the next arrival (udp-raw: at most 1, loss_wait)
    seed: int = 1
    link: str = "loopback"  # "emulated" (--link), or "remote" (--server: the network to another computer)
    link_config: dict = field(default_factory=dict)
    round: int = 1  # which pass over the matrix (--rounds): the same configuration, measured again

    @property
    def id(self) -> str:
        parts = [self.workload, self.protocol, f"{self.payload}B", f"n{self.count}"]
        if self.workload in ("fanin", "fanout"):
            parts.append(f"c{self.clients}")
        if self.link != "loopback":
            parts.append(self.link)
            parts += [f"{k}{_id_number(v)}" for k, v in sorted(self.link_config.items()) if self._names_the_link(k, v)]
        if self.round > 1:
            parts.append(f"round{self.round}")
        return "-".join(parts)

    def _names_the_link(self, field: str, value) -> bool:
        """Whether an emulated link's field goes into the id: the impairments in use, and what
        makes two such links differ (a seed other than the default 1; reorder_ms once packets
        are reordered), so that two different links never share an id."""
        if field == "seed":
            return value != 1
        if field == "reorder_ms":
            return bool(self.link_config.get("reorder"))
        return bool(value)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def plain(self) -> bool:
        """True for protocols without acks or retries (udp-raw)."""
        return is_plain(self.protocol)

    @property
    def loss_wait(self) -> float:
        """Seconds to wait for a message before counting it lost (see PLAIN_LOSS_WAIT)."""
        return min(self.timeout, PLAIN_LOSS_WAIT) if self.plain else self.timeout


@dataclass
class Endpoint:
    """The server a workload talks to, and the names its clients take there."""

    host: str
    port: int
    # Appended to every client name. A server the bench starts is fresh (its own store),
    # so names need nothing; a server that outlives the run (--server) may still hold
    # messages stored for the names an earlier run used (a drain cut short, an echo to
    # an alice who left), and they would reach this run's clients and be counted with
    # this run's ids. So runner.py gives each scenario there a random suffix of its own.
    name_suffix: str = ""

    def name(self, role: str) -> str:
        """The name of the client playing `role` ("alice", "bob", ...): e.g. bench-alice."""
        return f"bench-{role}{self.name_suffix}"


def make_body(message_id: int, size: int) -> bytes:
    """`size` bytes that start with `message_id` (bench.matrix refuses smaller payloads)."""
    if size < ID_WIDTH:
        raise ValueError(f"a {size}-byte body has no room for the {ID_WIDTH}-digit message id")
    if not 0 <= message_id <= MAX_ID:
        raise ValueError(f"message id {message_id} does not fit in {ID_WIDTH} digits")
    return str(message_id).zfill(ID_WIDTH).encode() + b"." * (size - ID_WIDTH)


def body_id(body: bytes) -> int | None:
    """The message id at the start of `body`, or None (a body the bench did not write:
    counted as foreign). Exactly ID_WIDTH ASCII digits: int() alone would also read a
    short b"12", b" 12", b"+12" or b"1_2", and count a stranger's body as one of ours."""
    digits = body[:ID_WIDTH]
    if len(digits) != ID_WIDTH or not digits.isdigit():  # (bytes.isdigit: ASCII digits only)
        return None
    return int(digits)


async def _event(client, kinds, timeout: float):
    """Next event of one of `kinds` within `timeout` seconds, or None."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        event = await client.next_event(timeout=left)
        if event is None:
            return None
        if isinstance(event, kinds):
            return event


async def _connected(endpoint: Endpoint, protocol: str, name: str):
    client = client_factory(protocol)(endpoint.host, endpoint.port, name)
    client.bench_name = name  # for udp_counters: which client each SRTT/RTO belongs to
    await client.connect(timeout=10.0)
    return client


# What the UDP reliability layer counted (hellohi.reliable.endpoint.EndpointStats),
# summed over the clients of a scenario.
SUMMED_COUNTERS = ("messages_sent", "messages_failed", "packets_sent", "retransmitted", "fast_retransmits",
                   "timeouts", "duplicates_dropped", "out_of_order_buffered", "datagrams_sent",
                   "datagrams_received")


def udp_counters(clients) -> dict | None:
    """The reliability counters of the scenario's UDP clients, or None (tcp, plain UDP).

    They are the *clients'* counters only: packets_sent and retransmitted count
    client -> server data packets (the direction the loss-implied minimum of
    bench/runner.py is computed for); the server's own retransmissions towards the
    clients happen in the server process and are not visible here. SRTT and RTO are
    per client, in milliseconds, as they were at the end of the scenario.
    """
    stats = {getattr(c, "bench_name", f"client{i}"): getattr(c, "stats", None) for i, c in enumerate(clients)}
    stats = {name: st for name, st in stats.items() if st is not None}
    if not stats:
        return None
    out: dict = {"scope": "clients", "clients": len(stats)}
    for key in SUMMED_COUNTERS:
        out[key] = sum(getattr(st, key) for st in stats.values())
    out["srtt_ms"] = {name: st.srtt * 1000 if st.srtt is not None else None for name, st in stats.items()}
    out["rto_ms"] = {name: st.rto * 1000 for name, st in stats.items()}
    return out


def _with_counters(figures: dict, clients) -> dict:
    counters = udp_counters(clients)
    if counters is not None:
        figures["udp_counters"] = counters
    return figures


# --------------------------------------------------------------------- Hello / HI


async def hello(endpoint: Endpoint, sc: Scenario) -> dict:
    """Hello/HI ping-pong on a registered connection, through the client library."""
    client = await _connected(endpoint, sc.protocol, endpoint.name("hello"))
    # connect() already queued the HI of the first Hello as an event: take it off the
    # queue, or every later Hello would be matched with the previous one's HI.
    await _event(client, Registered, sc.timeout)
    rtt = LatencyRecorder(ROUND_TRIP)
    ledger = DeliveryLedger()
    # Hellos that timed out over TCP or UDP with acks: their HIs still come, in order, and
    # must not be taken for a later Hello's (plain UDP may have lost them for good).
    late = 0
    try:
        for i in range(sc.warmup + sc.count):
            measured = i >= sc.warmup
            ping = ledger.next_id() if measured else None
            start = now_ns()
            client.say_hello()
            give_up = time.monotonic() + sc.loss_wait
            answer = await _event(client, Registered, sc.loss_wait)
            while answer is not None and late:  # an earlier Hello's HI
                late -= 1
                answer = await _event(client, Registered, give_up - time.monotonic())
            end = now_ns()
            if answer is None and not sc.plain:
                late += 1
            if answer is not None and measured:
                ledger.arrived(ping)
                rtt.add(end - start)
    finally:
        await client.close()
    return _with_counters({"latency": rtt.summary(), "delivery": ledger.summary().as_dict()}, [client])


def _timed_hellos(sc: Scenario, hello_answered: Callable[[], bool], stop: threading.Event | None = None) -> dict:
    """The hello-raw figures: warmup + count round trips of `hello_answered()`, which
    says Hello and returns True if HI came back in time (False: counted as lost).
    Ends early once `stop` is set (the run was interrupted)."""
    rtt = LatencyRecorder(ROUND_TRIP)
    ledger = DeliveryLedger()
    for i in range(sc.warmup + sc.count):
        if stop is not None and stop.is_set():
            break
        measured = i >= sc.warmup
        ping = ledger.next_id() if measured else None
        start = now_ns()
        if hello_answered() and measured:
            end = now_ns()
            ledger.arrived(ping)
            rtt.add(end - start)
    return {"latency": rtt.summary(), "delivery": ledger.summary().as_dict()}


def hello_raw_blocking(endpoint: Endpoint, sc: Scenario, stop: threading.Event | None = None) -> dict:
    """The same Hello/HI ping-pong from a minimal blocking socket: what the server
    alone costs, without the client library's asyncio machinery (TCP)."""
    with socket.create_connection((endpoint.host, endpoint.port), timeout=sc.timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Lines cut from our own buffer, not sock.makefile(): a file object that once
        # timed out refuses every later read, and one slow HI would end the scenario.
        unread = bytearray()
        late = 0  # Hellos that timed out: TCP loses nothing, so their HIs still come, in order

        def next_line() -> bytes:
            while (end := unread.find(b"\n")) < 0:
                data = sock.recv(65536)  # socket.timeout after sc.timeout (loss_wait over TCP)
                if not data:
                    raise ConnectionError("server closed the connection")
                unread.extend(data)
            line = bytes(unread[:end + 1])
            del unread[:end + 1]
            return line

        def hi() -> None:
            while (line := next_line())[:2].upper() != b"HI":
                if line[:4].upper() == b"PING":
                    sock.sendall(b"PONG" + line[4:])

        def hello_answered() -> bool:
            nonlocal late
            sock.sendall(b"Hello\n")
            try:
                while late:  # the late HIs first: each answers an earlier Hello, not this one
                    hi()
                    late -= 1
                hi()
                return True
            except socket.timeout:
                late += 1
                return False

        sock.sendall(b"Hello %s\n" % endpoint.name("raw").encode())
        hi()
        figures = _timed_hellos(sc, hello_answered, stop)
        sock.sendall(b"BYE\n")
    return figures


def hello_raw_blocking_plain_udp(endpoint: Endpoint, sc: Scenario, stop: threading.Event | None = None) -> dict:
    """The same over plain UDP (udp-raw), which needs no client layer at all: as in
    the TCP version, a minimal blocking socket writes the frames itself, one per
    datagram, and reads the answers. What plain UDP adds is the server's rule against
    amplification: the first Hello is padded (so the server may answer it) and a PING
    of the server's, which checks our address, is answered with PONG."""
    from hellohi.datagram_client import padded_plain_hello

    with udp_socket(endpoint.host) as sock:
        sock.connect((endpoint.host, endpoint.port))

        def hi() -> bool:
            """True when a HI came within the socket's timeout, False if nothing did (plain UDP may lose it)."""
            answered = False
            while not answered:
                try:
                    datagram = sock.recv(65535)
                except socket.timeout:
                    return False
                # The server sends one frame per plain datagram; reading it as lines
                # costs nothing and would take several just as well.
                for line in datagram.splitlines():
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"HI":
                        answered = True
                    elif verb == b"PING":
                        sock.send(b"PONG" + line[4:] + b"\n")
                    elif verb == b"ERR":
                        raise ConnectionError(f"hello-raw over {sc.protocol}: the server answered {line.decode(errors='replace')}")
            return True

        def hello_answered() -> bool:
            sock.send(b"Hello\n")
            return hi()

        sock.settimeout(sc.timeout)
        sock.send(padded_plain_hello(b"Hello %s\n" % endpoint.name("raw").encode()))
        if not hi():
            raise ConnectionError(f"no HI from {endpoint.host}:{endpoint.port} within {sc.timeout} s")
        # Set once, not per round trip: every settimeout() is a system call (FIONBIO).
        sock.settimeout(sc.loss_wait)
        figures = _timed_hellos(sc, hello_answered, stop)
        sock.send(b"BYE\n")
    return figures


def hello_raw_blocking_udp(endpoint: Endpoint, sc: Scenario, stop: threading.Event | None = None) -> dict:
    """The same over UDP with acks: a blocking socket around the client's sans-I/O
    datagram layer (hellohi.datagram_client.DatagramLink, the one under
    udp/client.py), so sessions, acks and retransmissions are the real ones. Like the
    TCP version, which writes `Hello` and reads lines, it sends a ready-made Hello
    message and looks at the start of each message for HI: no frame codec."""
    from hellohi.datagram_client import DatagramLink, LinkFailed, SessionReset

    clock = time.monotonic
    link = DatagramLink(reliability_config(sc.protocol))
    link.start(clock())
    with udp_socket(endpoint.host) as sock:
        sock.connect((endpoint.host, endpoint.port))
        sock.setblocking(False)
        # poll() for the next deadline, then a read that cannot block: with a socket
        # timeout instead, every round trip would pay a settimeout() system call.
        poller = select.poll()
        poller.register(sock, select.POLLIN)

        def send_ready() -> None:
            for datagram in link.datagrams_to_send(clock()):
                sock.send(datagram)

        late = 0  # Hellos that timed out: acks and retries still bring their HIs, in order

        def say_hello_and_wait_for_hi(hello: bytes, wait: float) -> bool:
            nonlocal late
            link.send_message(hello, clock())
            send_ready()
            give_up = clock() + wait
            while (now := clock()) < give_up:
                deadline = min(give_up, link.next_deadline() or give_up)
                # poll() counts whole milliseconds: round up, so as never to wake early for nothing.
                if poller.poll(math.ceil(max(deadline - now, 0.0) * 1000)):
                    items = link.receive_messages(sock.recv(65535), clock())
                else:
                    items = link.handle_timer(clock())  # retransmissions, delayed acks
                answered = False
                for item in items:
                    if isinstance(item, (LinkFailed, SessionReset)):
                        raise ConnectionError(f"hello-raw over {sc.protocol}: {item.reason}")
                    if isinstance(item, bytes) and item[:2].upper() == b"HI":
                        if late:
                            late -= 1  # an earlier Hello's HI
                        else:
                            answered = True
                if answered:
                    return True  # anything now due (an ack) goes out with the next Hello, or BYE
                send_ready()
            late += 1
            return False

        if not say_hello_and_wait_for_hi(b"Hello %s\n" % endpoint.name("raw").encode(), sc.timeout):
            raise ConnectionError(f"no HI from {endpoint.host}:{endpoint.port} within {sc.timeout} s")
        figures = _timed_hellos(sc, lambda: say_hello_and_wait_for_hi(b"Hello\n", sc.loss_wait), stop)
        link.send_message(b"BYE\n", clock())  # frees the name on the server, as the TCP version does
        send_ready()
    # The link has the client library's `stats`, so the usual summing applies.
    return _with_counters(figures, [link])


async def hello_raw(endpoint: Endpoint, sc: Scenario) -> dict:
    if sc.protocol == "tcp":
        blocking = hello_raw_blocking
    elif sc.plain:
        blocking = hello_raw_blocking_plain_udp
    else:
        blocking = hello_raw_blocking_udp
    return await _in_thread(blocking, endpoint, sc)


async def _in_thread(blocking: Callable, *args):
    """blocking(*args, stop) in a thread of its own; cancelling this (Ctrl-C) sets `stop`.

    A thread cannot be cancelled, and the event loop waits for it before it closes:
    without `stop`, hello-raw over plain UDP against a server that is gone would wait
    out a timeout for every Hello left. With it, the thread ends after its current step."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(blocking, *args, stop)
    finally:
        stop.set()


# --------------------------------------------------------------------- relay echo


async def _echo(client) -> None:
    """bob: send every message straight back to whoever sent it."""
    while True:
        event = await client.next_event()
        if isinstance(event, MessageReceived):
            client.send(event.sender, event.body)


async def relay(endpoint: Endpoint, sc: Scenario) -> dict:
    """Relay round trip alice -> server -> bob -> server -> alice, one at a time."""
    alice = await _connected(endpoint, sc.protocol, endpoint.name("alice"))
    bob = await _connected(endpoint, sc.protocol, endpoint.name("bob"))
    echo = asyncio.create_task(_echo(bob))
    rtt = LatencyRecorder(ROUND_TRIP)
    ledger = DeliveryLedger()
    warm = DeliveryLedger(first_id=9 * 10**15)  # warm-up ids, far from the measured ones
    try:
        for i in range(sc.warmup + sc.count):
            measured = i >= sc.warmup
            message_id = ledger.next_id() if measured else warm.next_id()
            start = now_ns()
            alice.send(bob.bench_name, make_body(message_id, sc.payload))
            deadline = time.monotonic() + sc.loss_wait
            while (left := deadline - time.monotonic()) > 0:
                event = await _event(alice, MessageReceived, left)
                if event is None:
                    break
                got = body_id(event.body)
                if not measured:
                    if got == message_id:
                        break
                    continue  # a late echo of an earlier warm-up message
                if got is not None and got >= warm.first_id:
                    continue  # a late warm-up echo
                if got is None:
                    ledger.foreign += 1  # a body without our id: not one of the messages sent
                    continue
                verdict = ledger.arrived(got)
                if got == message_id and verdict != "duplicate":
                    rtt.add(now_ns() - start)
                    break
    finally:
        echo.cancel()
        await asyncio.gather(echo, return_exceptions=True)
        await alice.close()
        await bob.close()
    return _with_counters({"latency": rtt.summary(), "delivery": ledger.summary().as_dict()}, [alice, bob])


# --------------------------------------------------------------------- bulk transfers


async def _receive_all(client, ledger: DeliveryLedger, sent_at: dict, one_way: LatencyRecorder,
                       expected: int, idle_timeout: float, progress: asyncio.Event | None = None,
                       done_sending: asyncio.Event | None = None) -> float:
    """Collect messages until `expected` distinct ones arrived, or nothing came for
    `idle_timeout` s once the sender is done (`done_sending` set, or not given);
    returns the arrival time (ns) of the last new message.
    `progress` is set at every new message (the sender's window waits on it)."""
    last_new = now_ns()
    while ledger.delivered < expected:
        event = await _event(client, MessageReceived, idle_timeout)
        if event is None:
            if done_sending is None or done_sending.is_set():
                break
            continue  # the sender is still at work (perhaps waiting out a lost window)
        arrived = now_ns()
        message_id = body_id(event.body)
        if message_id is None:
            ledger.foreign += 1
            continue
        verdict = ledger.arrived(message_id)
        if verdict in ("new", "reordered"):
            last_new = arrived
            if progress is not None:
                progress.set()
            if message_id in sent_at:
                one_way.add(arrived - sent_at[message_id])
    return last_new


async def _pace(i: int) -> None:
    # Give the event loop (and so the receiving clients) a turn now and then, so a
    # sender in the same process does not queue everything before anyone reads.
    if i % 64 == 63:
        await asyncio.sleep(0)


class Window:
    """At most `size` messages in flight (sent, not yet received): without it the
    sender queues everything at once and the one-way latency measures only how long
    that queue was. Like the server's own delivery window (default 256).

    `timeout` bounds each wait: when nothing arrives for that long the sender goes on
    anyway, so a lost window (plain UDP) costs one `timeout`, not one per message."""

    def __init__(self, size: int, timeout: float):
        self.size, self.timeout = size, timeout
        self.progress = asyncio.Event()
        self._settled = 0  # as last counted: it only grows, so it is counted again only when it matters

    async def wait(self, sent: int, settled) -> None:
        if sent - self._settled < self.size:
            return  # room, even by the old count (this runs once per message: keep it cheap)
        while sent - (settled_now := settled()) >= self.size:
            self.progress.clear()
            if not await event_set_within(self.progress, self.timeout):
                # Nothing is moving (loss without retries): give up on the window in
                # flight, so that the next wait comes a whole window later. Returning
                # without this made every later message wait out `timeout` as long as
                # nothing arrived: a plain-UDP throughput over a lossy link once ran
                # for 20 minutes at one message a second.
                self._settled = sent
                return
        self._settled = settled_now


def _settled(ledgers, plain: bool) -> int:
    """Messages no longer in flight, for the sender's window.

    Reliable protocols: the messages delivered. Plain UDP: every message up to the
    newest one delivered, because on loopback (one sender, one server) plain
    datagrams arrive in order or not at all, so an older message still missing is
    almost surely lost. On a link that reorders it may still come: the ledger then
    counts it as delivered and reordered. This only decides when the sender may
    send more, never what counts as lost."""
    if plain:
        return sum(led.settled for led in ledgers)
    return sum(led.delivered for led in ledgers)


def _transfer_figures(delivery: dict, one_way, first_send, last_arrival, payload, extra=None) -> dict:
    seconds = max(last_arrival - first_send, 0) / 1e9
    goodput = rate(delivery["delivered"] * payload, seconds)
    figures = {
        "latency": one_way.summary(),
        "delivery": delivery,
        "elapsed_s": seconds,
        "messages_per_s": rate(delivery["delivered"], seconds),
        "goodput_MB_per_s": goodput / 1e6 if goodput is not None else None,
    }
    figures.update(extra or {})
    return figures


async def _bulk(sc: Scenario, senders: list, receivers: list, route) -> dict:
    """Send `count` messages from `senders` to `receivers` within a window, and time them.

    route(i) -> (sender, recipient name, receiver index) for the i-th message. Each
    receiver has its own ledger (ids from disjoint ranges), so each checks exactly the
    messages meant for it and the merged totals still add up: sent = delivered + lost.
    """
    ledgers = [DeliveryLedger(first_id=k * 10**12) for k in range(len(receivers))]
    expected = [0] * len(receivers)
    for i in range(sc.count):
        expected[route(i)[2]] += 1
    one_way = LatencyRecorder(ONE_WAY)
    sent_at: dict[int, int] = {}
    window = Window(sc.window * len(receivers), sc.loss_wait)
    done_sending = asyncio.Event()
    tasks = [asyncio.create_task(_receive_all(r, led, sent_at, one_way, n, sc.loss_wait,
                                              window.progress, done_sending))
             for r, led, n in zip(receivers, ledgers, expected)]
    try:
        first_send = now_ns()
        for i in range(sc.count):
            await window.wait(i, lambda: _settled(ledgers, sc.plain))
            sender, recipient, k = route(i)
            # Order is judged per sender; with one sender the ledger needs no names (nor memory for them).
            message_id = ledgers[k].next_id(sender if len(senders) > 1 else None)
            sent_at[message_id] = now_ns()
            sender.send(recipient, make_body(message_id, sc.payload))
            await _pace(i)
        done_sending.set()
        last_arrival = max(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in [*senders, *receivers]:
            await client.close()
    merged = _merged([led.summary() for led in ledgers])
    figures = _transfer_figures(merged, one_way, first_send, last_arrival, sc.payload)
    return _with_counters(figures, [*senders, *receivers])


async def throughput(endpoint: Endpoint, sc: Scenario) -> dict:
    """alice sends `count` messages of `payload` bytes to bob as fast as the window allows."""
    alice = await _connected(endpoint, sc.protocol, endpoint.name("alice"))
    bob = await _connected(endpoint, sc.protocol, endpoint.name("bob"))
    return await _bulk(sc, [alice], [bob], lambda i: (alice, bob.bench_name, 0))


async def throughput_raw(endpoint: Endpoint, sc: Scenario) -> dict:
    """The same transfer from two minimal sockets: what the server alone carries (bench/throughput_raw.py)."""
    from . import throughput_raw as raw

    delivery, one_way, first_send, last_arrival = await _in_thread(
        raw.throughput_raw, endpoint.host, endpoint.port, sc.count, sc.payload, sc.window, sc.loss_wait,
        (endpoint.name("alice"), endpoint.name("bob")))
    return _transfer_figures(delivery, one_way, first_send, last_arrival, sc.payload)


async def fanin(endpoint: Endpoint, sc: Scenario) -> dict:
    """`clients` senders take turns sending `count` messages in all to one receiver."""
    n = sc.clients
    sink = await _connected(endpoint, sc.protocol, endpoint.name("sink"))
    senders = [await _connected(endpoint, sc.protocol, endpoint.name(f"src{k}")) for k in range(n)]
    return await _bulk(sc, senders, [sink], lambda i: (senders[i % n], sink.bench_name, 0))


async def fanout(endpoint: Endpoint, sc: Scenario) -> dict:
    """One sender sends `count` messages in all, in turn to each of `clients` receivers."""
    n = sc.clients
    source = await _connected(endpoint, sc.protocol, endpoint.name("source"))
    receivers = [await _connected(endpoint, sc.protocol, endpoint.name(f"dst{k}")) for k in range(n)]
    return await _bulk(sc, [source], receivers, lambda i: (source, receivers[i % n].bench_name, i % n))


def _merged(summaries) -> dict:
    keys = ("sent", "delivered", "lost", "duplicates", "reordered", "foreign")
    merged = {key: sum(getattr(s, key) for s in summaries) for key in keys}
    merged["delivered_ratio"] = merged["delivered"] / merged["sent"] if merged["sent"] else None
    return merged


async def drain(endpoint: Endpoint, sc: Scenario) -> dict:
    """Time for an offline client to receive a backlog of `count` stored messages."""
    # carol says Hello once so the server knows her name, then leaves.
    carol_name = endpoint.name("carol")
    carol = await _connected(endpoint, sc.protocol, carol_name)
    await carol.close()
    await asyncio.sleep(0.05)  # let the server notice the BYE before we send to her
    alice = await _connected(endpoint, sc.protocol, endpoint.name("alice"))
    ledger = DeliveryLedger()
    stored = 0
    try:
        for i in range(sc.count):
            alice.send(carol_name, make_body(ledger.next_id(), sc.payload))
            await _pace(i)
        # Wait until the server has confirmed every message as stored (plain UDP: a
        # message or its STATUS may be lost, so stop once none came for loss_wait).
        while stored < sc.count:
            event = await _event(alice, StatusChanged, sc.loss_wait)
            if event is None:
                break
            stored += event.state == "stored"
    finally:
        await alice.close()
    one_way = LatencyRecorder(ONE_WAY)  # stays empty: backlog age is not a latency
    start = now_ns()
    carol = await _connected(endpoint, sc.protocol, carol_name)
    try:
        last = await _receive_all(carol, ledger, {}, one_way, sc.count, sc.loss_wait)
    finally:
        await carol.close()
    figures = _transfer_figures(ledger.summary().as_dict(), one_way, start, last, sc.payload,
                                {"stored_confirmed": stored})
    figures["drain_s"] = figures.pop("elapsed_s")
    del figures["latency"]
    return _with_counters(figures, [alice, carol])


RUNNERS = {
    "hello": hello,
    "hello-raw": hello_raw,
    "relay": relay,
    "throughput": throughput,
    "throughput-raw": throughput_raw,
    "fanin": fanin,
    "fanout": fanout,
    "drain": drain,
}


def longest_body_names(sc: Scenario, name_suffix: str = "") -> tuple[str, str]:
    """(the longest sender name, the longest recipient name) of a workload that sends bodies, as
    the runners above name their clients (with --server's suffix): a plain-UDP frame carries the
    recipient's name (SEND) or the sender's (MSG), so its size depends on them, not on alice's
    and bob's alone (bench-src998 and a suffix add 10 bytes)."""
    if sc.workload == "fanin":
        senders, recipients = [f"src{k}" for k in range(sc.clients)], ["sink"]
    elif sc.workload == "fanout":
        senders, recipients = ["source"], [f"dst{k}" for k in range(sc.clients)]
    elif sc.workload == "drain":
        senders, recipients = ["alice"], ["carol"]
    elif sc.workload == "relay":  # bob echoes each message back to alice
        senders = recipients = ["alice", "bob"]
    else:  # throughput, throughput-raw
        senders, recipients = ["alice"], ["bob"]
    endpoint = Endpoint("", 0, name_suffix)
    return (max((endpoint.name(role) for role in senders), key=len),
            max((endpoint.name(role) for role in recipients), key=len))
