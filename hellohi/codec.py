"""The hellohi wire format: text frames with length-counted bodies.

A frame is one header line, `VERB ARG ARG...` ending in LF (CRLF is accepted
too, so `nc` and `telnet` both work). Frames that carry a message body end
their header with the body's length in bytes; exactly that many bytes follow,
then one LF. Because the body is counted, not scanned for a terminator, it may
contain any bytes at all, newlines included.

    SEND bob r1 5\\n
    hello\\n

This module is sans-I/O: `encode` turns a frame into bytes and `Decoder` turns
bytes, in whatever pieces the network delivers them, back into frames. It
knows nothing about sockets, datagrams or time. See PROTOCOL.md for the
grammar and every frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence, Union

from .errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = "hellohi/1"
DEFAULT_MAX_LINE = 1024
DEFAULT_MAX_BODY = 64 * 1024

# A name a client may choose with `Hello NAME`, and that rule in words (the relay's
# ERR 422 and the client's command-line check both say it).
CHOSEN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
NAME_RULE = "a name is 1-32 letters, digits, '_', '.' or '-'"
# Any name that can be addressed: chosen names, and the `IP:PORT` names the
# server gives to clients that said a bare `Hello` (IPv6 in brackets).
ADDRESSABLE_NAME = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,64}\Z")
REF = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
PING_TOKEN = re.compile(r"[!-~]{1,32}\Z")
CR, LF = 13, 10
DELIVERY_STATES = ("stored", "delivered")

# Frames, like the relay's actions and the client's events, are values: nothing
# changes one after it is built. They are not frozen all the same, because a
# frozen dataclass takes about three times as long to construct (0.4 us against
# 0.14 us here) and the relay builds several for every message it moves.


@dataclass(slots=True)
class Hello:
    """Client -> server: register. No name means "call me by my address"."""

    name: str | None = None
    version: str | None = None

    def words(self) -> list[str]:
        return ["HELLO"] + [part for part in (self.name, self.version) if part]


@dataclass(slots=True)
class Hi:
    """Server -> client: registered as `name`; PING me every `heartbeat_ms`."""

    name: str
    heartbeat_ms: int
    version: str = PROTOCOL_VERSION

    def words(self) -> list[str]:
        return ["HI", self.name, self.version, str(self.heartbeat_ms)]


@dataclass(slots=True)
class Send:
    """Client -> server: relay `body` to `to`. `ref` is the sender's own label."""

    to: str
    ref: str
    body: bytes

    def words(self) -> list[str]:
        return ["SEND", self.to, self.ref, str(len(self.body))]


@dataclass(slots=True)
class Msg:
    """Server -> recipient: a message; the recipient answers `ACK id`."""

    id: int
    sender: str
    body: bytes

    def words(self) -> list[str]:
        return ["MSG", str(self.id), self.sender, str(len(self.body))]


@dataclass(slots=True)
class Ack:
    """Recipient -> server: message `id` arrived; the server may forget it."""

    id: int

    def words(self) -> list[str]:
        return ["ACK", str(self.id)]


@dataclass(slots=True)
class Status:
    """Server -> sender: message `ref` (server id `id`) is now `state`."""

    ref: str
    state: str
    id: int

    def words(self) -> list[str]:
        return ["STATUS", self.ref, self.state, str(self.id)]


@dataclass(slots=True)
class Who:
    """Client -> server: who is online?"""

    def words(self) -> list[str]:
        return ["WHO"]


# Marks an ONLINE page that more pages follow. No name can be "+" (names are letters,
# digits and _ . -, or an address), so the mark cannot be mistaken for one.
MORE_ONLINE = "+"


@dataclass(slots=True)
class Online:
    """Server -> client: the names online now; `more`: this is one page, more follow."""

    names: tuple[str, ...]
    more: bool = False

    def words(self) -> list[str]:
        return ["ONLINE", *self.names, MORE_ONLINE] if self.more else ["ONLINE", *self.names]


