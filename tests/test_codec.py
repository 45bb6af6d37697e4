"""The codec against the shared test vectors, plus property tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hellohi import codec
from hellohi.codec import Decoder, decode_all, encode
from hellohi.errors import ProtocolError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text())


def wire_bytes(vector: dict) -> bytes:
    if "wire_hex" in vector:
        return bytes.fromhex(vector["wire_hex"])
    if "wire_repeat" in vector:
        return vector["wire_repeat"]["text"].encode() * vector["wire_repeat"]["count"]
    return vector["wire"].encode("ascii")


def frame_from(spec: dict) -> codec.Frame:
    fields = {key: value for key, value in spec.items() if key != "type"}
    if "body_hex" in fields:
        fields["body"] = bytes.fromhex(fields.pop("body_hex"))
    if "names" in fields:
        fields["names"] = tuple(fields["names"])
    cls = {
        "HELLO": codec.Hello, "HI": codec.Hi, "SEND": codec.Send, "MSG": codec.Msg, "ACK": codec.Ack,
        "STATUS": codec.Status, "WHO": codec.Who, "ONLINE": codec.Online, "PING": codec.Ping,
        "PONG": codec.Pong, "BYE": codec.Bye, "ERR": codec.Err,
    }[spec["type"]]
    return cls(**fields)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_valid_vector_decodes_to_its_frame(vector):
    assert decode_all(wire_bytes(vector)) == [frame_from(vector["frame"])]


@pytest.mark.parametrize("vector", [v for v in VECTORS["valid"] if not v.get("decode_only")], ids=lambda v: v["name"])
def test_frame_encodes_to_its_exact_bytes(vector):
    assert encode(frame_from(vector["frame"])) == wire_bytes(vector)


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["name"])
def test_invalid_vector_is_refused_with_its_code(vector):
    decoder = Decoder()
    decoder.feed(wire_bytes(vector))
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.error.code == vector["code"]
    assert refused.value.fatal == vector["fatal"]


@pytest.mark.parametrize("line, says", [
    (b"ACK 12a\n", "id must be a whole number, got '12a'"),
    (b"ACK 1000000000000000000\n", "id must be from 0 to 10^18-1 (at most 18 digits), got '1000000000000000000'"),
])
def test_a_number_out_of_range_is_not_called_a_number_that_is_not_whole(line, says):
    decoder = Decoder()
    decoder.feed(line)
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.error.code == 400 and says in str(refused.value)


def test_decoder_goes_on_after_a_non_fatal_error():
    decoder = Decoder()
    decoder.feed(b"FOO\nPING\n")
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    assert decoder.next_frame() == codec.Ping()


@pytest.mark.parametrize("data", [
    b"SEND bob r1 2\nhiXPING\n",
    b"SEND bob r1 x\n",  # leaves nothing buffered: an empty buffer must not read as "no frame yet"
    # A SEND or MSG header that cannot be read: its body would be read as frames.
    "SEND bób r1 3\nBYE\n".encode(),  # not ASCII
    b"SEND bob r1 14\x01\nSEND bob r2 1\nx\n",  # a control character
    b"msg 1 alice 3\x7f\nBYE\n",
])
def test_decoder_stays_broken_after_a_fatal_error(data):
    decoder = Decoder()
    decoder.feed(data)
    for _ in range(2):
        with pytest.raises(ProtocolError) as refused:
            decoder.next_frame()
        assert (refused.value.error.code, refused.value.fatal) == (400, True)


def test_an_unreadable_header_without_a_body_is_skipped():
    decoder = Decoder()
    decoder.feed("HELLO bób\nPING\x01\nPING\n".encode())
    for _ in range(2):
        with pytest.raises(ProtocolError) as refused:
            decoder.next_frame()
        assert not refused.value.fatal
    assert decoder.next_frame() == codec.Ping()


def test_blank_lines_are_skipped():
    assert decode_all(b"\n\r\nPING\n\n") == [codec.Ping()]


@pytest.mark.parametrize("data", [b"SEND bob r1 5\n", b"SEND bob r1 5\nhel", b"PING"], ids=["header alone", "body cut", "no newline"])
def test_data_that_ends_inside_a_frame_is_not_whole_frames(data):
    decoder = Decoder()
    decoder.feed(data)
    assert decoder.next_frame() is None and decoder.mid_frame  # waiting for more, even with nothing buffered
    with pytest.raises(ProtocolError, match="ends in the middle of a frame"):
        decode_all(data)


def test_limits_are_configurable():
    decoder = Decoder(max_line=16, max_body=4)
    decoder.feed(b"SEND bob r1 5\n")
    with pytest.raises(ProtocolError) as refused:
        decoder.next_frame()
    assert refused.value.error.code == 413


# ---------------------------------------------------------------- properties

names = st.from_regex(codec.CHOSEN_NAME, fullmatch=True)
refs = st.from_regex(codec.REF, fullmatch=True)
tokens = st.none() | st.from_regex(codec.PING_TOKEN, fullmatch=True)
ids = st.integers(min_value=0, max_value=10**18 - 1)
bodies = st.binary(max_size=300)
details = st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(lambda text: " ".join(text.split()))

frames = st.one_of(
    st.builds(codec.Hello, st.none() | names, st.none() | st.just("hellohi/1")),
    st.builds(codec.Hi, names, st.integers(0, 10**9)),
    st.builds(codec.Send, names, refs, bodies),
    st.builds(codec.Msg, ids, names, bodies),
    st.builds(codec.Ack, ids),
    st.builds(codec.Status, refs, st.sampled_from(codec.DELIVERY_STATES), ids),
    st.builds(codec.Who),
    st.builds(codec.Online, st.lists(names, max_size=5).map(tuple), st.booleans()),
    st.builds(codec.Ping, tokens),
    st.builds(codec.Pong, tokens),
    st.builds(codec.Bye),
    st.builds(codec.Err, st.integers(100, 999), st.from_regex(r"[a-z][a-z-]{0,20}", fullmatch=True), st.none() | refs, details),
)


@given(st.lists(frames, min_size=1, max_size=8))
def test_round_trip(sequence):
    assert decode_all(b"".join(encode(frame) for frame in sequence)) == sequence


@given(st.lists(frames, min_size=1, max_size=4), st.data())
@settings(max_examples=60)
def test_a_stream_split_at_every_byte_boundary_decodes_the_same(sequence, data):
    wire = b"".join(encode(frame) for frame in sequence)
    for cut in range(len(wire) + 1):
        decoder = Decoder()
        got = []
        for piece in (wire[:cut], wire[cut:]):
            decoder.feed(piece)
            got += decoder.frames()
        assert got == sequence, f"split at byte {cut}"


@given(st.lists(frames, min_size=1, max_size=4))
@settings(max_examples=40)
def test_one_byte_at_a_time_decodes_the_same(sequence):
    decoder = Decoder()
    got = []
    for byte in b"".join(encode(frame) for frame in sequence):
        decoder.feed(bytes([byte]))
        got += decoder.frames()
    assert got == sequence


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_arbitrary_bytes_raise_nothing_but_protocol_error(garbage):
    decoder = Decoder(max_line=64, max_body=64)
    decoder.feed(garbage)
    for _ in range(len(garbage) + 2):
        try:
            if decoder.next_frame() is None:
                break
        except ProtocolError as error:
            if error.fatal:
                break


# The decoder reads STATUS, ACK, MSG, SEND, HELLO (or Hello) and HI written exactly as encode() writes them
# with one regex, and every other line with the careful parser. A CRLF line always
# takes the careful path, so a header decoding the same with LF and with CRLF shows
# that both paths accept, build and refuse alike.
near_canonical_words = st.one_of(
    # Characters on both sides of every character class, lengths across 32 and 64.
    st.text(alphabet="aZ09_.-:[]/+é", min_size=0, max_size=70),
    st.integers(min_value=0, max_value=10**20).map(str),  # 18 digits and more
    st.sampled_from(["stored", "delivered", "Stored", "007", "64", "65"]),
)


def outcomes(decoder: Decoder, data: bytes) -> list:
    decoder.feed(data)
    seen = []
    for _ in range(4):
        try:
            frame = decoder.next_frame()
        except ProtocolError as error:
            seen.append((error.error.code, error.fatal))
            if error.fatal:
                break
            continue
        if frame is None:
            break
        seen.append(frame)
    return seen


common_frames = st.one_of(
    st.builds(codec.Status, refs, st.sampled_from(codec.DELIVERY_STATES), ids),
    st.builds(codec.Ack, ids),
    st.builds(codec.Msg, ids, st.from_regex(codec.ADDRESSABLE_NAME, fullmatch=True), st.binary(max_size=70)),
    st.builds(codec.Send, st.from_regex(codec.ADDRESSABLE_NAME, fullmatch=True), refs, st.binary(max_size=70)),
    st.builds(codec.Hello),
    st.builds(codec.Hello, st.from_regex(codec.ADDRESSABLE_NAME, fullmatch=True)),
    st.builds(codec.Hi, st.from_regex(codec.ADDRESSABLE_NAME, fullmatch=True), st.integers(0, 10**18 - 1),
              st.text(alphabet="hellohi/1.-~!", min_size=1, max_size=12)),
)


@given(common_frames, st.data())
@settings(max_examples=500)
def test_common_frames_decode_alike_on_the_fast_and_the_careful_path(frame, data):
    # Start from a valid frame and perhaps spoil one word, drop the last or add one.
    header, _, rest = encode(frame).partition(b"\n")
    words = header.decode().split(" ")
    if words[0] == "HELLO":
        words[0] = data.draw(st.sampled_from(["HELLO", "Hello", "hello", "HeLLO"]))  # the fast path knows two
    change = data.draw(st.sampled_from(["none", "insert", "grow", "replace", "drop", "add"]))
    at = data.draw(st.integers(1, len(words) - 1)) if len(words) > 1 else 0
    if change == "insert":  # one character on either side of a character class
        word = words[at]
        where = data.draw(st.integers(0, len(word)))
        words[at] = word[:where] + data.draw(st.sampled_from("/+é:[]aZ09_.-")) + word[where:]
    elif change == "grow":  # across a length limit (32, 64, 18 digits)
        words[at] += data.draw(st.sampled_from("a9")) * data.draw(st.integers(1, 40))
    elif change == "replace":
        words[at] = data.draw(near_canonical_words)
    elif change == "drop":
        words.pop()
    elif change == "add":
        words.append(data.draw(near_canonical_words))
    rest += b"\nACK 1\n"  # whatever the header did, the next frame must decode alike too
    header = " ".join(words).encode()
    fast = outcomes(Decoder(max_body=64), header + b"\n" + rest)
    careful = outcomes(Decoder(max_body=64), header + b"\r\n" + rest)
    assert fast == careful


BOUNDARY_WORDS = ["a" * 32, "a" * 33, "a" * 64, "a" * 65, "9" * 18, "9" * 19, "007", "0", "", "stored", "Stored",
                  "delivered", "DELIVERED", "[::1]:5000", "64", "65", *(f"a{c}b" for c in "/+é:[]_.-\t")]


def test_fast_and_careful_paths_agree_on_every_boundary():
    # Every argument of each common frame replaced in turn by a word at or just past a limit,
    # and such a word added after the last (so a bare HELLO is tested too: it has no argument).
    for wire in (encode(codec.Status("r1", "stored", 5)), encode(codec.Ack(5)),
                 encode(codec.Msg(5, "alice", b"body")), encode(codec.Send("bob", "r1", b"body")),
                 encode(codec.Hi("alice", 15000)), encode(codec.Hello()), encode(codec.Hello("alice")),
                 b"Hello\n", b"Hello alice\n"):
        header, _, rest = wire.partition(b"\n")
        words = header.decode().split(" ")
        for at in range(1, len(words) + 1):
            for word in BOUNDARY_WORDS:
                changed = " ".join(words[:at] + [word] + words[at + 1:]).encode()
                tail = rest + b"\nACK 1\n"
                fast = outcomes(Decoder(max_body=64), changed + b"\n" + tail)
                careful = outcomes(Decoder(max_body=64), changed + b"\r\n" + tail)
                assert fast == careful, changed


def test_the_fast_path_keeps_the_line_and_body_limits():
    line = b"SEND bob r1 4\n"  # 13 bytes before the LF
    exact = Decoder(max_line=13, max_body=4)
    exact.feed(line + b"body\n")
    assert exact.frames() == [codec.Send("bob", "r1", b"body")]
    for decoder, code in ((Decoder(max_line=12, max_body=4), 413), (Decoder(max_line=13, max_body=3), 413)):
        decoder.feed(line + b"body\n")
        with pytest.raises(ProtocolError) as refused:
            decoder.next_frame()
        assert (refused.value.error.code, refused.value.fatal) == (code, True)


@given(st.lists(st.from_regex(codec.ADDRESSABLE_NAME, fullmatch=True), max_size=120), st.integers(80, 1024))
def test_online_pages_fit_the_line_and_carry_every_name_once(online, max_line):
    pages = codec.online_pages(online, max_line)
    assert all(len(encode(page)) - 1 <= max_line for page in pages)
    assert [page.more for page in pages] == [True] * (len(pages) - 1) + [False]
    assert [name for page in pages for name in page.names] == online
    assert decode_all(b"".join(encode(page) for page in pages)) == pages


# PROTOCOL.md: "Every line the server sends fits the protocol's 1024 bytes, whatever its own
# --max-line." That includes the ERR that quotes a bad argument back: a client reads no longer
# line, so an ERR that quoted a 1,000-character token whole was itself unreadable to it.
LONG = "x" * 5000
LINES_WITH_A_LONG_BAD_ARGUMENT = [
    f"PING {LONG}", f"PONG {LONG}", f"ACK {'1' * 5000}", f"ACK {LONG}", f"STATUS {LONG} stored 1",
    f"STATUS r1 {LONG} 1", f"STATUS r1 stored {LONG}", f"HI {LONG} hellohi/1 1", f"HI bob hellohi/1 {LONG}",
    f"ONLINE {LONG}!", f"ERR {LONG} bad-frame", f"ERR 400 bad-frame ref={LONG}", f"SEND {LONG}! r1 2\nhi",
    f"SEND bob {LONG}! 2\nhi", f"SEND bob r1 {LONG}", f"SEND bob r1 {'9' * 5000}", f"MSG {LONG} bob 2\nhi",
    f"MSG 1 {LONG}! 2\nhi", f"{LONG}!", f"1{LONG}", LONG,
]


@pytest.mark.parametrize("max_line", [codec.DEFAULT_MAX_LINE, 100_000])
@pytest.mark.parametrize("line", LINES_WITH_A_LONG_BAD_ARGUMENT, ids=lambda line: line[:12])
def test_the_err_for_a_line_with_a_long_bad_argument_fits_the_protocols_line(line, max_line):
    decoder = Decoder(max_line=max_line)
    decoder.feed(line[: max_line].encode() + b"\n")
    with pytest.raises(ProtocolError) as refused:
        decoder.frames()
    err = codec.Err.of(refused.value.error, refused.value.detail, refused.value.ref)
    assert len(encode(err)) - 1 <= codec.DEFAULT_MAX_LINE
