"""The message store through its public methods: what survives a restart, what is recognised as a repeat."""

from __future__ import annotations

import os
import sqlite3

import pytest

from hellohi.store import STORE_WAIT, MessageStore, StoreInUse, StoreUnavailable


def test_a_repeated_ref_returns_the_first_copy_and_stores_nothing():
    store = MessageStore()
    assert store.add("alice", "r1", "bob", b"one", now=0) == (1, True)
    assert store.add("alice", "r1", "bob", b"one again", now=1) == (1, False)
    assert store.add("carol", "r1", "bob", b"same ref, other sender", now=2) == (2, True)
    assert [(m.id, m.body) for m in store.waiting("bob")] == [(1, b"one"), (2, b"same ref, other sender")]


def test_ids_are_not_reused_after_every_message_is_gone_and_the_store_reopens(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path)
    for number in range(3):
        store.add("alice", f"r{number}", "bob", b"x", now=0)
    for message_id in (1, 2, 3):
        store.remove(message_id, "bob")
    store.close()
    reopened = MessageStore(path)
    assert reopened.waiting("bob") == []
    assert reopened.add("alice", "r9", "bob", b"new", now=1) == (4, True)
    # A repeat of a message already delivered is still recognised after the restart.
    assert reopened.add("alice", "r0", "bob", b"x", now=1) == (1, False)


def test_writes_not_yet_committed_are_seen_by_reads_and_lost_only_without_commit(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path)
    store.add("alice", "r1", "bob", b"committed", now=0)
    store.commit()
    store.add("alice", "r2", "bob", b"pending", now=0)
    assert [m.ref for m in store.waiting("bob")] == ["r1", "r2"]
    assert store.waiting_counts() == {"bob": 2}
    store.remove(1, "bob")
    assert [m.ref for m in store.waiting("bob")] == ["r2"]
    # A second reader sees only what was committed: r1, as the remove was not.
    assert [m.ref for m in MessageStore(path).waiting("bob")] == ["r1"]


def test_only_the_newest_refs_are_remembered(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path, refs_kept=10)
    for number in range(1012):  # pruning runs once more than refs_kept + 1000 refs are held
        store.add("alice", f"r{number}", "bob", b"x", now=0)
    store.close()
    reopened = MessageStore(path, refs_kept=10)
    assert reopened.add("alice", "r1011", "bob", b"x", now=0) == (1012, False)  # newest: still known
    assert reopened.add("alice", "r1002", "bob", b"x", now=0) == (1003, False)  # tenth newest
    assert reopened.add("alice", "r0", "bob", b"x", now=0) == (1013, True)  # long forgotten: stored anew


def test_refs_kept_must_be_positive():
    with pytest.raises(ValueError, match="refs_kept"):
        MessageStore(refs_kept=0)


def test_acknowledged_messages_are_removed_exactly_in_runs_and_alone():
    store = MessageStore(":memory:")
    for number in range(1, 21):
        store.add("alice", f"r{number}", "bob" if number % 5 else "carol", b"x", 0.0)
    store.commit()
    # bob's 2-4, 7-9 and 11-12 go in runs, 12 again does no harm, and bob's 6 (not acknowledged, between
    # two runs) must stay, as must 13, a gap of one id before bob's lone 14; carol's 5 and 10 are not
    # consecutive: two deletes of one row.
    for message_id in (4, 2, 3, 7, 8, 9, 11, 12, 12, 14):
        store.remove(message_id, "bob")
    for message_id in (5, 10):
        store.remove(message_id, "carol")
    store.commit()
    assert [m.id for m in store.waiting("bob")] == [1, 6, 13, 16, 17, 18, 19]
    assert [m.id for m in store.waiting("carol")] == [15, 20]


def test_an_exclusive_store_is_claimed_until_closed(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    first = MessageStore(path, exclusive=True)
    with pytest.raises(StoreInUse, match=rf"another server uses it \(pid {os.getpid()}\)"):
        MessageStore(path, exclusive=True)
    MessageStore(path).waiting("bob")  # a reader that claims nothing is let in
    first.close()
    MessageStore(path, exclusive=True).close()  # released by close()


def _lock_for_writing(path: str) -> sqlite3.Connection:
    """Another program's connection that holds the store's write lock (as a sqlite3 shell
    left inside a transaction would) until it is rolled back."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_commit_that_cannot_write_raises_store_unavailable_and_keeps_every_write(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path)
    store.add("alice", "r1", "bob", b"first", 0.0)
    store.commit()
    store._db.execute("PRAGMA busy_timeout = 10")  # SQLite's 5 s wait would only slow the test
    store.remember_name("carol")
    store.add("alice", "r2", "bob", b"second", 0.0)
    store.remove(1, "bob")
    other = _lock_for_writing(path)
    with pytest.raises(StoreUnavailable):
        store.commit()
    with pytest.raises(StoreUnavailable):
        store.waiting("bob")  # a read writes what is pending first
    other.rollback()
    other.close()
    store.commit()  # the lock is gone: what was kept is written now
    store.close()
    reopened = MessageStore(path)
    assert [(m.id, m.body) for m in reopened.waiting("bob")] == [(2, b"second")]
    assert reopened.knows("carol")
    assert reopened.first_copy("alice", "r2") == 2


def test_a_write_waits_for_another_programs_lock_only_as_long_as_asked(tmp_path):
    # SQLite's default is 5 s, during which a one-threaded server serves nobody.
    def wait_ms(store: MessageStore) -> int:
        return store._db.execute("PRAGMA busy_timeout").fetchone()[0]

    assert wait_ms(MessageStore(str(tmp_path / "a.sqlite3"))) == round(STORE_WAIT * 1000) < 5000
    assert wait_ms(MessageStore(str(tmp_path / "b.sqlite3"), write_wait=0.01)) == 10


def _hold_a_write_it_cannot_make(store: MessageStore) -> sqlite3.Connection:
    """Give the store a message to write, and return another program's connection holding
    the file's write lock (roll it back to let go)."""
    store._db.execute("PRAGMA busy_timeout = 10")  # SQLite's 5 s wait would only slow the test
    store.add("alice", "r1", "bob", b"hi", 0.0)
    return _lock_for_writing(store.path)


def test_a_store_closed_while_it_cannot_write_lets_go_of_the_file_and_says_so(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path, exclusive=True)
    other = _hold_a_write_it_cannot_make(store)
    with pytest.raises(StoreUnavailable):
        store.close()
    other.rollback()
    MessageStore(path, exclusive=True).close()  # the claim was released all the same


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_server_stopping_while_its_store_cannot_write_logs_one_line_not_a_traceback(tmp_path, transport, caplog):
    import asyncio
    import itertools

    from hellohi.datagram_relay import DatagramRelay
    from hellohi.reliable import DEFAULT
    from hellohi.relay import Relay
    from tcp.server import TcpRelayServer
    from udp.server import UdpRelayServer

    path = str(tmp_path / "store.sqlite3")
    store = MessageStore(path, exclusive=True)
    relay = Relay(store)
    other = _hold_a_write_it_cannot_make(store)

    async def stop() -> None:
        if transport == "tcp":
            await TcpRelayServer(relay).close()
        else:
            UdpRelayServer(DatagramRelay(relay, DEFAULT, new_token=itertools.count(1).__next__)).close()

    asyncio.run(stop())  # no StoreUnavailable out of it
    other.rollback()
    assert "could not write the message store as the server stopped (database is locked)" in caplog.text
    MessageStore(path, exclusive=True).close()
