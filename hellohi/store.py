"""Durable message storage in SQLite.

Every message the relay accepts is written here first and leaves only when its
recipient has acknowledged it, so a message survives the server being killed.

Why SQLite in WAL mode with synchronous=NORMAL: a commit then writes the
transaction to the write-ahead log and hands it to the operating system. The
data survives the server process dying (SIGKILL, a crash) because the kernel
still holds it; only a power cut before the kernel flushes could lose the last
transactions. That is the guarantee a chat relay needs, at a fraction of the
cost of an fsync per message. The relay batches many writes into one commit.

Pass ":memory:" for a store that lives only as long as the process (tests).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so ids only grow
    sender    TEXT NOT NULL,
    ref       TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body      BLOB NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, id);
-- (sender, ref) -> id of messages already accepted, so a SEND repeated after a
-- reconnect is recognised and not stored twice. Pruned to the newest rows.
CREATE TABLE IF NOT EXISTS refs (
    sender TEXT NOT NULL,
    ref    TEXT NOT NULL,
    id     INTEGER NOT NULL,
    PRIMARY KEY (sender, ref)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_id ON refs (id);
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


class MessageStore:
    def __init__(self, path: str = ":memory:", refs_kept: int = 100_000):
        self.path = path
        self.refs_kept = refs_kept
        self._db = sqlite3.connect(path, isolation_level="DEFERRED")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.commit()
        self._names = {row[0] for row in self._db.execute("SELECT name FROM names")}
        self._adds_since_prune = 0
        # AUTOINCREMENT records the highest id ever used, even if that message is gone.
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        self._next_id = (row[0] if row else 0) + 1

    def add(self, sender: str, ref: str, recipient: str, body: bytes, now: float) -> tuple[int, bool]:
        """Store a message; returns (id, True), or (id of the first copy, False) for a repeat."""
        message_id = self._next_id
        # Claiming the ref first turns "is this a repeat?" and "remember it" into one statement.
        claimed = self._db.execute("INSERT OR IGNORE INTO refs (sender, ref, id) VALUES (?, ?, ?)", (sender, ref, message_id))
        if claimed.rowcount == 0:
            row = self._db.execute("SELECT id FROM refs WHERE sender = ? AND ref = ?", (sender, ref)).fetchone()
            return row[0], False
        self._db.execute(
            "INSERT INTO messages (id, sender, ref, recipient, body, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
            (message_id, sender, ref, recipient, body, now),
        )
        self._next_id += 1
        self._adds_since_prune += 1
        if self._adds_since_prune >= 1000:
            self._db.execute("DELETE FROM refs WHERE id <= ?", (message_id - self.refs_kept,))
            self._adds_since_prune = 0
        return message_id, True

    def waiting(self, recipient: str, after_id: int = 0, limit: int = 1000) -> list[StoredMessage]:
        """Messages for `recipient` with id > after_id, oldest first."""
        rows = self._db.execute(
            "SELECT id, sender, ref, recipient, body FROM messages WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?",
            (recipient, after_id, limit),
        )
        return [StoredMessage(*row) for row in rows]

    def remove(self, message_id: int, recipient: str) -> bool:
        """Forget a message its recipient acknowledged. False if it was not there."""
        cursor = self._db.execute("DELETE FROM messages WHERE id = ? AND recipient = ?", (message_id, recipient))
        return cursor.rowcount > 0

    def waiting_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT recipient, COUNT(*) FROM messages GROUP BY recipient"))

    def remember_name(self, name: str) -> None:
        if name not in self._names:
            self._names.add(name)
            self._db.execute("INSERT OR IGNORE INTO names (name) VALUES (?)", (name,))

    def knows(self, name: str) -> bool:
        return name in self._names

    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
