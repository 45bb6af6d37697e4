"""Durable message storage in SQLite.

Every message the relay accepts is written here first and leaves only when its
recipient has acknowledged it, so a message survives the server being killed.

Why SQLite in WAL mode with synchronous=NORMAL: a commit then writes the
transaction to the write-ahead log and hands it to the operating system. The
data survives the server process dying (SIGKILL, a crash) because the kernel
still holds it; only a power cut before the kernel flushes could lose the last
transactions. That is the guarantee a chat relay needs, at a fraction of the
cost of an fsync per message. The relay batches many writes into one commit.

Why the store holds writes back until commit(): SQLite's per-statement cost
from Python (about 2 us) was a third of the server's time per relayed message,
and executemany() hands a whole batch of rows over in one call. Writes are
therefore collected in lists and written just before a commit or a read, all
inside the same transaction, so nothing changes for the caller: a message is
as durable as before once commit() returns, and reads see every earlier write.
Repeats are found in a dictionary that mirrors the refs table, so add() needs
no statement at all to tell a new message from a repeated one.

Pass ":memory:" for a store that lives only as long as the process (tests).

Why a server claims its store file (exclusive=True): two servers started with
the same --store would each hand out message ids from their own counter, and
the second to write a taken id would crash. The claim is an flock() on a file
beside the store, PATH.lock, which the kernel releases when the process ends,
however it ends; SQLite's own locks are separate and only last a transaction.

Why a failed write raises StoreUnavailable and loses nothing: another program
may hold SQLite's write lock (a student's `sqlite3` shell left inside a
transaction) for longer than the store waits for it (write_wait), or the disk
may be full. The store then rolls back and keeps every write it had not
committed, to write them again at the next commit; the relay tells the clients involved (ERR 500) and
says nothing about those writes until a commit succeeds.

Why the store waits only STORE_WAIT (0.2 s) for a lock, not SQLite's 5 s: the
server has one thread, and while SQLite waits nobody is served, not even the
clients that never touch the store. A lock our own commits would meet is short
(this process is the store's only writer, and in WAL mode readers never block a
writer), so a lock held longer than that is a program that will not let go soon.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass

try:
    import fcntl
except ImportError:  # Windows: no flock(); a second server there is not stopped
    fcntl = None  # type: ignore[assignment]

# Seconds a write waits for another program's lock before it fails (see the module docstring).
STORE_WAIT = 0.2

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id        INTEGER PRIMARY KEY,  -- chosen by the store, never reused (see _highest_id_used)
    sender    TEXT NOT NULL,
    ref       TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body      BLOB NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, id);
-- (sender, ref) -> id of messages already accepted, so a SEND repeated after a
-- reconnect is recognised and not stored twice. Pruned to the newest rows. The
-- store looks refs up in memory, so this table is only appended to, read once
-- at start and pruned by id: keyed by id, it needs no other index.
CREATE TABLE IF NOT EXISTS refs (
    id     INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    ref    TEXT NOT NULL
);
-- Every name that has ever said Hello: sending to a name not here is an error.
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    sender: str
    ref: str
    recipient: str
    body: bytes


class StoreInUse(Exception):
    """Another process has claimed this store file (MessageStore(exclusive=True))."""


class StoreUnavailable(Exception):
    """SQLite could not write (the file is locked by another program, the disk is full).
    Nothing is lost: the writes not yet committed are kept and tried again at the next commit."""


def _claim(path: str) -> int | None:
    """Take the lock on PATH.lock for this process; the descriptor holds it."""
    if fcntl is None or path == ":memory:":
        return None
    lock_path = path + ".lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise StoreInUse(f"another server uses it{f' (pid {holder})' if holder.isdigit() else ''}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())  # for the message a second server gives
    return fd


class MessageStore:
    def __init__(self, path: str = ":memory:", refs_kept: int = 100_000, exclusive: bool = False,
                 write_wait: float = STORE_WAIT):
        """exclusive: claim the file for this process (a server does; see the module docstring).
        Raises StoreInUse if another process has claimed it. write_wait: seconds a write
        waits for another program's lock before StoreUnavailable."""
        if refs_kept < 1:
            raise ValueError("refs_kept must be at least 1: the newest ref remembers the highest id used")
        self.path = path
        self.refs_kept = refs_kept
        self._lock_fd = _claim(path) if exclusive else None
        try:
            self._db = sqlite3.connect(path, isolation_level="DEFERRED", timeout=write_wait)
        except sqlite3.Error:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            raise
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.commit()
        self._names = {row[0] for row in self._db.execute("SELECT name FROM names")}
        # (sender, ref) -> id, oldest first: the refs table, held in memory too.
        self._refs = {(sender, ref): message_id for sender, ref, message_id in self._db.execute("SELECT sender, ref, id FROM refs ORDER BY id")}
        self._next_id = self._highest_id_used() + 1
        # Writes not yet handed to SQLite (see the module docstring).
        self._new_messages: list[tuple[int, str, str, str, bytes, float]] = []
        self._removed: list[tuple[int, str]] = []
        self._new_names: list[str] = []
        self._forget_refs_upto = 0  # refs with ids up to this one are to be deleted
        # Writes handed to SQLite in the open transaction but not committed: if the commit
        # fails they are rolled back with it, and must go back to the lists above.
        self._uncommitted: tuple[list, list, list] = ([], [], [])

    def _highest_id_used(self) -> int:
        # Ids must never be reused, even after the message is gone: a client may still
        # hold an old id. The newest ref always survives pruning, so refs remember it;
        # stores made before that rule used AUTOINCREMENT, which records it in sqlite_sequence.
        highest = max(
            self._db.execute("SELECT COALESCE(MAX(id), 0) FROM refs").fetchone()[0],
            self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0],
        )
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
            highest = max(highest, row[0] if row else 0)
        return highest

    def first_copy(self, sender: str, ref: str) -> int | None:
        """The id this sender's message with this ref was stored under, if it was (and the
        ref is among the refs_kept newest)."""
        return self._refs.get((sender, ref))

    def add(self, sender: str, ref: str, recipient: str, body: bytes, now: float) -> tuple[int, bool]:
        """Store a message; returns (id, True), or (id of the first copy, False) for a repeat."""
        first_copy = self._refs.get((sender, ref))
        if first_copy is not None:
            return first_copy, False
        message_id = self._next_id
        self._next_id += 1
        self._refs[sender, ref] = message_id
        self._new_messages.append((message_id, sender, ref, recipient, body, now))
        if len(self._refs) > self.refs_kept + 1000:
            self._forget_oldest_refs()
        return message_id, True

    def _forget_oldest_refs(self) -> None:
        # A repeat comes from a client that reconnected with SENDs it had not seen
        # confirmed; refs_kept bounds how far back that may reach. Pruned 1000 at a
        # time so the DELETE is rare.
        oldest = iter(self._refs)
        for key in [next(oldest) for _ in range(len(self._refs) - self.refs_kept)]:
            del self._refs[key]
        self._forget_refs_upto = self._next_id - 1 - self.refs_kept  # done by _write_pending

    def waiting(self, recipient: str, after_id: int = 0, limit: int = 1000, max_bytes: int | None = None) -> list[StoredMessage]:
        """Messages for `recipient` with id > after_id, oldest first: at most `limit` of them,
        and, given `max_bytes`, none after the bodies so far reach it (the first always comes).

        The relay asks for as many as its window has room for, counted in messages and
        in bytes. Stopping at the byte limit matters for large bodies: SQLite hands the
        rows over one at a time, so rows after the break are never read at all.
        """
        with self._kept_if_sqlite_cannot_write():
            self._write_pending()
        rows = self._db.execute(
            "SELECT id, sender, ref, recipient, body FROM messages WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?",
            (recipient, after_id, limit),
        )
        found: list[StoredMessage] = []
        size = 0
        for row in rows:
            if max_bytes is not None and found and size >= max_bytes:
                break
            found.append(StoredMessage(*row))
            size += len(row[4])
        rows.close()
        return found

    def remove(self, message_id: int, recipient: str) -> None:
        """Forget a message its recipient acknowledged (the relay only passes ids it delivered)."""
        self._removed.append((message_id, recipient))

    @contextmanager
    def _kept_if_sqlite_cannot_write(self):
        """Writes inside this block that SQLite refuses ("database is locked", "database or
        disk is full") are rolled back, every write not committed is kept for the next
        try, and StoreUnavailable is raised."""
        try:
            yield
        except sqlite3.OperationalError as error:
            self._db.rollback()
            messages, removed, names = self._uncommitted
            # Oldest first, as they were made: ids stay in order and a removal follows its insert.
            self._new_messages[:0], self._removed[:0], self._new_names[:0] = messages, removed, names
            self._uncommitted = ([], [], [])
            raise StoreUnavailable(str(error)) from None

    def _write_pending(self) -> None:
        # Every statement first, then the lists: if one fails, nothing was taken off them.
        if self._new_messages:
            self._db.executemany(
                "INSERT INTO messages (id, sender, ref, recipient, body, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
                self._new_messages,
            )
            # Every new message has a new ref, and new messages take consecutive ids, so
            # SQLite copies the refs itself: half the cost of handing them over row by row.
            first, last = self._new_messages[0][0], self._new_messages[-1][0]
            self._db.execute("INSERT INTO refs (sender, ref, id) SELECT sender, ref, id FROM messages WHERE id BETWEEN ? AND ?",
                             (first, last))
        if self._removed:
            runs, singles = _consecutive_runs(self._removed)
            self._db.executemany("DELETE FROM messages WHERE recipient = ? AND id BETWEEN ? AND ?", runs)
            self._db.executemany("DELETE FROM messages WHERE id = ? AND recipient = ?", singles)
        if self._new_names:
            self._db.executemany("INSERT OR IGNORE INTO names (name) VALUES (?)", [(name,) for name in self._new_names])
        if self._forget_refs_upto:
            # Not kept for a retry if rolled back: the next pruning deletes these too.
            self._db.execute("DELETE FROM refs WHERE id <= ?", (self._forget_refs_upto,))
            self._forget_refs_upto = 0
        for written, pending in zip(self._uncommitted, (self._new_messages, self._removed, self._new_names)):
            written += pending
            pending.clear()

    def waiting_counts(self) -> dict[str, int]:
        with self._kept_if_sqlite_cannot_write():  # as in waiting(): a refused write loses nothing
            self._write_pending()
        return dict(self._db.execute("SELECT recipient, COUNT(*) FROM messages GROUP BY recipient"))

    def remember_name(self, name: str) -> None:
        if name not in self._names:
            self._names.add(name)
            self._new_names.append(name)  # written with the next commit, like messages

    def knows(self, name: str) -> bool:
        return name in self._names

    def commit(self) -> None:
        """Make every write so far durable; StoreUnavailable if SQLite cannot (see the
        module docstring): the writes are then kept for the next commit."""
        with self._kept_if_sqlite_cannot_write():
            self._write_pending()
            self._db.commit()
        self._uncommitted = ([], [], [])

    def close(self) -> None:
        """Commit, then let go of the file. If the commit fails (StoreUnavailable, raised
        after), the file is let go all the same: a server stopping can wait no longer."""
        try:
            self.commit()
        finally:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the claim
                self._lock_fd = None


