"""The UDP server and client for real: a server process, datagrams on 127.0.0.1.

Loss is injected inside the processes (seeded), so none of this needs root. What the
relay promises over either transport is tested once for both in
tests/test_both_transports.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys

import pytest

from hellohi import eventloop
from hellohi.client_session import (ConnectionLost, DuplicateDropped, ErrorReceived, MessageReceived, Registered,
                                    StatusChanged)
from hellohi.codec import Hello
from hellohi.datagram_client import PLAIN_MAX_BODY
from hellohi.launcher import REPO_ROOT
from tests.support import Servers, next_of, refusing_port, registered_client_process, times_logged, wait_until_async
from hellohi.reliable import DEFAULT, TURBO, Impairment
from hellohi.reliable.packet import Packet, decode, encode as encode_packet
from udp.client import ConnectFailed, UdpChatClient


@pytest.fixture
def server(tmp_path):
    servers = Servers("udp", tmp_path)
    yield servers
    servers.stop_all()


def raw_exchange(port: int, datagram: bytes, read_for: float = 0.5) -> list[bytes]:
    """The datagrams a plain UDP socket (like `nc -u`) gets back for `datagram`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, ("127.0.0.1", port))
        sock.settimeout(read_for)
        replies = []
        try:
            while True:
                replies.append(sock.recv(65536))
        except socket.timeout:
            return replies


async def collect(client, count: int, quiet_for: float) -> tuple[list[bytes], int]:
    bodies, duplicates = [], 0
    while len(bodies) < count:
        event = await client.next_event(timeout=quiet_for)
        if event is None:
            break
        if isinstance(event, MessageReceived):
            bodies.append(event.body)
        elif isinstance(event, DuplicateDropped):
            duplicates += 1
    return bodies, duplicates


def lossy(loss: float, seed: int) -> dict:
    return dict(
        impair_send=Impairment(loss=loss, duplicate=0.05, reorder=0.05, delay=0.002, jitter=0.002, seed=seed),
        impair_receive=Impairment(loss=loss, duplicate=0.05, reorder=0.05, delay=0.002, jitter=0.002, seed=seed + 1),
    )


def run_client(port: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "udp.client", "--server", f"127.0.0.1:{port}", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )


# ------------------------------------------------------------ by hand


def test_plain_hello_by_hand_gets_hi(server):
    port = server().port
    # Padded with blank lines, as the plain client does, so the answer fits the
    # no-amplification budget.
    replies = raw_exchange(port, b"Hello alice\n".ljust(200, b"\n"))
    assert replies and replies[0].startswith(b"HI alice hellohi/1 ")
    assert any(reply.startswith(b"PING ") for reply in replies)  # the secret that proves our address


def test_short_hello_gets_no_amplified_answer(server):
    port = server().port
    assert raw_exchange(port, b"Hello\n") == []  # HI is longer than 6 bytes
    loose = server("--amplification-limit", "3").port
    assert raw_exchange(loose, b"Hello bob\n")[0].startswith(b"HI bob ")


# ------------------------------------------------------------ relay


def test_offline_message_survives_sigkill_and_restart(server):
    first = server()

    async def before_crash():
        carol = UdpChatClient("127.0.0.1", first.port, "carol", reconnect=False)
        await carol.connect()
        await carol.close()
        alice = UdpChatClient("127.0.0.1", first.port, "alice", reconnect=False)
        await alice.connect()
        ref = alice.send("carol", b"\x00binary\nbody" + bytes(range(256)) * 20)  # several datagrams
        status = await next_of(alice, StatusChanged)
        assert (status.ref, status.state) == (ref, "stored")
        first.kill()
        await alice.close()

    asyncio.run(before_crash())
    second = server(port=first.port)

    async def after_restart():
        carol = UdpChatClient("127.0.0.1", second.port, "carol", reconnect=False)
        await carol.connect()
        got, _ = await collect(carol, 2, quiet_for=1.0)
        await carol.close()
        return got

    assert asyncio.run(after_restart()) == [b"\x00binary\nbody" + bytes(range(256)) * 20]


def test_a_server_that_stops_tells_its_sessions_so_a_client_that_will_not_reconnect_ends_at_once(server):
    # No FIN over UDP: without the server's RESET the client would learn only from silence,
    # at its 45 s heartbeat timeout.
    running = server()

    async def scenario():
        alice = UdpChatClient("127.0.0.1", running.port, "alice", reconnect=False)
        await alice.connect()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, running.stop)  # SIGTERM: the server closes as it would on Ctrl-C
        lost = await next_of(alice, ConnectionLost, timeout=10)
        await alice.close()
        return lost

    lost = asyncio.run(scenario())
    assert not lost.reconnecting and "the server reset this session: it stopped" in lost.reason


@pytest.mark.parametrize("mode", [[], ["--plain"]], ids=["reliable", "plain"])
def test_a_poll_whose_server_was_killed_does_not_say_done(server, mode):
    # A killed server sends no RESET: the client learns it from its own heartbeat, three
    # PING intervals of silence, which must come within the poll's quiet spell (docs/udp.md).
    running = server()
    client = registered_client_process([sys.executable, "-m", "udp.client", "--server", f"127.0.0.1:{running.port}",
                                        "--name", "bob", *mode, "--heartbeat", "0.1", "--poll", "1.5", "--timeout", "30",
                                        "--json"])
    try:
        running.kill()
        output, errors = client.communicate(timeout=30)
    finally:
        client.kill()
    last = json.loads(output.splitlines()[-1])
    assert client.returncode == 1 and last["event"] == "incomplete", output + errors
    assert last["problems"][0].startswith("the server went away before the poll finished (")