@dataclass(slots=True)
class Ping:
    """Either side: are you there? The token, if any, comes back in the PONG."""

    token: str | None = None

    def words(self) -> list[str]:
        return ["PING"] + ([self.token] if self.token else [])


@dataclass(slots=True)
class Pong:
    token: str | None = None

    def words(self) -> list[str]:
        return ["PONG"] + ([self.token] if self.token else [])


@dataclass(slots=True)
class Bye:
    """Either side: I am closing this connection on purpose."""

    def words(self) -> list[str]:
        return ["BYE"]


@dataclass(slots=True)
class Err:
    """Server -> client: something was wrong. `ref` names the SEND it concerns."""

    code: int
    reason: str
    ref: str | None = None
    detail: str = ""

    def words(self) -> list[str]:
        words = ["ERR", str(self.code), self.reason]
        if self.ref:
            words.append(f"ref={self.ref}")
        if self.detail:
            words.append(self.detail)
        return words

    @classmethod
    def of(cls, error: ErrorCode, detail: str = "", ref: str | None = None) -> "Err":
        return cls(error.code, error.reason, ref, detail)


Frame = Union[Hello, Hi, Send, Msg, Ack, Status, Who, Online, Ping, Pong, Bye, Err]


# ---------------------------------------------------------------- encoding


def encode(frame: Frame) -> bytes:
    """The exact bytes of `frame` on the wire."""
    line = " ".join(frame.words()).encode("ascii") + b"\n"
    body = getattr(frame, "body", None)  # only SEND and MSG carry one
    return line if body is None else line + body + b"\n"


# ---------------------------------------------------------------- decoding


# How much of a bad argument an ERR quotes back. Every line the server sends must fit the
# protocol's 1024 bytes (PROTOCOL.md), and a client's mistake can be nearly that long itself.
QUOTED_AT_MOST = 40


def _quoted(text: str) -> str:
    """`text` as an ERR quotes it: in quotes, and cut short (marked with ...) if long."""
    return repr(text) if len(text) <= QUOTED_AT_MOST else repr(text[:QUOTED_AT_MOST]) + "..."


def _bad(detail: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FRAME, detail)


def _count(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise _bad(f"usage: {usage}")


def _integer(text: str, what: str) -> int:
    if not text.isdigit():
        raise _bad(f"{what} must be a whole number, got {_quoted(text)}")
    if len(text) > 18:
        raise _bad(f"{what} must be from 0 to 10^18-1 (at most 18 digits), got {_quoted(text)}")
    return int(text)


def _matching(pattern: re.Pattern[str], text: str, what: str, ref: str | None = None) -> str:
    """`text` if it matches; `ref`: the SEND this is part of, for the ERR to name."""
    if not pattern.match(text):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} {_quoted(text)} has characters or a length that are not allowed", ref=ref)
    return text


def _hello(args: list[str]) -> Hello:
    _count(args, 0, 2, "HELLO [NAME] [hellohi/1]")
    name = version = None
    for arg in args:
        if arg.lower().startswith("hellohi/"):
            if version is not None:
                # Two versions (`HELLO hellohi/2 hellohi/1`) is no HELLO the grammar has;
                # taking the last would let this one past the check for hellohi/2.
                raise _bad("usage: HELLO [NAME] [hellohi/1]")
            version = arg
        elif name is None:
            name = arg  # the relay checks the name, so it can answer ERR 422
        else:
            raise _bad("usage: HELLO [NAME] [hellohi/1]")
    return Hello(name, version)


def _hi(args: list[str]) -> Hi:
    _count(args, 3, 3, "HI NAME VERSION HEARTBEAT_MS")
    return Hi(_matching(ADDRESSABLE_NAME, args[0], "name"), _integer(args[2], "heartbeat"), args[1])


def _ack(args: list[str]) -> Ack:
    _count(args, 1, 1, "ACK ID")
    return Ack(_integer(args[0], "id"))


def _status(args: list[str]) -> Status:
    _count(args, 3, 3, "STATUS REF stored|delivered ID")
    if args[1] not in DELIVERY_STATES:
        raise _bad(f"status must be stored or delivered, got {_quoted(args[1])}")
    return Status(_matching(REF, args[0], "ref"), args[1], _integer(args[2], "id"))