def _consecutive_runs(removed: list[tuple[int, str]]) -> tuple[list[tuple[str, int, int]], list[tuple[int, str]]]:
    """Split (id, recipient) pairs into runs of consecutive ids for one recipient, and the rest.

    Acknowledged messages to one recipient mostly have consecutive ids (one sender
    streaming to it, or its backlog drained in order). SQLite deletes a run with one
    `id BETWEEN` statement for about half the cost per row of one DELETE per id.
    A run holds only ids that were all acknowledged, so it never reaches another row.
    """
    by_recipient: dict[str, list[int]] = {}
    for message_id, recipient in removed:
        by_recipient.setdefault(recipient, []).append(message_id)
    runs: list[tuple[str, int, int]] = []
    singles: list[tuple[int, str]] = []  # one row: `id = ?` costs SQLite a little less than a range

    def finish(recipient: str, first: int, last: int) -> None:
        if last > first:
            runs.append((recipient, first, last))
        else:
            singles.append((first, recipient))

    for recipient, ids in by_recipient.items():
        ids.sort()
        first = last = ids[0]
        for message_id in ids[1:]:
            if message_id > last + 1:  # a gap: the run so far is complete
                finish(recipient, first, last)
                first = message_id
            last = message_id
        finish(recipient, first, last)
    return runs, singles
