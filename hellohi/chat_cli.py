"""The chat client's command line, the same for TCP and UDP.

Unlike the rest of hellohi this module uses asyncio: it is the front end that
drives a transport's client object (tcp.client.TcpChatClient or the UDP twin),
which must offer connect(), send(), request_who(), next_event() and close().

Modes:
- interactive (default): type `@bob hello` or `/msg bob hello`, `/who`, `/quit`;
- scripted: `--send NAME:TEXT` (repeatable) and/or `--expect N`, for demos,
  tests and autograders; exit status 0 means everything was sent and every
  expected message arrived (1: something is missing, or the connection was lost
  for good; 2: the server could not be reached or refused Hello, or a flag is wrong);
- poll: `--poll [IDLE]`: connect, collect what waits, leave after IDLE quiet seconds
  (1 if the server went away meanwhile and was not back within IDLE seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading
from typing import Callable

from .client_session import (
    ConnectionLost,
    DuplicateDropped,
    ErrorReceived,
    Event,
    MessageReceived,
    OnlineList,
    PongReceived,
    Registered,
    ServerSaidBye,
    StatusChanged,
)
from .chat_client import ChatClient, HelloRefused
from .codec import ADDRESSABLE_NAME, CHOSEN_NAME, NAME_RULE
from .console import reader_went_away
from .relay import format_peer
from .waiting import event_set_within

# 2 is also what argparse exits with for a bad flag: a wrong --name or --send is one too.
EXIT_OK, EXIT_INCOMPLETE, EXIT_CANNOT_CONNECT, EXIT_BAD_USAGE = 0, 1, 2, 2

# What to do about the refusals a person can fix, by ERR code.
HELLO_REFUSED_FIX = {
    409: "Choose another --name (or wait until the other client with that name leaves).",
    422: f"Choose another --name: {NAME_RULE}.",
    503: "The server has --max-clients clients; try again later.",
}


class Printer:
    """Prints events for people (`[alice] <- bob: hi`) or as JSON lines."""

    def __init__(self, as_json: bool, who: str):
        self.as_json = as_json
        self.who = who

    def emit(self, kind: str, line: str, **fields) -> None:
        if self.as_json:
            print(json.dumps({"event": kind, **fields}), flush=True)
        else:
            print(f"[{self.who}] {line}", flush=True)

    def help(self, text: str) -> None:
        """A hint for the person at the prompt; as JSON with its text, for a program to show."""
        self.emit("help", text, text=text)

    def event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            text = event.body.decode("utf-8", "replace")
            self.emit("message", f"<- {event.sender}: {text}", id=event.id, sender=event.sender, text=text)
        elif isinstance(event, StatusChanged):
            ticks = "✓" if event.state == "stored" else "✓✓"
            self.emit("status", f"{ticks} {event.state} (ref {event.ref}, #{event.id})", ref=event.ref, state=event.state, id=event.id)
        elif isinstance(event, DuplicateDropped):
            self.emit("duplicate", f"dropped a second copy of #{event.id} from {event.sender}", id=event.id, sender=event.sender)
        elif isinstance(event, OnlineList):
            self.emit("online", "online: " + (", ".join(event.names) or "nobody"), names=list(event.names))
        elif isinstance(event, ErrorReceived):
            self.emit("error", f"server error {event.code} {event.reason}: {event.detail}", code=event.code, reason=event.reason, ref=event.ref, detail=event.detail)
        elif isinstance(event, Registered):
            self.emit("registered", f"HI: registered as {event.name}", name=event.name, heartbeat_ms=event.heartbeat_ms)
        elif isinstance(event, ConnectionLost):
            then = "reconnecting" if event.reconnecting else "giving up"
            self.emit("connection-lost", f"connection lost ({event.reason}); {then}", reason=event.reason, reconnecting=event.reconnecting)
        elif isinstance(event, ServerSaidBye):
            self.emit("bye", "server said BYE")
        elif isinstance(event, PongReceived) and self.as_json:
            # The answer to our heartbeat PING: for a program watching the connection, not
            # a line in a person's chat every 15 s.
            self.emit("pong", "PONG", token=event.token)


def recipient_problem(to: str) -> str | None:
    """Why the server could not even read a SEND to `to` (ERR 400), or None if it could."""
    if ADDRESSABLE_NAME.match(to):
        return None
    return f"{to!r} is not a name anybody can have: {NAME_RULE}"


def text_problem(text: str, client: ChatClient) -> str | None:
    """Why `client` cannot send a message with this text (its body limit), or None."""
    size = len(text.encode("utf-8", "surrogateescape"))  # as ChatClient.send encodes it
    if size <= client.max_body:
        return None
    return f"the text is {size} bytes; a message holds at most {client.max_body}{client.max_body_note}"


def name_problem(name: str | None) -> str | None:
    """What is wrong with --name, checked before connecting; None if nothing. The server
    would refuse it too (ERR 422 and the name rule), but not with the flag to change."""
    if name is not None and not CHOSEN_NAME.match(name):
        return f"--name {name!r} is not a valid name: {NAME_RULE}, e.g. --name alice"
    return None


def sends_problem(sends: list[tuple[str, str]], client: ChatClient) -> str | None:
    """What is wrong with a --send, checked before connecting; None if nothing. The server
    would refuse a bad recipient too (ERR 400), but not with the flag to change and an example."""
    for to, text in sends:
        if problem := recipient_problem(to):
            return f"--send {to + ':' + text!r}: {problem}, e.g. --send bob:hello"
        if problem := text_problem(text, client):
            return f"--send {to}:...: {problem}; split it into several --send"
    return None


async def run(args: argparse.Namespace, make_client: Callable[..., ChatClient]) -> int:
    _take_any_bytes()
    try:
        return await _run(args, make_client)
    except BrokenPipeError:  # `... --json | head -1`
        reader_went_away()
        return EXIT_INCOMPLETE


async def _run(args: argparse.Namespace, make_client: Callable[..., ChatClient]) -> int:
    sends = args.send  # (NAME, TEXT) pairs: options.parse_send checked each for its ':'
    if problem := name_problem(args.name):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_USAGE
    host, port = args.server
    client = make_client(host, port, args.name, reconnect=not args.no_reconnect, heartbeat=args.heartbeat)
    if problem := sends_problem(sends, client):  # the client knows its limit: plain UDP's is less
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_USAGE
    printer = Printer(args.json, args.name or "you")
    try:
        name = await client.connect(timeout=args.timeout)
    except HelloRefused as error:  # the server runs and said no: the address is right
        fix = HELLO_REFUSED_FIX.get(error.code, "")
        printer.emit("cannot-connect", f"error: {error}. {fix}".rstrip(), detail=str(error), code=error.code)
        return EXIT_CANNOT_CONNECT
    except Exception as error:  # ConnectFailed of either transport: nothing answered
        printer.emit("cannot-connect", f"error: {error}. Is the server running? Check --server HOST:PORT.", detail=str(error))
        return EXIT_CANNOT_CONNECT
    printer.who = name
    server = format_peer((host, port))
    printer.emit("connected", f"connected to {server} over {client.transport_name}", server=server, transport=client.transport_name)
    try:
        await _show_the_hello_answer(client, printer, args.timeout)
        if sends or args.expect or args.poll:
            return await _scripted(client, printer, sends, args)
        return await _interactive(client, printer)
    finally:
        await client.close()


async def _show_the_hello_answer(client, printer: Printer, timeout: float) -> None:
    """Print the events up to and including HI (Registered) before anything is sent.

    connect() returns once HI has come, so its event is already waiting, ahead of
    whatever the server says next. Printed later, by whichever mode reads events, it
    would follow our own `-> bob: ...` lines and read as if the messages had gone out
    before the server answered Hello."""
    while (event := await client.next_event(timeout=timeout)) is not None:
        printer.event(event)
        if isinstance(event, Registered):
            return


class _SentMessages:
    """The messages sent, until the server answers each: a STATUS in one of `answers`, or an ERR."""

    def __init__(self, answers: tuple[str, ...]) -> None:
        self.answers = answers
        self.unanswered: set[str] = set()  # refs
        self.refused: list[str] = []
        self._all_answered = asyncio.Event()
        self._all_answered.set()

    def sent(self, ref: str) -> None:
        self.unanswered.add(ref)
        self._all_answered.clear()

    def answered(self, event: Event) -> None:
        if isinstance(event, (StatusChanged, ErrorReceived)) and event.ref in self.unanswered:
            if isinstance(event, StatusChanged) and event.state not in self.answers:
                return
            self.unanswered.discard(event.ref)
            if isinstance(event, ErrorReceived):
                self.refused.append(event.ref)
            if not self.unanswered:
                self._all_answered.set()

    async def all_answered_within(self, seconds: float) -> bool:
        return await event_set_within(self._all_answered, seconds)


async def _scripted(client, printer: Printer, sends: list[tuple[str, str]], args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + args.timeout
    wanted_state = "delivered" if args.wait_delivered else "stored"
    outstanding = _SentMessages(answers=(wanted_state,))
    lost = ""  # why the connection ended for good, if it did
    away = ""  # why the connection ended, while the client reconnects
    received = 0
    for to, text in sends:
        ref = client.send(to, text)
        outstanding.sent(ref)
        printer.emit("sent", f"-> {to}: {text} (ref {ref})", to=to, ref=ref, text=text)

    def done() -> bool:
        return not outstanding.unanswered and received >= args.expect

    quiet_since = loop.time()
    while not (done() and not args.poll):
        now = loop.time()
        wait = deadline - now
        if args.poll and done():
            # Poll mode: leave after a quiet spell. The PONGs to our own keep-alive PINGs
            # are no news: counted as activity, a heartbeat shorter than the spell would
            # keep the client until --timeout.
            wait = min(wait, quiet_since + args.poll - now)
        if wait <= 0:
            break
        event = await client.next_event(timeout=wait)
        if event is None:
            break
        if not isinstance(event, PongReceived):
            quiet_since = loop.time()
        printer.event(event)
        outstanding.answered(event)
        if isinstance(event, MessageReceived):
            received += 1
        elif isinstance(event, Registered):
            away = ""
        elif isinstance(event, ConnectionLost) and event.reconnecting:
            away = event.reason
        elif isinstance(event, ConnectionLost):
            lost = event.reason
            break
    problems = []
    if lost:
        problems.append(f"the connection was lost ({lost})")
    if away and args.poll:
        # A quiet spell with nobody at the other end is no sign that everything has come.
        problems.append(f"the server went away before the poll finished ({away}): messages may still be "
                        "waiting; run the poll again when the server is back")
    elif away:
        problems.append(f"the server went away ({away}) and was not back in time")
    if outstanding.unanswered:
        problems.append(f"{len(outstanding.unanswered)} of {len(sends)} messages not {wanted_state}")
    if outstanding.refused:
        problems.append(f"{len(outstanding.refused)} of {len(sends)} messages refused by the server")
    if received < args.expect:
        problems.append(f"{received} of {args.expect} expected messages arrived")
    if problems:
        printer.emit("incomplete", f"error: after {loop.time() - started:.1f} s: {'; '.join(problems)}", problems=problems)
        return EXIT_INCOMPLETE
    printer.emit("done", f"done: {len(sends)} sent, {received} received", sent=len(sends), received=received)
    return EXIT_OK


HELP = "type '@NAME TEXT' or '/msg NAME TEXT' to send, '/who' for who is online, '/quit' to leave"

# On leaving, how long the interactive client waits for the server's answer (STATUS or ERR)
# to each message typed: with input piped in, the end of input comes right after the last
# line, before the server could refuse it, and the refusal would never be shown.
LEAVE_WAIT = 2.0


def _take_any_bytes() -> None:
    """Typed or piped text that is not UTF-8 is read, not refused with a traceback: it is
    sent as the bytes it is (surrogateescape, see ChatClient.send), and printed back
    with its odd bytes as escapes."""
    for stream, errors in ((sys.stdin, "surrogateescape"), (sys.stdout, "backslashreplace")):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=errors)


# Put in the interactive loop's inbox beside the typed lines: the client will not reconnect.
_LOST_FOR_GOOD = object()


def _read_lines_into(inbox: asyncio.Queue, loop: asyncio.AbstractEventLoop) -> None:
    """The typed lines, from a thread of their own ("" at the end of input).

    A daemon thread, not the event loop's executor: an executor's thread still blocked
    in readline() would keep the program from exiting until the person pressed Enter.
    """
    while True:
        line = sys.stdin.readline()
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, line)
        except RuntimeError:  # the event loop has finished: nobody reads any more
            return
        if not line:
            return


async def _interactive(client, printer: Printer) -> int:
    printer.help(HELP)
    inbox: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_read_lines_into, args=(inbox, asyncio.get_running_loop()), daemon=True).start()
    typed = _SentMessages(answers=("stored", "delivered"))  # the first STATUS of either kind answers

    async def show_events() -> None:
        while True:
            event = await client.next_event()
            if event is not None:
                printer.event(event)
                typed.answered(event)
                if isinstance(event, ConnectionLost) and not event.reconnecting:
                    inbox.put_nowait(_LOST_FOR_GOOD)

    async def leave() -> int:
        if not await typed.all_answered_within(LEAVE_WAIT):
            refs = sorted(typed.unanswered)
            printer.emit("incomplete", f"error: the server did not confirm {len(refs)} message(s) typed (ref "
                         f"{', '.join(refs)}) within {LEAVE_WAIT:g} s of leaving; they may not have arrived",
                         problems=[f"unconfirmed: {ref}" for ref in refs])
            return EXIT_INCOMPLETE
        return EXIT_INCOMPLETE if typed.refused else EXIT_OK

    shower = asyncio.create_task(show_events())
    try:
        while True:
            line = await inbox.get()
            if line is _LOST_FOR_GOOD:  # --no-reconnect, or the server refused us: nothing left to do
                return EXIT_INCOMPLETE
            if not line:  # end of input, like /quit
                return await leave()
            command = line.strip()
            if not command:
                continue
            if command in ("/quit", "/exit", "/bye"):
                return await leave()
            if command == "/who":
                client.request_who()
            elif command.startswith(("@", "/msg ")):
                target, _, text = command.removeprefix("/msg ").lstrip("@").partition(" ")
                if target and text and (problem := recipient_problem(target)):
                    printer.help(f"not sent: {problem}, e.g. @bob hello")
                elif target and text and (problem := text_problem(text, client)):
                    printer.help(f"not sent: {problem}; send it in parts")
                elif target and text:
                    ref = client.send(target, text)
                    typed.sent(ref)
                    printer.emit("sent", f"-> {target}: {text} (ref {ref})", to=target, ref=ref, text=text)
                else:
                    printer.help("usage: @NAME TEXT")
            elif command.startswith("/"):
                printer.help(f"unknown command {command.split()[0]}; {HELP}")
            else:
                printer.help(HELP)
    finally:
        shower.cancel()
