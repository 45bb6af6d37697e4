"""What the relay promises over either transport, tested once for both: a server
process of each kind, its own client library, sockets on 127.0.0.1.

What only one transport has (TCP's stream framing, UDP's loss recovery, sessions
and amplification limit) is in tests/test_tcp.py and tests/test_udp.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from hellohi import eventloop
from hellohi.codec import DEFAULT_MAX_BODY, Msg
from hellohi.launcher import REPO_ROOT
from hellohi.client_session import MessageReceived, OnlineList, Registered, StatusChanged
from tcp.client import TcpChatClient
from tests.support import Servers, live_relay, next_of, ring_of_clients, wait_until_async
from udp.client import UdpChatClient

CLIENTS = {"tcp": TcpChatClient, "udp": UdpChatClient}


@pytest.fixture(params=sorted(CLIENTS))
def transport(request, tmp_path):
    """(server starter, client class) for one transport; the servers stop at the end."""
    servers = Servers(request.param, tmp_path)
    yield servers, CLIENTS[request.param]
    servers.stop_all()


def test_live_relay_and_ticks(transport):
    server, client = transport
    message, ref, states = asyncio.run(live_relay(client, server().port))
    assert (message.sender, message.body) == ("alice", b"hi bob")
    assert states == ["stored", "delivered"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_live_relay_on_either_event_loop(transport, loop):
    # Server and clients both on `loop`: asyncio's own loop is what runs where uvloop does not.
    server, client = transport
    message, ref, states = eventloop.run(live_relay(client, server("--loop", loop).port), loop)
    assert (message.sender, message.body, states) == ("alice", b"hi bob", ["stored", "delivered"])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_server_stopped_with_clients_connected_shuts_down_without_a_traceback(transport, tmp_path, loop):
    server, client = transport
    running = server("--loop", loop)

    async def connected_when_stopped():
        alice, bob = client("127.0.0.1", running.port, "alice"), client("127.0.0.1", running.port, "bob")
        await alice.connect(), await bob.connect()
        alice.send("bob", "in flight as the server stops")
        running.stop()  # SIGTERM, then wait for the process to exit
        await alice.close(), await bob.close()

    asyncio.run(connected_when_stopped())
    assert running.process.returncode == 0
    log = (tmp_path / "server.log").read_text()
    assert "shutting down" in log
    assert "Traceback" not in log and "Exception" not in log, log


def test_fifty_concurrent_clients_lose_and_duplicate_nothing(transport):
    server, client = transport
    count, per_client = 50, 10
    inboxes, extra = asyncio.run(ring_of_clients(client, server().port, count, per_client))
    for n, inbox in enumerate(inboxes):
        sender = (n - 1) % count
        assert inbox == [f"{sender}:{k}".encode() for k in range(per_client)], f"c{n} got {inbox}"
    assert not any(isinstance(event, MessageReceived) for event in extra)


def test_who_in_a_class_whose_names_outgrow_one_line(transport):
    """Forty 32-character names: an ONLINE line of 1,300 bytes, past the 1024 a client
    reads. The server pages the answer; the client library gives one list and stays on."""
    server, client = transport
    port = server().port
    names = sorted(f"student-{n:02d}-" + "x" * 21 for n in range(40))

    async def ask_who():
        students = [client("127.0.0.1", port, name) for name in names]
        for student in students:
            await student.connect()
        asker = students[0]
        asker.request_who()
        answers = []
        while (event := await asker.next_event(timeout=5)) is not None:
            answers.append(event)
            if isinstance(event, OnlineList):
                break
        for student in students:
            await student.close()
        return answers

    answers = asyncio.run(ask_who())
    assert [type(event) for event in answers if not isinstance(event, Registered)] == [OnlineList]
    assert answers[-1].names == tuple(names)


def test_messages_the_program_did_not_take_stay_stored_for_next_time(transport):
    """A message is ACKed when the program takes it from next_event(), not when it
    reaches the library: a program that takes two of five and leaves (as `--expect 2`
    does) finds the other three waiting next time, and not the two again."""
    server, client = transport
    port = server().port

    async def take_two_then_the_rest():
        bob = client("127.0.0.1", port, "bob")
        await bob.connect(), await bob.close()
        alice = client("127.0.0.1", port, "alice")
        await alice.connect()
        for n in range(5):
            alice.send("bob", f"message {n}")
        stored = 0
        while stored < 5:
            event = await alice.next_event(timeout=5)
            stored += isinstance(event, StatusChanged) and event.state == "stored"
        await alice.close()
        arrived: list[Msg] = []  # every MSG that reached the library, taken by the program or not

        def note_messages(way: str, frame) -> None:
            if way == "<-" and isinstance(frame, Msg):
                arrived.append(frame)

        first, later = client("127.0.0.1", port, "bob", trace=note_messages), []
        await first.connect()
        taken = [await next_of(first, MessageReceived) for _ in range(2)]
        await wait_until_async(lambda: len(arrived) == 5, "the other three in the library's inbox")
        await first.close()
        second = client("127.0.0.1", port, "bob")
        await second.connect()
        while (event := await second.next_event(timeout=1)) is not None:
            if isinstance(event, MessageReceived):
                later.append(event.body)
        await second.close()
        return [event.body for event in taken], later

    taken, later = asyncio.run(take_two_then_the_rest())
    assert taken == [b"message 0", b"message 1"]
    assert later == [b"message 2", b"message 3", b"message 4"]


def test_a_message_over_the_protocols_limit_is_refused_by_the_client_not_sent(transport):
    # Sent, it got ERR 413 and the interactive client gave up for good; a line over 1 MiB
    # raised a traceback in the UDP client (over the reliability layer's largest message).
    server, client = transport
    argv = [sys.executable, "-m", f"{server.transport}.client", "--server", f"127.0.0.1:{server().port}", "--name", "alice"]
    typed = f"@bob {'x' * (2 * 1024 * 1024)}\n@alice short\n/quit\n"
    chat = subprocess.run(argv, cwd=REPO_ROOT, input=typed, capture_output=True, text=True, timeout=30)
    assert chat.returncode == 0, chat.stdout[-2000:] + chat.stderr[-2000:]
    assert "not sent: the text is 2097152 bytes; a message holds at most 65536; send it in parts" in chat.stdout
    assert "-> alice: short" in chat.stdout and "connection lost" not in chat.stdout
    scripted = subprocess.run([*argv, "--send", "bob:" + "y" * (DEFAULT_MAX_BODY + 1)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=30)
    assert scripted.returncode == 2 and scripted.stderr == (
        "error: --send bob:...: the text is 65537 bytes; a message holds at most 65536; split it into several --send\n")
    with pytest.raises(ValueError, match="a message of 65537 bytes is over the protocol's limit of 65536"):
        client("127.0.0.1", 9, "alice").send("bob", b"z" * (DEFAULT_MAX_BODY + 1))


@pytest.mark.parametrize("name", ["b\u00f6b", "bob\nBYE", "bob\x00"])
def test_a_name_a_header_line_cannot_carry_is_refused_before_anything_is_kept(transport, name):
    # A SEND to "böb" raised UnicodeEncodeError while being written, after the session had
    # kept it as unconfirmed: every reconnect wrote it again and raised again, killing the
    # reconnect task. A LF would have ended the header early, the rest read as a frame of its own.
    _, client = transport
    alice = client("127.0.0.1", 9, "alice")  # never connected: send() only queues
    with pytest.raises(ValueError, match="printable ASCII"):
        alice.send(name, b"hi")
    assert alice.session.unconfirmed() == []
    with pytest.raises(ValueError, match="printable ASCII"):
        client("127.0.0.1", 9, name)


def test_the_scripted_client_prints_hi_before_what_it_sends(transport):
    # The SENDs leave after HI has come (connect() waits for it), but the HI's line was
    # printed after them: a student read that the messages went out before the server
    # had answered Hello.
    server, _ = transport
    argv = [sys.executable, "-m", f"{server.transport}.client", "--server", f"127.0.0.1:{server().port}",
            "--name", "alice", "--send", "alice:hello", "--send", "alice:again"]
    scripted = subprocess.run(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert scripted.returncode == 0, scripted.stdout + scripted.stderr
    lines = scripted.stdout.splitlines()
    assert lines[:2] == [f"[alice] connected to 127.0.0.1:{server.started[-1].port} over {server.transport}",
                         "[alice] HI: registered as alice"]
    assert lines[2].startswith("[alice] -> alice: hello (ref ") and lines[3].startswith("[alice] -> alice: again (ref ")