def test_a_refused_hello_frees_its_client_slot_at_once(server):
    # A Hello refused with ERR 409 ends the attempt in the very turn its answer arrives, before
    # the datagram that would echo the new token (and prove the address) goes out: the RESET
    # that follows is then the session's only datagram with that token. Ignored as "unverified",
    # each refused attempt held a client slot until --timeout: here the second got ERR 503.
    running = server("--max-clients", "2")
    log = server.tmp_path / "server.log"

    async def scenario():
        bob = UdpChatClient("127.0.0.1", running.port, "bob")
        await bob.connect()
        for attempt in (1, 2):
            impostor = UdpChatClient("127.0.0.1", running.port, "bob", reconnect=False)
            with pytest.raises(ConnectFailed, match="409"):
                await impostor.connect()
            await impostor.close()
            await wait_until_async(lambda: times_logged(log, "reset by the client") == attempt,
                                   f"the server taking the RESET of refused attempt {attempt}")
        carol = UdpChatClient("127.0.0.1", running.port, "carol")
        try:
            return await carol.connect()
        finally:
            await carol.close()
            await bob.close()

    assert asyncio.run(scenario()) == "carol"


def test_a_refused_attempt_frees_its_client_slot_before_the_client_closes(server):
    # connect() that fails ends its attempt's session there and then, with a RESET: a program
    # that keeps its client after ConnectFailed (to try again later, or to report first) held
    # the name and a client slot until it closed the client, or tried again.
    running = server("--max-clients", "2")
    log = server.tmp_path / "server.log"

    async def scenario():
        bob = UdpChatClient("127.0.0.1", running.port, "bob")
        await bob.connect()
        impostor = UdpChatClient("127.0.0.1", running.port, "bob", reconnect=False)
        with pytest.raises(ConnectFailed, match="409"):
            await impostor.connect()
        carol = UdpChatClient("127.0.0.1", running.port, "carol")
        try:
            await wait_until_async(lambda: times_logged(log, "reset by the client") == 1,
                                   "the server taking the RESET of the refused attempt", timeout=5)
            return await carol.connect()
        finally:
            for client in (carol, impostor, bob):
                await client.close()

    assert asyncio.run(scenario()) == "carol"


def test_a_failed_attempt_to_connect_sends_nothing_more():
    # While a server is down, each attempt to reconnect fails on ICMP "port unreachable". A
    # failed attempt's Hello, left retransmitting (1 s later), registered the name with a
    # server started again meanwhile, in a session nobody waited for, and every later attempt
    # got 409 until that session timed out, 45 s on (after a Ctrl-C and a quick restart).
    heard: list[bytes] = []

    async def scenario(port: int):
        alice = UdpChatClient("127.0.0.1", port, "alice")
        with pytest.raises(ConnectFailed, match="cannot reach"):
            await alice.connect(timeout=5)
        # The server is back: listen where it would, past the Hello's 1 s retransmission timeout.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
            back.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # beside the port's holder
            back.bind(("127.0.0.1", port))
            back.setblocking(False)
            await asyncio.sleep(1.6)
            try:
                while True:
                    heard.append(back.recv(65536))
            except BlockingIOError:
                pass
        await alice.close()

    with refusing_port(socket.SOCK_DGRAM) as port:
        asyncio.run(scenario(port))
    assert heard == []


def test_a_client_that_gave_up_on_a_frozen_server_gets_its_name_back_when_the_server_resumes(server):
    # The server is stopped (SIGSTOP, Ctrl-Z); bob's retransmissions run out and it starts
    # a new session. Without the RESET that ends its old one, the resumed server still held
    # "bob" there and answered every new Hello with ERR 409 until its --timeout, 45 s on.
    running = server()
    impatient = DEFAULT.with_changes(max_retries=2, min_rto=0.05, initial_rto=0.05, max_rto=0.2)

    hellos: list[Hello] = []

    def note_hellos(way: str, frame) -> None:
        if way == "->" and isinstance(frame, Hello):
            hellos.append(frame)

    async def scenario():
        bob = UdpChatClient("127.0.0.1", running.port, "bob", config=impatient, max_backoff=0.5, trace=note_hellos)
        await bob.connect()
        running.process.send_signal(signal.SIGSTOP)
        try:
            bob.request_who()  # never acknowledged: the retries run out
            lost = await next_of(bob, ConnectionLost, timeout=10)
            # A new session's Hello, and the RESET that goes with it, wait in the server's socket.
            await wait_until_async(lambda: len(hellos) == 2, "bob's new session saying Hello")
        finally:
            running.process.send_signal(signal.SIGCONT)
        events = []
        while not any(isinstance(event, Registered) for event in events):
            event = await bob.next_event(timeout=10)
            assert event is not None, f"not registered again within 10 s: {events}"
            events.append(event)
        await bob.close()
        return lost, events

    lost, events = asyncio.run(scenario())
    assert "the server stopped answering" in lost.reason
    assert [event for event in events if isinstance(event, ErrorReceived)] == []


