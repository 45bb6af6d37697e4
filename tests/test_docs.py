"""What the docs say about the limits, held against the code: a limit they call fixed has the
code's number, and a flag they name is one the programs take. (They called fixed limits
configurable: a student looking for the flag found none.)"""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from hellohi.chat_client import ChatClient
from hellohi.client_session import SEEN_IDS_REMEMBERED
from hellohi.codec import DEFAULT_MAX_BODY, DEFAULT_MAX_LINE
from hellohi.datagram_relay import DatagramLimits
from hellohi.launcher import REPO_ROOT
from hellohi.options import add_client_arguments, add_udp_arguments
from hellohi.reliable import DEFAULT
from hellohi.store import MessageStore
from tcp.server import build_parser as tcp_server_parser
from udp.server import build_parser as udp_server_parser


def limits_section(path: str, heading: str) -> str:
    """The text under `heading`, up to the next heading, with its line breaks as spaces."""
    text = (REPO_ROOT / path).read_text()
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return " ".join(text[start:end if end != -1 else None].split())


README_LIMITS = limits_section("README.md", "## Guarantees and limits")
UDP_LIMITS = limits_section("docs/udp.md", "## Limits")
PROTOCOL_LIMITS = limits_section("PROTOCOL.md", "## 1. Framing")


def test_the_limits_the_docs_call_fixed_have_the_codes_numbers():
    fixed = README_LIMITS[README_LIMITS.index("Fixed, with no flag:"):]
    refs_kept = inspect.signature(MessageStore).parameters["refs_kept"].default
    max_backoff = inspect.signature(ChatClient).parameters["max_backoff"].default
    for said in (f"header lines of at most {DEFAULT_MAX_LINE} bytes",
                 f"bodies of at most {DEFAULT_MAX_BODY // 1024} KiB",
                 f"the {refs_kept:,} newest refs the server remembers",
                 f"the {SEEN_IDS_REMEMBERED} newest message ids a client remembers",
                 f"reconnect backoff, at most {max_backoff:g} s"):
        assert said in fixed
    fixed = UDP_LIMITS[UDP_LIMITS.index("Fixed, with no flag:"):]
    for said in (f"a reliable message (at most {DEFAULT.max_message // 2**20} MiB)",
                 f"the send window ({DEFAULT.send_window} packets)",
                 f"datagrams held for an unverified address ({DatagramLimits().max_held_datagrams};"):
        assert said in fixed
    assert f"a client reads at most {DEFAULT_MAX_LINE} and {DEFAULT_MAX_BODY:,} bytes, fixed" in UDP_LIMITS


@pytest.mark.parametrize("section", [README_LIMITS, UDP_LIMITS, PROTOCOL_LIMITS], ids=["README", "udp.md", "PROTOCOL"])
def test_the_limits_the_docs_give_a_flag_have_one(section):
    client = argparse.ArgumentParser()
    add_client_arguments(client)
    add_udp_arguments(client, client=True)
    flags = set(re.findall(r"--[a-z-]+", "".join(parser.format_help() for parser in
                                                 (client, tcp_server_parser(), udp_server_parser()))))
    named = set(re.findall(r"`(--[a-z-]+)", section))
    assert named and named <= flags
    assert "configurable" not in section  # a flag is named, or the limit is called fixed


def test_the_clients_timeout_is_said_to_bound_connecting_and_then_the_scripted_run():
    """--timeout is used twice: connect() gets it, and the scripted run gets it again from HI on.
    The docs said only "give up after this long", and a run with a slow connect took 17 s."""
    client = argparse.ArgumentParser()
    add_client_arguments(client)
    said = " ".join(next(a.help for a in client._actions if "--timeout" in a.option_strings).split())
    assert said.startswith("give up connecting after this long; once connected, scripted mode gives up after this long again")
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert ("| `--timeout SECONDS` | give up connecting after this long; once connected, a scripted run gives up "
            "after this long again") in readme
    lab2 = " ".join((REPO_ROOT / "docs/labs/lab2-udp.md").read_text().split())
    assert "the command ends 10 s (`--timeout`) after it connected" in lab2


def test_every_flag_of_every_command_line_says_what_it_does():
    """A flag listed by --help with no words beside it (bench.emulation up had six) leaves the
    student to read the source."""
    import importlib

    parsers = []
    for module in ("bench.cli", "bench.emulation.__main__"):
        top = importlib.import_module(module).build_parser()
        parsers.append(top)
        for action in top._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
    parsers += [tcp_server_parser(), udp_server_parser()]
    for add in (add_client_arguments, lambda parser: add_udp_arguments(parser, client=True)):
        parser = argparse.ArgumentParser(prog="client")
        add(parser)
        parsers.append(parser)
    silent = [f"{parser.prog} {action.option_strings[0]}" for parser in parsers for action in parser._actions
              if action.option_strings and not action.help]
    assert silent == []