def _ping(cls: type) -> Callable[[list[str]], Frame]:
    def parse(args: list[str]) -> Frame:
        _count(args, 0, 1, f"{cls.__name__.upper()} [TOKEN]")
        return cls(_matching(PING_TOKEN, args[0], "token") if args else None)

    return parse


def _no_args(cls: type) -> Callable[[list[str]], Frame]:
    def parse(args: list[str]) -> Frame:
        _count(args, 0, 0, cls.__name__.upper())
        return cls()

    return parse


def online_pages(names: Sequence[str], max_line: int = DEFAULT_MAX_LINE) -> list[Online]:
    """The ONLINE answer to WHO, cut into lines of at most `max_line` bytes before the LF.

    A class of forty with long names would need a longer line than a client reads
    (the protocol's 1024 bytes): each page but the last ends with MORE_ONLINE, and
    the client joins the pages."""
    pages: list[Online] = []
    page: list[str] = []
    length = len("ONLINE")
    for name in names:
        # Room is kept for the " +" this page gets if the next name starts a new one.
        if page and length + len(" " + name) + len(" " + MORE_ONLINE) > max_line:
            pages.append(Online(tuple(page), more=True))
            page, length = [], len("ONLINE")
        page.append(name)
        length += len(" " + name)
    pages.append(Online(tuple(page)))
    return pages


def _online(args: list[str]) -> Online:
    more = bool(args) and args[-1] == MORE_ONLINE
    names = args[:-1] if more else args
    return Online(tuple(_matching(ADDRESSABLE_NAME, name, "name") for name in names), more)


def _err(args: list[str]) -> Err:
    if len(args) < 2:
        raise _bad("usage: ERR CODE REASON [ref=REF] [DETAIL...]")
    code, reason, rest = _integer(args[0], "code"), args[1], args[2:]
    ref = None
    if rest and rest[0].startswith("ref="):
        ref = _matching(REF, rest.pop(0)[4:], "ref")
    return Err(code, reason, ref, " ".join(rest))


def _send(args: list[str], body: bytes) -> Send:
    ref = _matching(REF, args[1], "ref")
    return Send(_matching(ADDRESSABLE_NAME, args[0], "recipient", ref=ref), ref, body)


def _msg(args: list[str], body: bytes) -> Msg:
    return Msg(_integer(args[0], "id"), _matching(ADDRESSABLE_NAME, args[1], "sender"), body)


# Frames without a body: VERB -> parser of the arguments.
_LINE_FRAMES: dict[str, Callable[[list[str]], Frame]] = {
    "HELLO": _hello,
    "HI": _hi,
    "ACK": _ack,
    "STATUS": _status,
    "WHO": _no_args(Who),
    "ONLINE": _online,
    "PING": _ping(Ping),
    "PONG": _ping(Pong),
    "BYE": _no_args(Bye),
    "ERR": _err,
}
# Frames with a body: VERB -> (usage, parser of the arguments before LENGTH and the body).
_BODY_FRAMES: dict[str, tuple[str, Callable[[list[str], bytes], Frame]]] = {
    "SEND": ("SEND TO REF LENGTH", _send),
    "MSG": ("MSG ID FROM LENGTH", _msg),
}


class _Carefully:
    """_canonical_frame's answer for "leave this one to the careful path"."""


_CAREFULLY = _Carefully()