@pytest.mark.parametrize("plain", [False, True], ids=["reliable", "plain"])
def test_client_starts_a_new_session_after_the_server_restarts(server, plain):
    """Reliable: the new server answers the old session's datagram with RESET. Plain: a
    plain session has no RESET, and the new server answers the client's PINGs (allowed
    before Hello) as if all were well; its ERR 401 to the next SEND is what tells the
    client to say Hello again. (The no-amplification rule lets that ERR out only because
    the SEND is longer than it: a shorter one waits for more bytes, docs/udp.md.)
    Either way the SEND goes again in the new session."""
    first = server()

    async def scenario():
        bob = UdpChatClient("127.0.0.1", first.port, "bob", plain=plain, reconnect=False)
        await bob.connect()
        await bob.close()
        alice = UdpChatClient("127.0.0.1", first.port, "alice", plain=plain, max_backoff=0.5)
        await alice.connect()
        first.kill()
        second = server(port=first.port)
        ref = alice.send("bob", "sent to a server that forgot me")
        refused = await next_of(alice, ErrorReceived) if plain else None
        lost = await next_of(alice, ConnectionLost)
        stored = await next_of(alice, StatusChanged, timeout=15)
        await alice.close()
        bob = UdpChatClient("127.0.0.1", second.port, "bob", plain=plain, reconnect=False)
        await bob.connect()
        message = await next_of(bob, MessageReceived)
        await bob.close()
        return refused, lost, ref, stored, message

    refused, lost, ref, stored, message = asyncio.run(scenario())
    if plain:
        assert refused.code == 401 and "ERR 401" in lost.reason
    else:
        assert "the server reset this session" in lost.reason
    assert lost.reconnecting and stored.ref == ref and message.body == b"sent to a server that forgot me"


@pytest.mark.parametrize("config", ["default", "turbo"])
def test_exactly_once_in_order_with_injected_loss(server, config):
    port = server("--loss", "0.1", "--seed", "5").port  # the server's own datagrams are lost too
    count = 150

    async def scenario():
        options = {"config": TURBO} if config == "turbo" else {}
        alice = UdpChatClient("127.0.0.1", port, "alice", **options, **lossy(0.2, seed=11))
        bob = UdpChatClient("127.0.0.1", port, "bob", **options, **lossy(0.2, seed=21))
        await alice.connect(timeout=20), await bob.connect(timeout=20)
        expected = [f"message {i:03d}".encode() for i in range(count)]
        for body in expected:
            alice.send("bob", body)
        got, duplicates = await collect(bob, count, quiet_for=15)
        retransmitted = alice.stats.retransmitted + bob.stats.retransmitted
        dropped = sum(path.dropped for c in (alice, bob) for path in (c.impair_send, c.impair_receive))
        await alice.close(), await bob.close()
        return expected, got, retransmitted, dropped

    expected, got, retransmitted, dropped = asyncio.run(scenario())
    assert got == expected
    assert dropped > 0 and retransmitted > 0


def test_plain_mode_loses_messages_under_the_same_loss(server):
    port = server().port
    count = 60

    async def scenario():
        alice = UdpChatClient("127.0.0.1", port, "alice", plain=True, **lossy(0.0, seed=3))
        bob = UdpChatClient("127.0.0.1", port, "bob", plain=True, **lossy(0.0, seed=4))
        await alice.connect(), await bob.connect()
        for client in (alice, bob):
            client.impair_send.loss = client.impair_receive.loss = 0.2
        for i in range(count):
            alice.send("bob", f"m{i}")
        got, _ = await collect(bob, count, quiet_for=1.0)
        await alice.close(), await bob.close()
        return got

    got = asyncio.run(scenario())
    assert 0 < len(got) < count  # some arrive, some are gone for good


