"""The client's protocol logic without a network: which MSGs are shown, which are second copies."""

from __future__ import annotations

from hellohi.client_session import SEEN_IDS_REMEMBERED, ClientSession, DuplicateDropped, MessageReceived
from hellohi.codec import Ack, Err, Msg


def deliver(session: ClientSession, *ids: int) -> list[str]:
    """Feed MSGs with these ids; 'new' or 'dup' for each. A second copy is ACKed again at
    once; a new message is ACKed by acknowledge(), when the application has it."""
    out = []
    for id in ids:
        events, replies = session.receive(Msg(id, "alice", f"m{id}".encode()))
        (event,) = events
        assert isinstance(event, (MessageReceived, DuplicateDropped))
        if isinstance(event, MessageReceived):
            assert replies == [] and session.acknowledge(event) == Ack(id)
        else:
            assert replies == [Ack(id)]
        out.append("new" if isinstance(event, MessageReceived) else "dup")
    return out


def test_in_order_ids_and_their_second_copies():
    # TCP and reliable UDP: ids grow; a server that restarts sends unACKed ones again.
    assert deliver(ClientSession("bob"), 3, 7, 7, 9, 3, 10) == ["new", "new", "dup", "new", "dup", "new"]


def test_reordered_ids_are_shown_once_each():
    # Plain UDP: a lower id may arrive after a higher one and is still a new message.
    assert deliver(ClientSession("bob"), 2, 3, 1, 6, 4, 5, 4, 1, 6) == ["new"] * 6 + ["dup"] * 3


def test_the_memory_of_seen_ids_is_bounded():
    session = ClientSession("bob")
    count = SEEN_IDS_REMEMBERED + 100
    ids = list(range(2, 2 * count + 2, 2))  # even ids: the odd ones between are never seen
    assert deliver(session, *ids) == ["new"] * count
    assert len(session._seen_ids) == len(session._seen_heap) == SEEN_IDS_REMEMBERED
    # Every id shown is still dropped, remembered one by one or below the floor.
    assert deliver(session, ids[0], ids[99], ids[100], ids[-1]) == ["dup"] * 4
    # An odd id overtaken by fewer than SEEN_IDS_REMEMBERED later ones is shown; one far older counts as seen.
    assert deliver(session, ids[-1] - 1, 1) == ["new", "dup"]


def test_an_err_without_a_ref_leaves_sends_unconfirmed_to_be_sent_again():
    # ERR 500 store-unavailable names no SEND: they were not refused, only not confirmed.
    session = ClientSession("alice")
    send = session.send("bob", b"hi")
    session.receive(Err(500, "store-unavailable", None, "the message store cannot be written"))
    assert session.unconfirmed() == [send]