# The frames that carry nearly all the traffic (the four of every message, and the
# HELLO and HI of every ping), in exactly the form encode() writes them:
# upper-case verb (or Hello, as the protocol's users write it), one space between
# words, LF. One regex checks and splits such a
# header in a single call (a frame then takes 1.2 us to decode here instead of
# 2.0: both the server and the client handle several per message); any other line
# (another verb, lower case, tabs, CRLF, a mistake) takes the careful path below,
# which says exactly what is wrong. The character classes are those of REF,
# ADDRESSABLE_NAME and _integer, and a version is any word, as in _hi, so both
# paths accept the same frames; tests/test_codec.py checks that a frame decodes
# the same with LF and CRLF.
_NAME, _REF, _NUMBER = rb"[A-Za-z0-9_.:\[\]-]{1,64}", rb"[A-Za-z0-9_.-]{1,32}", rb"[0-9]{1,18}"
_CANONICAL = re.compile(
    rb"STATUS (?P<status_ref>%s) (?P<status_state>stored|delivered) (?P<status_id>%s)\n" % (_REF, _NUMBER)
    + rb"|ACK (?P<ack_id>%s)\n" % _NUMBER
    + rb"|MSG (?P<msg_id>%s) (?P<msg_sender>%s) (?P<msg_length>%s)\n" % (_NUMBER, _NAME, _NUMBER)
    + rb"|SEND (?P<send_to>%s) (?P<send_ref>%s) (?P<send_length>%s)\n" % (_NAME, _REF, _NUMBER)
    + rb"|(?P<hello>HELLO|Hello)(?: (?P<hello_name>%s))?\n" % _NAME
    + rb"|HI (?P<hi_name>%s) (?P<hi_version>[!-~]+) (?P<hi_heartbeat>%s)\n" % (_NAME, _NUMBER)
)


