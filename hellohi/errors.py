"""Every error the protocol can report, with the code that goes on the wire.

The codes borrow HTTP's numbers where the meaning matches, so a student can
guess what `ERR 404` means before reading PROTOCOL.md.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """An `ERR` frame's code and reason token. `value` is (code, reason)."""

    BAD_FRAME = (400, "bad-frame")
    HELLO_FIRST = (401, "hello-first")
    UNKNOWN_RECIPIENT = (404, "unknown-recipient")
    UNKNOWN_COMMAND = (405, "unknown-command")
    TIMEOUT = (408, "timeout")
    NAME_TAKEN = (409, "name-taken")
    TOO_LARGE = (413, "too-large")
    BAD_NAME = (422, "bad-name")
    QUEUE_FULL = (429, "queue-full")
    STORE_UNAVAILABLE = (500, "store-unavailable")
    SERVER_FULL = (503, "server-full")
    BAD_VERSION = (505, "version-not-supported")
    SLOW_READER = (507, "slow-reader")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


class ProtocolError(Exception):
    """Bad input from the peer.

    `fatal` says whether the byte stream can still be trusted: after a
    non-fatal error (an unknown verb on a well-formed line, say) the decoder
    has skipped the bad frame and goes on; after a fatal one (a line too long
    to find its end, a body without its closing newline) the connection has to
    be closed, because nobody knows where the next frame starts.
    """

    def __init__(self, error: ErrorCode, detail: str = "", *, fatal: bool = False, ref: str | None = None):
        super().__init__(f"{error.code} {error.reason}: {detail}" if detail else f"{error.code} {error.reason}")
        self.error = error
        self.detail = detail
        self.fatal = fatal
        # The REF of a SEND that was refused, when it could be read: the ERR carries it,
        # so the sender knows which message failed and does not send it again.
        self.ref = ref