LAB1 = (REPO_ROOT / "docs/labs/lab1-tcp.md").read_text()


def test_lab1_starts_on_a_fresh_store_because_its_ids_and_refs_are_a_fresh_stores():
    """Lab 1 says the first SEND is stored as #1 and gets a MSG, and later that alice's message
    is #2. On a store that had run PROTOCOL.md's "Try it by hand" (also alice, also ref r1) the
    lab's SEND was a repeat: STATUS r1 stored 1 and no MSG, and the questions had nothing to ask
    about. The lab now empties the store first and says why a repeat gets no MSG."""
    first_server = LAB1.index("make server-tcp PORT=5000")
    assert LAB1.rindex("rm -f hellohi-tcp.sqlite3*", 0, first_server) > LAB1.index("## 1.")
    assert "alice's `r1` is a repeat" in " ".join(LAB1.split())


def test_lab1_section_3_ends_the_nc_left_open_and_keeps_two_computers_working():
    """Section 3 sent the student to 'the other terminal', where section 2's nc still ran (it
    does not notice the server closing), and restarted the server without --host: with two
    computers, as the lab's opening allows, the clients then could not reach it."""
    section_3 = " ".join(LAB1[LAB1.index("## 3."):LAB1.index("## 4.")].split())
    assert "press Ctrl-C to end the `nc` from section 2" in section_3
    assert "with two computers, add `--host 0.0.0.0` here, and `HOST=0.0.0.0` to the `make server-tcp` below" in section_3


def test_lab1_names_every_file_a_running_servers_store_has_beside_it(tmp_path):
    """Lab 1 has the student run `ls hellohi-tcp.sqlite3*` and ask what the files beside the
    store are; it named -wal and .lock, and the student saw -shm too."""
    path = tmp_path / "hellohi-tcp.sqlite3"
    store = MessageStore(str(path), exclusive=True)
    store.add("alice", "r1", "bob", b"are-you-there", now=0.0)
    store.commit()
    beside = {file.name[len(path.name):] for file in tmp_path.iterdir()} - {""}
    store.close()
    section_3 = LAB1[LAB1.index("## 3."):LAB1.index("## 4.")]
    assert beside and all(f"`{suffix}`" in section_3 for suffix in beside), beside


def test_lab1_asks_for_the_congestion_window_with_a_problem_it_solves():
    """Section 4 lists five TCP mechanisms for the student to match with problems, but gave only
    four problems, all between the two ends: the congestion window, which protects the network,
    was left to be matched with 'a sender faster than its receiver' (the receive window's)."""
    section_4 = " ".join(LAB1[LAB1.index("## 4."):LAB1.index("## 5.")].split())
    assert "a sender faster than the network between them" in section_4
    assert "congestion window" in section_4
    opening = " ".join(LAB1[:LAB1.index("## 1.")].split())
    assert "for sections 1, 2 and 5" in opening and "Connect with `nc`" in " ".join(LAB1[LAB1.index("## 5."):].split())


def test_lab1_does_not_promise_id_2_to_a_student_it_invited_to_send_another_message():
    """Section 2 invites the student to send another message with a new ref (`r2`); that one is
    #2, and section 3's message from alice #3, yet section 3 said flatly that it is #2."""
    section_2 = " ".join(LAB1[LAB1.index("## 2."):LAB1.index("## 3.")].split())
    section_3 = " ".join(LAB1[LAB1.index("## 3."):LAB1.index("## 4.")].split())
    assert "Pick a new ref, `r2`, to send another message" in section_2
    assert "stored as #2 (or higher, if you sent more in section 2" in section_3


def test_udp_md_says_what_becomes_of_a_message_too_large_for_a_plain_recipient():
    """The server drops a MSG too large for one datagram to a plain client (datagram_relay._send)
    but keeps the message stored; the docs said only that a plain client cannot send one."""
    udp = " ".join((REPO_ROOT / "docs/udp.md").read_text().split())
    assert ("A message too large for one datagram as a `MSG` (a TCP or reliable client may send 65,536 "
            "bytes) cannot reach a plain client: it stays stored, is tried again with each new plain "
            "session, and arrives once the recipient connects over TCP or reliable UDP; its sender sees "
            "`stored`, never `delivered`, meanwhile.") in udp