class Decoder:
    """Turns a byte stream into frames, however the stream is split.

    feed() the bytes as they arrive, then call next_frame() until it returns
    None (it needs more bytes). Bad input raises ProtocolError and nothing
    else; after a non-fatal one you may keep calling next_frame().
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_body: int = DEFAULT_MAX_BODY):
        self.max_line = max_line
        self.max_body = max_body
        self._buffer = bytearray()
        # Set while we wait for a body: (verb, body length, function making the frame from the body).
        self._pending_body: tuple[str, int, Callable[[bytes], Frame]] | None = None
        self._broken: ProtocolError | None = None

    @property
    def mid_frame(self) -> bool:
        """True while a frame has begun and not ended: bytes buffered, or a header whose body
        has not come (its bytes are no longer buffered)."""
        return bool(self._buffer) or self._pending_body is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> Frame | None:
        if self._broken:
            raise self._broken
        while True:
            if self._pending_body is not None:
                return self._take_body()
            if not self._buffer:
                return None  # the usual end of a read: every frame taken, nothing left to match
            canonical = _CANONICAL.match(self._buffer)
            if canonical is not None and canonical.end() <= self.max_line + 1:
                frame = self._canonical_frame(canonical)
                if not isinstance(frame, _Carefully):
                    return frame
            line = self._take_line()
            if line is None:
                return None
            if line.strip():  # blank lines are skipped, so pressing Enter in nc is harmless
                return self._parse_header(line)

    def frames(self) -> list[Frame]:
        """All complete frames buffered so far (stops at the first error)."""
        found = []
        while (frame := self.next_frame()) is not None:
            found.append(frame)
        return found

    def _fail(self, error: ErrorCode, detail: str) -> ProtocolError:
        self._broken = ProtocolError(error, detail, fatal=True)
        return self._broken

    def _canonical_frame(self, match: re.Match[bytes]) -> Frame | None | _Carefully:
        """The frame a _CANONICAL match found (None: its body has not all arrived yet)."""
        last = match.lastgroup  # the last group of the alternative that matched
        assert last is not None  # every alternative ends in a named group
        if last == "status_id":
            frame: Frame = Status(match["status_ref"].decode(), match["status_state"].decode(), int(match["status_id"]))
        elif last == "ack_id":
            frame = Ack(int(match["ack_id"]))
        elif last == "hi_heartbeat":
            frame = Hi(match["hi_name"].decode(), int(match["hi_heartbeat"]), match["hi_version"].decode())
        elif last == "hello":
            frame = Hello()
        elif last == "hello_name":
            frame = Hello(match["hello_name"].decode())  # the relay checks the name, as on the careful path
        else:
            length = int(match[last])
            if length > self.max_body:
                return _CAREFULLY  # which refuses it, with the usual message
            if last == "msg_length":
                self._pending_body = ("MSG", length, partial(Msg, int(match["msg_id"]), match["msg_sender"].decode()))
            else:
                self._pending_body = ("SEND", length, partial(Send, match["send_to"].decode(), match["send_ref"].decode()))
            del self._buffer[: match.end()]
            return self._take_body()
        del self._buffer[: match.end()]
        return frame

    def _take_line(self) -> bytearray | None:
        end = self._buffer.find(b"\n", 0, self.max_line + 1)
        if end < 0:
            if len(self._buffer) > self.max_line:
                raise self._fail(ErrorCode.TOO_LARGE, f"header line longer than {self.max_line} bytes")
            return None
        line = self._buffer[:end]
        del self._buffer[: end + 1]
        if line.endswith(b"\r"):
            del line[-1]
        return line

    def _parse_header(self, line: bytearray) -> Frame | None:
        # A SEND or MSG header we cannot read leaves us unable to find its body's end,
        # and the body would be read as frames: the stream is lost, so the error is fatal.
        announces_body = line.split(None, 1)[0].upper() in (b"SEND", b"MSG")

        def unreadable(detail: str) -> ProtocolError:
            return self._fail(ErrorCode.BAD_FRAME, detail) if announces_body else _bad(detail)

        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise unreadable("header lines are ASCII; put other text in a body") from None
        # Tabs may separate arguments; every other character must be printable.
        if not text.isprintable() and not text.replace("\t", " ").isprintable():
            raise unreadable("header line has control characters")
        words = text.split()
        verb = words[0].upper()
        if not verb.isalpha():
            # The grammar's verb is letters: `1FOO` or `FOO!` is not a verb we do not
            # know (405) but a line that does not parse (400), as PROTOCOL.md says.
            raise _bad(f"a verb is letters only, got {_quoted(verb)}")
        parse_line = _LINE_FRAMES.get(verb)
        if parse_line is not None:
            return parse_line(words[1:])
        if verb in _BODY_FRAMES:
            usage = _BODY_FRAMES[verb][0]
            # As above: without a readable LENGTH the body's end cannot be found.
            if len(words) != 4:
                raise self._fail(ErrorCode.BAD_FRAME, f"usage: {usage}")
            length_text = words[3]
            if not length_text.isdigit() or len(length_text) > 18:
                raise self._fail(ErrorCode.BAD_FRAME, f"LENGTH must be a whole number, got {_quoted(length_text)}")
            length = int(length_text)
            if length > self.max_body:
                raise self._fail(ErrorCode.TOO_LARGE, f"body of {length} bytes; the limit is {self.max_body}")
            self._pending_body = (verb, length, partial(_BODY_FRAMES[verb][1], words[1:3]))
            return self._take_body()
        raise ProtocolError(ErrorCode.UNKNOWN_COMMAND, f"{_quoted(verb)} is not a command; try HELLO, SEND, WHO, PING, BYE")

    def _take_body(self) -> Frame | None:
        assert self._pending_body is not None
        verb, length, make_frame = self._pending_body
        buffer = self._buffer
        if len(buffer) <= length:
            return None
        end = length
        if buffer[end] == CR:  # typed by hand in telnet
            if len(buffer) <= end + 1:
                return None
            end += 1
        if buffer[end] != LF:
            raise self._fail(ErrorCode.BAD_FRAME, f"body of {verb} is not followed by a newline after {length} bytes")
        body = bytes(buffer[:length])
        del buffer[: end + 1]
        self._pending_body = None
        return make_frame(body)


def decode_all(data: bytes, max_line: int = DEFAULT_MAX_LINE, max_body: int = DEFAULT_MAX_BODY) -> list[Frame]:
    """Decode bytes that hold whole frames only (one UDP message, a test vector)."""
    decoder = Decoder(max_line, max_body)
    decoder.feed(data)
    frames = decoder.frames()
    if decoder.mid_frame:
        raise ProtocolError(ErrorCode.BAD_FRAME, "the data ends in the middle of a frame")
    return frames
