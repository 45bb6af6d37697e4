"""What the TCP and UDP chat clients have in common: everything but the transport.

tcp/client.py and udp/client.py subclass ChatClient and add only how frames
reach the server and come back (a stream, or datagrams through the
reliability layer). The rest is here, once: saying Hello and waiting for HI,
turning frames into events (hellohi.client_session does the protocol work),
reconnecting with backoff, and heartbeats.

A subclass provides:
    async _open()         connect (or start a session) and send Hello; returns when the
                          server answered, raising HelloRefused if it refused
    _write(frame)         send one frame now
    _server_silent()      the server said nothing for 3 heartbeats: treat it as gone
Like chat_cli.py this module uses asyncio; the protocol logic stays in the sans-I/O core.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Callable

from .client_session import ClientSession, ConnectionLost, ErrorReceived, Event, MessageReceived, Registered
from .codec import DEFAULT_MAX_BODY, Err, Frame, Ping, Who
from .errors import ErrorCode
from .eventloop import TIMER_SLACK
from .relay import format_peer
from .waiting import finished_within


# The ERRs after which the server closes the connection because of a frame we
# sent (PROTOCOL.md: 400 when it cannot find where a body ends, 413 too large).
# Reconnecting would send the same unconfirmed frames again and be refused the
# same way, over and over, so the client gives up instead and says why. Only a
# 400 without a ref: one that names a SEND's ref refused that SEND alone (see
# ends_our_session), and a close that comes after it has another cause.
REFUSED_OUR_FRAME = (400, 413)

# The ERRs after which the server has ended our session whatever their ref (PROTOCOL.md,
# "ERR codes": closed). 400 is left out: most 400s leave the session as it was (see
# ends_our_session). A 503 to a registered client answers a frame that reached a server
# restarted since, and full.
END_THE_SESSION = (408, 413, 500, 503, 507)


class ConnectFailed(Exception):
    """connect() ended without HI: nothing answered, or nothing listens there."""


class HelloRefused(ConnectFailed):
    """The server answered Hello with ERR: it runs, and said what was wrong."""

    def __init__(self, code: int, reason: str, detail: str):
        super().__init__(f"the server refused Hello: {code} {reason}: {detail}")
        self.code, self.reason, self.detail = code, reason, detail


class EventInbox:
    """Events waiting for the application, and at most one reader waiting for them.

    An asyncio.Queue read through asyncio.wait_for would do the same, but
    wait_for runs the read as a task of its own with a timer, every call: on a
    ping-pong that is a third of the client's time per round trip. Here the
    reader awaits one plain future, which the next event resolves directly.

    The timeout is kept the way udp/deadline.py keeps the reliability layer's:
    one timer, left armed between reads. A ping-pong reads with a fresh timeout
    every round trip, each ending a little later than the last, so a timer made
    and cancelled per read would be pure overhead (5-9 us of a 100 us Hello/HI
    round trip on a lab VM, measured against reads without a timeout). The armed
    timer fires at the earliest give-up time asked for, TIMER_SLACK late (never
    early, on uvloop's millisecond clock either); if the reader waiting then may
    still wait, it is set again. Once nobody waits with a timeout, the next time
    it fires it stops.
    """

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._give_up_at: float | None = None  # loop time the waiting reader stops waiting, if it ever does
        self._timer: asyncio.TimerHandle | None = None

    def put(self, event: Event) -> None:
        self._events.append(event)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def get(self, timeout: float | None) -> Event | None:
        """The oldest event; None if none came within `timeout` seconds (None: wait for ever)."""
        if not self._events:
            loop = asyncio.get_running_loop()
            self._reader = loop.create_future()
            if timeout is not None:
                self._give_up_at = loop.time() + timeout
                if self._timer is None or self._timer.when() > self._give_up_at + TIMER_SLACK:
                    self._arm(loop, self._give_up_at)
            try:
                await self._reader
            finally:
                self._reader = self._give_up_at = None
        return self._events.popleft() if self._events else None

    def _arm(self, loop: asyncio.AbstractEventLoop, give_up_at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(give_up_at + TIMER_SLACK, self._time_check)

    def _time_check(self) -> None:
        self._timer = None
        if self._reader is None or self._reader.done() or self._give_up_at is None:
            return  # nobody waits with a deadline: leave the timer off until someone does
        loop = asyncio.get_running_loop()
        if loop.time() >= self._give_up_at:
            self._reader.set_result(None)
        else:
            self._arm(loop, self._give_up_at)  # set for an earlier reader, or fired a little early


def answers_hello(event: Registered | ErrorReceived) -> bool:
    """HI, or an ERR refusing our Hello. Not an ERR about a SEND (it names its ref), nor a
    401 hello-first: that answers a frame sent before Hello (over plain UDP the server may
    hold such an answer back and send it just ahead of HI, see docs/udp.md)."""
    if isinstance(event, Registered):
        return True
    return not event.ref and event.code != ErrorCode.HELLO_FIRST.code


def ends_our_session(event: ErrorReceived) -> bool:
    """Whether the server ended our session with this ERR (over TCP, it then closes).

    A 400 with no ref answers a frame the server could not read at all. Once registered, this
    library writes every frame readably but one: a SEND whose TO is not a single word (`send("bad name",
    ...)`, say), whose body's end the server then cannot find. That 400 is fatal: the server
    forgets us. A 400 about a TO that is one word but no name (`bob!`) carries the SEND's ref,
    and the session goes on."""
    if event.code == ErrorCode.BAD_FRAME.code:
        return not event.ref
    return event.code in END_THE_SESSION


class ChatClient:
    transport_name = "?"
    # The longest body send() takes; a note says why, when it is less than the protocol's.
    max_body = DEFAULT_MAX_BODY
    max_body_note = ""
    # Whether the transport tells us when the server ends our session: TCP's FIN, reliable
    # UDP's RESET. Plain UDP has no such signal; the ERR the server ends it with is all we get.
    _server_close_is_signalled = True

    def __init__(
        self,
        host: str,
        port: int,
        name: str | None = None,
        *,
        reconnect: bool = True,
        heartbeat: float | None = None,
        max_backoff: float = 5.0,
        trace: Callable[[str, Frame], None] | None = None,
    ):
        self.host, self.port = host, port
        self.session = ClientSession(name)
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        # Called with ("->", frame) for each frame sent and ("<-", frame) for each received.
        self.trace = trace
        self._events = EventInbox()
        self._registered = asyncio.Event()
        # Resolved by the server's answer to Hello: the HI, or the ERR refusing it.
        self._hello_answer: asyncio.Future[Event] | None = None
        # HIs asked for by say_hello() and not yet come. A HI beyond them and connect()'s
        # answers a Hello plain UDP said again (PLAIN_HELLO_RETRY) when the first HI was only
        # late: it is no news, and is not shown again.
        self._his_wanted = 0
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._last_heard = 0.0
        self._last_frame_in: Frame | None = None  # on this connection: was it an ERR that closed it?

    @property
    def name(self) -> str | None:
        return self.session.registered_as

    @property
    def connected(self) -> bool:
        return self._registered.is_set()

    # ------------------------------------------------------------ public API

    async def connect(self, timeout: float = 10.0) -> str:
        """Connect and say Hello; returns the name the server registered."""
        try:
            await finished_within(self._open(), timeout)  # (not wait_for: see hellohi/waiting.py)
        # First: asyncio.TimeoutError is an OSError too, since Python 3.11.
        except asyncio.TimeoutError:
            raise ConnectFailed(f"no HI from {format_peer((self.host, self.port))} within {timeout} s") from None
        except OSError as error:
            raise ConnectFailed(f"cannot reach {format_peer((self.host, self.port))}: {error.strerror or error}") from None
        self._tasks.append(asyncio.create_task(self._keep_alive()))
        assert self.name is not None
        return self.name

    def send(self, to: str, body: bytes | str) -> str:
        """Queue a message for `to`; returns its ref (STATUS events name it).

        ValueError for a body over `max_body` (65536 bytes, the protocol's limit; over plain
        UDP what fits one datagram, `PLAIN_MAX_BODY`), and for a `to` that is not printable
        ASCII (no frame can carry it); nothing is kept then."""
        if isinstance(body, str):
            # Bytes that were not UTF-8 on the command line or a terminal reach Python as
            # surrogates (PEP 383); surrogateescape sends them as the bytes they were.
            body = body.encode("utf-8", "surrogateescape")
        frame = self.session.send(to, body, self.max_body, self.max_body_note)
        if self.connected:
            self._write(frame)
        return frame.ref  # if not connected, it goes out with the unconfirmed ones on reconnect

    def request_who(self) -> None:
        self._write(Who())

    def say_hello(self) -> None:
        """Send Hello again on a registered connection; the server answers HI (a ping).

        Over plain UDP a HI has nothing to tell which Hello it answers: one that answers a
        Hello of connect()'s said again, and comes after this call, is taken for this one's."""
        self._his_wanted += 1
        self._write(self.session.hello())

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; None if none came within `timeout` seconds.

        A message is ACKed as it is handed over here, not when it arrives: what is still
        in the inbox when the program stops (it was killed, or took the messages it
        wanted and left) stays in the server's store and comes again next time."""
        event = await self._events.get(timeout)
        if isinstance(event, MessageReceived) and self.connected:
            # Not connected: the server sends it again after the reconnect; that copy is
            # dropped as seen, and ACKed.
            self._write(self.session.acknowledge(event))
        return event

    # ------------------------------------------------------------ for the subclasses

    def _expect_hello_answer(self) -> None:
        self._registered.clear()
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        self._last_frame_in = None
        self._hello_answer = loop.create_future()
        self._his_wanted = 0  # a probe said on the connection before will not be answered on this one

    async def _await_hello_answer(self) -> None:
        assert self._hello_answer is not None
        answer = await self._hello_answer
        if isinstance(answer, ErrorReceived):
            raise HelloRefused(answer.code, answer.reason, answer.detail)

    def _frame_in(self, frame: Frame) -> None:
        if self.trace:
            self.trace("<-", frame)
        self._last_frame_in = frame
        events, replies = self.session.receive(frame)
        for reply in replies:
            self._write(reply)
        for event in events:
            if isinstance(event, Registered) and not self._hi_is_wanted():
                continue
            if isinstance(event, (Registered, ErrorReceived)):  # not the common MSG and STATUS
                self._answer_hello(event)
            self._events.put(event)
            if not isinstance(event, ErrorReceived) or not self._registered.is_set():
                continue
            if event.code == ErrorCode.HELLO_FIRST.code:
                # We said Hello, yet the server asks for it: it is a new server (a plain UDP
                # one has no session to reset, and answers our PINGs). Start again.
                self._connection_lost("the server no longer knows us (ERR 401): it restarted")
            elif ends_our_session(event) and not self._server_close_is_signalled:
                # The server ended our session with it. Over TCP and reliable UDP the close
                # (FIN, RESET) follows and we reconnect (or, after 400 or 413, give up) then;
                # over plain UDP nothing follows, and without this we would go on as if
                # registered, our SENDs unconfirmed (a plain client stopped for --timeout finds
                # ERR 408 waiting when it goes on), or unanswered: the new session the server
                # starts for our next frame holds its ERR 401 back until we have sent enough.
                self._connection_lost(f"the server ended our session: ERR {event.code} {event.reason}")

    def _pending_hello_answer(self) -> asyncio.Future[Event] | None:
        """The future a connect (or reconnect) waits on for the answer to its Hello, while it waits."""
        answer = self._hello_answer
        return answer if answer is not None and not answer.done() else None

    def _hi_is_wanted(self) -> bool:
        """Whether a HI answers a Hello somebody waits for: connect()'s, or say_hello()'s."""
        if self._pending_hello_answer() is not None:
            return True
        if self._his_wanted:
            self._his_wanted -= 1
            return True
        return False

    def _answer_hello(self, event: Registered | ErrorReceived) -> None:
        if isinstance(event, Registered):
            self._registered.set()
            if self.heartbeat is None:
                self.heartbeat = event.heartbeat_ms / 1000
        answer = self._pending_hello_answer()
        if answer is not None and answers_hello(event):
            answer.set_result(event)

    def _connection_lost(self, reason: str) -> None:
        """The transport is gone: tell the application, and reconnect if asked to."""
        was_registered = self._registered.is_set()
        self._registered.clear()
        if (answer := self._pending_hello_answer()) is not None:
            answer.set_exception(ConnectionResetError(reason))
        if self._closing or not was_registered:
            return  # a failed handshake is reported by whoever is waiting in _open()
        last = self._last_frame_in
        if isinstance(last, Err) and last.code in REFUSED_OUR_FRAME and not last.ref:
            why = f"the server refused a frame we sent: {last.code} {last.reason}: {last.detail}"
            self._events.put(ConnectionLost(f"{why}; sending it again would be refused the same way", reconnecting=False))
            return
        self._events.put(ConnectionLost(reason, reconnecting=self.reconnect))
        if self.reconnect:
            self._tasks.append(asyncio.create_task(self._reconnect()))

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ background work

    async def _reconnect(self) -> None:
        delay = 0.1
        while not self._closing:
            # Jitter spreads out a classroom of clients whose server just restarted.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await finished_within(self._open(), 5.0)
                return
            except (OSError, asyncio.TimeoutError, ConnectFailed):
                delay = min(delay * 2, self.max_backoff)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            interval = self.heartbeat or 15.0
            await asyncio.sleep(interval)
            if not self.connected:
                continue
            if loop.time() - self._last_heard > 3 * interval:
                self._server_silent()
            else:
                self._write(Ping())

    # ------------------------------------------------------------ the transport's part

    async def close(self) -> None:
        """Say BYE and close the connection (each transport knows how)."""
        raise NotImplementedError

    async def _open(self) -> None:
        raise NotImplementedError

    def _write(self, frame: Frame) -> None:
        raise NotImplementedError

    def _server_silent(self) -> None:
        raise NotImplementedError