@pytest.mark.parametrize("seed", ["1", "2"])
def test_plain_client_connects_although_its_hello_or_hi_is_lost(server, seed):
    # Lab 2, part 2, as the handout has it: with seed 1 the first Hello is lost,
    # with seed 2 the first HI. The plain client says Hello again after 1 s.
    port = server().port
    result = run_client(port, "--name", "bob", "--plain", "--loss", "0.3", "--seed", seed, "--poll", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HI: registered as bob" in result.stdout


def test_nat_rebinding_keeps_the_session(server):
    port = server().port

    async def scenario():
        alice, bob = UdpChatClient("127.0.0.1", port, "alice"), UdpChatClient("127.0.0.1", port, "bob")
        await alice.connect(), await bob.connect()
        token = alice.link.token
        await alice.rebind()  # a new source port, as after a NAT mapping change
        alice.send("bob", "from my new port")
        first = await next_of(bob, MessageReceived)
        bob.send("alice", "and back")
        second = await next_of(alice, MessageReceived)
        await alice.close(), await bob.close()
        return token, alice.link.token, first, second

    before, after, first, second = asyncio.run(scenario())
    assert before == after
    assert first.body == b"from my new port" and second.body == b"and back"


# ------------------------------------------------------------ bad datagrams


@pytest.mark.parametrize(
    "datagram, answer",
    [
        (b"\xb1", None),  # truncated reliable header: ignored
        (b"\xb1\x00" + bytes(30), None),  # cumulative ack 0: malformed, ignored
        (encode_packet(Packet(0x1234, 0, 1)), b"\xb1\x02"),  # an unknown token: RESET
        (b"\x01\x02garbage", None),  # neither kind: ignored
        (b"FROBNICATE\n".ljust(100, b"\n"), b"ERR 405 unknown-command"),
        (b"SEND bob r1 5\nab".ljust(100, b"\n"), b"ERR 401 hello-first"),
        (b"x" * 5000, b"ERR 413"),  # a header line over --max-line
    ],
)
def test_bad_datagrams_are_ignored_or_answered_and_hurt_no_one(server, datagram, answer):
    port = server().port

    async def scenario():
        alice, bob = UdpChatClient("127.0.0.1", port, "alice"), UdpChatClient("127.0.0.1", port, "bob")
        await alice.connect(), await bob.connect()
        replies = await asyncio.to_thread(raw_exchange, port, datagram, 0.3)
        alice.send("bob", "still fine")
        message = await next_of(bob, MessageReceived)
        await alice.close(), await bob.close()
        return replies, message

    replies, message = asyncio.run(scenario())
    assert message.body == b"still fine"
    if answer is None:
        assert replies == []
    else:
        assert replies and replies[0].startswith(answer), replies


@pytest.mark.parametrize("held_back", [dict(delay=0.05), dict(jitter=0.05, reorder=0.5)], ids=["delay", "jitter+reorder"])
def test_a_plain_client_whose_datagrams_are_held_back_still_says_bye(server, held_back):
    # The in-process impairment holds datagrams back on timers; closing the socket at once
    # dropped the BYE, and the server kept the name for its 45 s timeout (Lab 2, part 3).
    port = server().port

    async def scenario():
        for seed in (1, 2, 3):
            alice = UdpChatClient("127.0.0.1", port, "alice", plain=True, impair_send=Impairment(**held_back, seed=seed))
            await alice.connect(timeout=5)
            await alice.close()
        # Had a BYE been lost, the name would still be taken: ConnectFailed (409).
        again = UdpChatClient("127.0.0.1", port, "alice", plain=True)
        await again.connect(timeout=5)
        await again.close()

    asyncio.run(scenario())


def test_spoofed_token_from_another_address_does_not_take_the_session(server, tmp_path):
    port = server().port

    async def scenario():
        alice, bob = UdpChatClient("127.0.0.1", port, "alice"), UdpChatClient("127.0.0.1", port, "bob")
        await alice.connect(), await bob.connect()
        # An attacker who somehow knows alice's token replays an old packet number from elsewhere.
        forged = encode_packet(Packet(alice.link.token, 1, 1))
        await asyncio.to_thread(raw_exchange, port, forged, 0.3)
        bob.send("alice", "for alice only")
        message = await next_of(alice, MessageReceived)
        await alice.close(), await bob.close()
        return message

    assert asyncio.run(scenario()).body == b"for alice only"
    # Not even for a moment: alice's next datagram would move a taken session back before
    # bob's message, so the message alone proves little. The server's log says.
    log = (tmp_path / "server.log").read_text()
    assert "new session #" in log and " moved from " not in log


# ------------------------------------------------------------ command line


def test_cli_scripted_mode_with_loss_and_json(server):
    port = server().port
    assert run_client(port, "--name", "bob", "--poll", "0.2").returncode == 0
    sends = [arg for i in range(10) for arg in ("--send", f"bob:line {i}")]
    sent = run_client(port, "--name", "alice", *sends, "--loss", "0.2", "--seed", "3", "--timeout", "20")
    assert sent.returncode == 0, sent.stdout + sent.stderr  # every message confirmed stored
    got = run_client(port, "--name", "bob", "--expect", "10", "--json", "--timeout", "20", "--loss", "0.2", "--seed", "4")
    assert got.returncode == 0, got.stdout + got.stderr
    events = [json.loads(line) for line in got.stdout.splitlines()]
    assert [e["text"] for e in events if e["event"] == "message"] == [f"line {i}" for i in range(10)]


def test_cli_says_what_is_wrong(server):
    port = server().port
    with refusing_port(socket.SOCK_DGRAM) as free_port:
        absent = run_client(free_port, "--name", "alice", "--send", "bob:hi", "--timeout", "2")
    assert absent.returncode == 2 and "Is the server running?" in absent.stdout
    assert "Traceback" not in absent.stdout + absent.stderr
    bad_recipient = run_client(port, "--name", "alice", "--send", "bad name:hi", timeout=10)
    assert bad_recipient.returncode == 2 and "1-32 letters, digits" in bad_recipient.stderr
    bad_loss = run_client(port, "--loss", "20")
    assert bad_loss.returncode != 0 and "not a probability" in bad_loss.stderr
    bad_preset = run_client(port, "--preset", "warp")
    assert bad_preset.returncode != 0 and "turbo" in bad_preset.stderr
    busy = subprocess.run([sys.executable, "-m", "udp.server", "--port", str(port), "--store", ":memory:"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert busy.returncode != 0 and "pick another --port" in busy.stderr and "Traceback" not in busy.stderr


@pytest.mark.parametrize("plain", [False, True], ids=["reliable", "plain"])
def test_a_frame_the_server_cannot_read_is_not_resent_in_a_reconnect_loop(server, plain):
    # Over plain UDP no RESET follows the fatal ERR 400: the client went on as if registered,
    # and its next SEND, in a new session at the server, got an ERR 401 held back there (the
    # no-amplification rule) until it had sent enough: it waited for an answer that never came.
    port = server().port

    async def scenario():
        alice = UdpChatClient("127.0.0.1", port, "alice", plain=plain, max_backoff=0.2)
        await alice.connect()
        alice.send("bad name", b"hi")  # (the CLI refuses this name itself): ERR 400, session closed
        lost = await next_of(alice, ConnectionLost)
        registered = alice.connected
        later = await alice.next_event(timeout=1.0)  # a new session would say HI (and be refused again)
        await alice.close()
        return lost, registered, later

    lost, registered, later = asyncio.run(scenario())
    assert not lost.reconnecting and "400 bad-frame" in lost.reason
    assert not registered
    assert later is None


def test_a_plain_client_keeps_its_session_after_a_400_that_names_its_send(server):
    # A TO that is one word but no name is refused by ref, and the session goes on (PROTOCOL.md).
    port = server().port

    async def scenario():
        alice = UdpChatClient("127.0.0.1", port, "alice", plain=True)
        await alice.connect()
        refused = alice.send("bob!", b"hi")
        error = await next_of(alice, ErrorReceived)
        ref = alice.send("alice", b"to myself")
        stored = await next_of(alice, StatusChanged)
        registered = alice.connected
        await alice.close()
        return refused, error, ref, stored, registered

    refused, error, ref, stored, registered = asyncio.run(scenario())
    assert (error.code, error.ref) == (400, refused)
    assert stored.ref == ref and registered


def test_demo_runs():
    result = subprocess.run([sys.executable, "-m", "udp.demo", "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "40 of 40 delivered exactly once, in order" in result.stdout
    assert "plain UDP:" in result.stdout and "lost for good" in result.stdout


def test_connect_to_nothing_fails_clearly():
    async def scenario():
        with refusing_port(socket.SOCK_DGRAM) as nobody:
            client = UdpChatClient("127.0.0.1", nobody, "alice", reconnect=False)
            with pytest.raises(ConnectFailed, match="cannot reach"):  # the kernel's port unreachable, not a timeout
                await client.connect(timeout=2)
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_deadline_timer_keeps_an_earlier_deadline_and_moves_to_a_sooner_one(loop_name):
    from udp.deadline import DeadlineTimer, clock

    async def scenario():
        fired = []
        timer = DeadlineTimer(lambda: fired.append(clock()))
        start = clock()
        timer.set(start + 0.05)
        timer.set(start + 60)  # later: the armed timer stays; the glue re-arms when it fires
        timer.set(start + 0.01)  # sooner: the timer moves
        await asyncio.sleep(0.2)
        # Not before the deadline (also on uvloop, whose own clock counts whole milliseconds), not postponed to +60 s.
        assert len(fired) == 1 and start + 0.01 <= fired[0] < start + 1
        timer.set(clock() + 0.01)
        timer.cancel()
        await asyncio.sleep(0.05)
        assert len(fired) == 1
        # A deadline already past, then a later one: the timer must still compare and fire once.
        timer.set(clock() - 1)
        timer.set(clock() + 60)
        await asyncio.sleep(0.05)
        assert len(fired) == 2

    eventloop.run(scenario(), loop_name)


def test_rtt_samples_on_uvloop_keep_their_microseconds(server):
    # uvloop's loop.time() counts whole milliseconds: a loopback round trip (well
    # under one) taken from it measures 0. The UDP glue reads udp.deadline.clock.
    async def scenario():
        client = UdpChatClient("127.0.0.1", server("--loop", "uvloop").port, "alice")
        await client.connect(timeout=5)
        await next_of(client, Registered)  # connect()'s own HI: take it, so each Hello below waits for its HI
        for _ in range(20):
            client.say_hello()
            await next_of(client, Registered)
        rtt = client.link.endpoint.rtt
        await client.close()
        return rtt

    rtt = eventloop.run(scenario(), "uvloop")
    assert rtt.samples >= 20 and 0 < rtt.min_rtt < 1


def test_a_hello_written_on_its_hi_carries_the_ack_for_it_in_one_datagram(server):
    # The client's acks for a datagram leave at the end of the event loop's turn,
    # after the application has run on what the datagram brought: a Hello written
    # on HI leaves at once and the ack for HI rides in it, so a ping-pong costs one
    # datagram each way, not two.
    async def scenario():
        client = UdpChatClient("127.0.0.1", server().port, "alice")
        await client.connect(timeout=5)
        await next_of(client, Registered)
        before = client.stats.datagrams_sent - client.stats.retransmitted
        for _ in range(20):
            client.say_hello()
            await next_of(client, Registered)
        # First transmissions only: a server stalled past the 50 ms loopback RTO by a busy
        # machine makes a Hello go again, which is no second datagram per round trip.
        sent = client.stats.datagrams_sent - client.stats.retransmitted - before
        await client.close()
        return sent

    assert eventloop.run(scenario()) == 20


class _Recorder(asyncio.DatagramProtocol):
    """Stands between one client and the server, forwards every datagram and writes it
    down with where it came from: what Lab 2 part 6 reads off tshark, without root."""

    def __init__(self):
        self.seen: list[tuple[str, bytes]] = []
        self.client = None
        self.transport = None
        self.upstream = None  # our socket towards the server (its answers come back through _FromServer)

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.client = addr
        self.seen.append(("client", data))
        self.upstream.sendto(data)

    def from_server(self, data: bytes) -> None:
        self.seen.append(("server", data))
        self.transport.sendto(data, self.client)


class _FromServer(asyncio.DatagramProtocol):
    def __init__(self, recorder: _Recorder):
        self.recorder = recorder

    def datagram_received(self, data: bytes, addr) -> None:
        self.recorder.from_server(data)


def test_the_datagrams_lab2_decodes_are_what_the_real_client_and_server_send(server):
    from hellohi.reliable.packet import decode

    port = server().port

    async def scenario():
        bob = UdpChatClient("127.0.0.1", port, "bob", reconnect=False)
        await bob.connect()  # bob is known, and offline when alice writes: her message is stored
        await bob.close()
        loop = asyncio.get_running_loop()
        forward, recorder = await loop.create_datagram_endpoint(_Recorder, local_addr=("127.0.0.1", 0))
        recorder.upstream, _ = await loop.create_datagram_endpoint(lambda: _FromServer(recorder), remote_addr=("127.0.0.1", port))
        alice = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "udp.client", "--server", f"127.0.0.1:{forward.get_extra_info('sockname')[1]}",
            "--name", "alice", "--send", "bob:hi", cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(alice.communicate(), 20)
        def server_said_bye() -> bool:  # the last datagram, which may come after alice has left
            return any(side == "server" and any(fragment.data.startswith(b"BYE") for fragment in decode(data).fragments)
                       for side, data in recorder.seen)

        await wait_until_async(server_said_bye, "the server's BYE")
        forward.close()
        recorder.upstream.close()
        return alice.returncode, output.decode(), recorder.seen

    returncode, output, seen = asyncio.run(scenario())
    assert returncode == 0 and "stored" in output, output
    packets = [(side, decode(data), data) for side, data in seen]
    # (a) The first datagram: HELLO alice, token 0, padded to 1,200 bytes (1,208 with UDP's header).
    side, hello, data = packets[0]
    assert side == "client" and len(data) == 1200 and hello.token == 0
    assert [f.data for f in hello.fragments] == [b"HELLO alice\n"] and data[0] == 0xB1
    # (b) The server's answer: an ack alone (packet number 0, no fragment), at once, with the server's
    # token and a cumulative ack saying alice's packet 1 arrived. Nothing else before her address is proven.
    side, ack, _ = packets[1]
    assert side == "server" and ack.token != 0 and ack.number == 0 and ack.cumulative_ack == 2 and not ack.fragments
    # (c) alice's next datagram: an empty message under the new token, which proves her address.
    side, proof, _ = packets[2]
    assert side == "client" and proof.token == ack.token and [f.data for f in proof.fragments] == [b""]
    # (d) Only now does the relay hear her HELLO: HI, the server's packet 1.
    side, hi, _ = packets[3]
    assert side == "server" and hi.token == ack.token and hi.number == 1
    assert hi.fragments[0].data.startswith(b"HI alice ")
    # Then her SEND, the server's STATUS stored, and a BYE each way.
    texts = [(side, f.data.split(b" ")[0].strip()) for side, p, _ in packets for f in p.fragments if f.data]
    assert texts[2:] == [("client", b"SEND"), ("server", b"STATUS"), ("client", b"BYE"), ("server", b"BYE")]


class _FloodBeforeTheProof(_Recorder):
    """Forwards both ways; just before the client's first datagram with a token (the empty
    message that proves its address) reaches the server, a forged first datagram from another
    address does: the server, full, drops the client's session (never proven) to make room."""

    def datagram_received(self, data: bytes, addr) -> None:
        from hellohi.datagram_client import DatagramLink

        packet = decode(data)
        if packet.token and not packet.is_reset and not any(side == "forged" for side, _ in self.seen):
            forger = DatagramLink(DEFAULT)
            forger.start(0.0)
            forger.send_message(b"HELLO\n", 0.0)
            [first] = forger.datagrams_to_send(0.0)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(first, self.upstream.get_extra_info("peername"))
            self.seen.append(("forged", first))
        super().datagram_received(data, addr)


def test_a_client_whose_session_is_dropped_before_hi_starts_a_new_one(server):
    # PROTOCOL.md section 5: a full server drops the oldest session never proven, and the client
    # "gets RESET for its next datagram and starts over (rule 5)". In its first connect it did
    # not: connect() failed with "cannot reach ...: the server reset this session", and the CLI
    # said "Is the server running?".
    port = server("--max-clients", "1").port

    async def scenario():
        loop = asyncio.get_running_loop()
        forward, recorder = await loop.create_datagram_endpoint(_FloodBeforeTheProof, local_addr=("127.0.0.1", 0))
        recorder.upstream, _ = await loop.create_datagram_endpoint(lambda: _FromServer(recorder), remote_addr=("127.0.0.1", port))
        alice = UdpChatClient("127.0.0.1", forward.get_extra_info("sockname")[1], "alice", reconnect=False)
        try:
            name = await alice.connect(timeout=5)
            return name, list(recorder.seen)  # before close() adds its own
        finally:
            await alice.close()
            forward.close()
            recorder.upstream.close()

    name, seen = asyncio.run(scenario())
    sides = [side if side != "server" or not decode(data).is_reset else "RESET" for side, data in seen]
    assert name == "alice" and sides.index("forged") < sides.index("RESET")


def test_an_echo_carries_the_ack_for_the_message_it_answers_in_one_datagram(server):
    # The ACK is written when the program takes the message; written first in its turn, it
    # left at once in a datagram of its own, and the echo written next went in a second one.
    from hellohi.reliable.packet import decode

    port = server().port

    async def scenario():
        loop = asyncio.get_running_loop()
        forward, recorder = await loop.create_datagram_endpoint(_Recorder, local_addr=("127.0.0.1", 0))
        recorder.upstream, _ = await loop.create_datagram_endpoint(lambda: _FromServer(recorder), remote_addr=("127.0.0.1", port))
        bob = UdpChatClient("127.0.0.1", forward.get_extra_info("sockname")[1], "bob")
        alice = UdpChatClient("127.0.0.1", port, "alice")
        await bob.connect(), await alice.connect()
        for round_trip in range(5):
            alice.send("bob", f"ping {round_trip}")
            await next_of(bob, MessageReceived)  # takes it: the ACK is written...
            bob.send("alice", f"pong {round_trip}")  # ...and the echo, in the same turn
            await next_of(alice, MessageReceived)
        await bob.close(), await alice.close()
        forward.close()
        recorder.upstream.close()
        return recorder.seen

    seen = asyncio.run(scenario())
    from_bob = [[f.data.split(b" ")[0] for f in decode(data).fragments] for side, data in seen if side == "client"]
    echoes = [frames for frames in from_bob if b"SEND" in frames]
    assert len(echoes) == 5 and all(b"ACK" in frames for frames in echoes), from_bob


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_client_stopped_by_kill_or_a_closed_terminal_says_bye(server, signum):
    """UDP has no FIN: a client that a signal ended without BYE kept its name taken (409)
    until the server's --timeout. It now leaves as on Ctrl-C, with the shell's exit status."""
    port = server().port
    client = subprocess.Popen([sys.executable, "-m", "udp.client", "--server", f"127.0.0.1:{port}", "--name", "bob",
                               "--json"], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        while json.loads(client.stdout.readline())["event"] != "registered":
            pass
        client.send_signal(signum)
        output, errors = client.communicate(timeout=30)
    finally:
        client.kill()
    assert client.returncode == 128 + signum, output + errors
    assert "Traceback" not in errors
    again = run_client(port, "--name", "bob", "--poll", "0.2")
    assert again.returncode == 0, again.stdout + again.stderr  # the name is free at once


def test_a_held_back_err_401_just_ahead_of_hi_is_not_taken_for_the_answer_to_hello():
    # A plain client that sent a frame before its Hello (an ACK to a server that forgot it, say)
    # gets ERR 401 for it, held back by the no-amplification rule until the padded Hello lets
    # it out, just ahead of HI. 401 never answers a Hello: the attempt used to fail as refused.
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake_server:
        fake_server.bind(("127.0.0.1", 0))
        fake_server.settimeout(10)

        def answer_the_hello() -> None:
            hello, client = fake_server.recvfrom(65536)
            assert hello.upper().startswith(b"HELLO ALICE")
            fake_server.sendto(b"ERR 401 hello-first say HELLO [NAME] first\n", client)
            fake_server.sendto(b"HI alice hellohi/1 15000\n", client)

        answering = threading.Thread(target=answer_the_hello)
        answering.start()

        async def scenario():
            alice = UdpChatClient("127.0.0.1", fake_server.getsockname()[1], "alice", plain=True)
            await alice.connect(timeout=5)
            events = [await alice.next_event(timeout=5), await alice.next_event(timeout=5)]
            registered = alice.connected
            await alice.close()
            return events, registered

        events, registered = asyncio.run(scenario())
        answering.join()
    assert registered
    assert [type(e) for e in events] == [ErrorReceived, Registered]  # shown, but not the answer
    assert events[0].code == 401 and events[1].name == "alice"


@pytest.mark.parametrize("ending", [b"ERR 500 store-unavailable the message store cannot be written",
                                    b"ERR 408 timeout nothing heard for 45 s",
                                    b"ERR 503 server-full 1000 clients are connected"])
def test_a_plain_client_whose_session_the_server_ended_says_hello_again_and_resends(ending):
    # ERR 500 store-unavailable (or 408 timeout, found waiting by a client that was stopped)
    # ends the session: over TCP the close follows it, over reliable
    # UDP a RESET; over plain UDP nothing does. The client used to go on as if registered,
    # its SEND unconfirmed and not sent again until some later frame of its drew an ERR 401.
    import threading

    seen: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake_server:
        fake_server.bind(("127.0.0.1", 0))
        fake_server.settimeout(10)

        def next_frame() -> tuple[bytes, tuple]:
            while True:
                datagram, client = fake_server.recvfrom(65536)
                frame = datagram.strip()
                if frame and not frame.upper().startswith((b"PONG", b"ACK")):
                    seen.append(frame.split(b"\n")[0])
                    return frame, client

        def serve() -> None:
            for _ in range(2):  # the first session, then the one after ERR 500
                hello, client = next_frame()
                fake_server.sendto(b"HI alice hellohi/1 15000\n", client)
                send, client = next_frame()
                if len(seen) == 2:
                    fake_server.sendto(ending + b"\n", client)
                else:
                    fake_server.sendto(b"STATUS %s stored 1\n" % send.split()[2], client)

        serving = threading.Thread(target=serve)
        serving.start()

        async def scenario():
            alice = UdpChatClient("127.0.0.1", fake_server.getsockname()[1], "alice", plain=True)
            await alice.connect(timeout=5)
            alice.send("bob", b"hi")
            events = []
            while not any(isinstance(event, StatusChanged) for event in events):
                event = await alice.next_event(timeout=5)
                assert event is not None, events
                events.append(event)
            await alice.close()
            return events

        events = asyncio.run(scenario())
        serving.join()
    assert [frame.split()[0].upper() for frame in seen] == [b"HELLO", b"SEND", b"HELLO", b"SEND"]
    assert seen[1] == seen[3]  # the same SEND, its ref too
    assert [type(event) for event in events] == [Registered, ErrorReceived, ConnectionLost, Registered, StatusChanged]


def test_a_plain_hello_said_again_while_its_hi_was_late_is_shown_registered_once():
    # Over plain UDP connect() says Hello again after PLAIN_HELLO_RETRY without HI. On a round
    # trip longer than that both Hellos get their HI: the second came as a second Registered
    # event, and the command line printed "HI: registered as alice" twice. A HI asked for by
    # say_hello() is still an event.
    import threading

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake_server:
        fake_server.bind(("127.0.0.1", 0))
        fake_server.settimeout(10)

        def next_hello() -> tuple:
            while True:
                datagram, client = fake_server.recvfrom(65536)
                if datagram.upper().startswith(b"HELLO"):
                    return client

        def serve() -> None:
            next_hello()
            client = next_hello()  # said again: the first HI is "late", and both come now
            for _ in range(2):
                fake_server.sendto(b"HI alice hellohi/1 15000\n", client)
            fake_server.sendto(b"HI alice hellohi/1 15000\n", next_hello())  # the probe's

        serving = threading.Thread(target=serve)
        serving.start()

        async def scenario():
            alice = UdpChatClient("127.0.0.1", fake_server.getsockname()[1], "alice", plain=True)
            await alice.connect(timeout=5)
            events = [await alice.next_event(timeout=0.5)]
            events.append(await alice.next_event(timeout=0.5))  # the second HI, if shown
            alice.say_hello()
            events.append(await alice.next_event(timeout=5))
            await alice.close()
            return events

        events = asyncio.run(scenario())
        serving.join()
    assert [type(event) for event in events] == [Registered, type(None), Registered]


def test_a_plain_message_must_fit_one_datagram(server):
    # Over plain UDP a SEND of a 65,500-byte body is over the 65,507 bytes one datagram holds:
    # the socket refused it (EMSGSIZE, which asyncio reports to error_received, ignored), and
    # the message stayed unconfirmed for ever. send() and the command line refuse it now.
    port = server().port
    longest = PLAIN_MAX_BODY

    async def scenario():
        alice = UdpChatClient("127.0.0.1", port, "a" * 32, plain=True)
        with pytest.raises(ValueError, match="must fit one datagram"):
            alice.send("bob", b"x" * (longest + 1))
        assert alice.session.unconfirmed() == []
        await alice.connect()
        ref = alice.send("a" * 32, b"y" * longest)  # the longest names: SEND and MSG still fit
        got = await next_of(alice, MessageReceived)
        status = await next_of(alice, StatusChanged)
        await alice.close()
        return ref, got, status

    ref, got, status = asyncio.run(scenario())
    assert got.body == b"y" * longest and status.ref == ref
    argv = [sys.executable, "-m", "udp.client", "--server", f"127.0.0.1:{port}", "--name", "alice", "--plain"]
    scripted = subprocess.run([*argv, "--send", "bob:" + "z" * 65500], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)
    assert scripted.returncode == 2 and scripted.stderr == (
        f"error: --send bob:...: the text is 65500 bytes; a message holds at most {longest} over plain UDP, "
        "where it must fit one datagram; split it into several --send\n")
    chat = subprocess.run(argv, cwd=REPO_ROOT, input=f"@bob {'z' * 65500}\n@alice short\n/quit\n",
                          capture_output=True, text=True, timeout=30)
    assert chat.returncode == 0, chat.stdout[-2000:] + chat.stderr[-2000:]
    assert (f"not sent: the text is 65500 bytes; a message holds at most {longest} over plain UDP, "
            "where it must fit one datagram; send it in parts") in chat.stdout
    assert "-> alice: short" in chat.stdout
