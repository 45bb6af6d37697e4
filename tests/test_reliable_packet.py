"""The reliable datagram format: round trips, a fixed example, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hellohi.reliable.packet import (
    FIXED_HEADER,
    FLAG_CHALLENGE,
    FLAG_RESPONSE,
    MAGIC,
    MAX_HEADER,
    Fragment,
    Packet,
    PacketError,
    challenge_packet,
    decode,
    encode,
    is_reliable,
    response_packet,
)
from hellohi.reliable.packet import _HEADER_AND_FRAGMENT, _decode_common_shape, _decode_field_by_field

# The example of docs/udp-reliability.md: token 0x0102030405060708, packet 5,
# everything below 3 received plus packet 4, 1.5 ms ack delay, one fragment
# "hi" (message 2, fragment 0 of 1).
EXAMPLE = Packet(
    token=0x0102030405060708,
    number=5,
    cumulative_ack=3,
    ack_delay=0.0015,
    ranges=((4, 4),),
    fragments=(Fragment(2, 0, 1, b"hi"),),
)
EXAMPLE_HEX = (
    "b1" "00" "0102030405060708" "00000005" "00000003" "0096" "01" "01"
    "00000004" "00000004"
    "00000002" "0000" "0001" "0002" "6869"
)


def test_documented_example_bytes():
    assert encode(EXAMPLE).hex() == EXAMPLE_HEX
    assert decode(bytes.fromhex(EXAMPLE_HEX)) == EXAMPLE


def test_first_byte_is_never_printable_ascii():
    assert not 0x20 <= MAGIC <= 0x7E
    assert is_reliable(encode(EXAMPLE)) and not is_reliable(b"HELLO alice\n") and not is_reliable(b"")


def test_zero_padding_is_accepted_other_trailing_bytes_are_not():
    assert decode(encode(EXAMPLE, pad_to=1200)) == EXAMPLE
    assert len(encode(EXAMPLE, pad_to=1200)) == 1200
    with pytest.raises(PacketError):
        decode(encode(EXAMPLE) + b"\x00\x01")


@st.composite
def packets(draw):
    cumulative = draw(st.integers(1, 2**32 - 40))
    # Ranges above the cumulative ack, newest first, separated by gaps.
    ranges, top = [], draw(st.integers(cumulative + 1, 2**32 - 1))
    for _ in range(draw(st.integers(0, 8))):
        last = top
        first = draw(st.integers(max(cumulative + 1, last - 5), last))
        ranges.append((first, last))
        top = first - 2
        if top <= cumulative:
            break
    number = draw(st.integers(0, 2**32 - 1))
    fragments = []
    if number:
        for _ in range(draw(st.integers(0, 4))):
            count = draw(st.integers(1, 0xFFFF))
            fragments.append(Fragment(draw(st.integers(1, 2**32 - 1)), draw(st.integers(0, count - 1)), count, draw(st.binary(max_size=64))))
    return Packet(
        token=draw(st.integers(0, 2**64 - 1)),
        number=number,
        cumulative_ack=cumulative,
        ack_delay=draw(st.integers(0, 0xFFFF)) * 10e-6,
        ranges=tuple(ranges),
        fragments=tuple(fragments),
        flags=draw(st.sampled_from([0, 1, 2, 3])),
    )


@given(packets())
def test_round_trip(packet):
    decoded = decode(encode(packet))
    assert decoded.ack_delay == pytest.approx(packet.ack_delay)
    assert decoded == Packet(packet.token, packet.number, packet.cumulative_ack, decoded.ack_delay, packet.ranges, packet.fragments, packet.flags)


@given(packets(), st.data())
def test_every_truncation_raises_packet_error(packet, data):
    # Every field is counted, so any strict prefix of a packet is missing
    # something the header promised: it must be refused, never misread.
    datagram = encode(packet)
    cut = data.draw(st.integers(0, len(datagram) - 1))
    with pytest.raises(PacketError):
        decode(datagram[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_packet_error(data):
    try:
        decode(data)
    except PacketError:
        pass


@settings(max_examples=300)
@given(st.binary(min_size=FIXED_HEADER - 1, max_size=200))
def test_arbitrary_bytes_with_magic_raise_only_packet_error(rest):
    try:
        decode(bytes([MAGIC]) + rest)
    except PacketError:
        pass


@st.composite
def common_shape_packets(draw):
    """Packets of the shape most datagrams have: data, no ack ranges, one fragment."""
    count = draw(st.integers(1, 0xFFFF))
    return Packet(
        token=draw(st.integers(0, 2**64 - 1)),
        number=draw(st.integers(1, 2**32 - 1)),
        cumulative_ack=draw(st.integers(1, 2**32 - 1)),
        ack_delay=draw(st.integers(0, 0xFFFF)) * 10e-6,
        fragments=(Fragment(draw(st.integers(1, 2**32 - 1)), draw(st.integers(0, count - 1)), count,
                            draw(st.binary(max_size=64))),),
        flags=draw(st.sampled_from([0, 1, 2, 3])),
    )


# The fields of a common-shape datagram, in the order _HEADER_AND_FRAGMENT packs them, and their widths.
FIELD_BITS = {"magic": 8, "flags": 8, "token": 64, "number": 32, "cumulative_ack": 32, "ack_delay": 16,
              "range_count": 8, "fragment_count": 8, "message_id": 32, "index": 16, "count": 16, "length": 16}
FIELDS = tuple(FIELD_BITS)


def with_field(datagram: bytes, name: str, value: int) -> bytes:
    fields = list(_HEADER_AND_FRAGMENT.unpack_from(datagram))
    fields[FIELDS.index(name)] = value
    return _HEADER_AND_FRAGMENT.pack(*fields) + datagram[_HEADER_AND_FRAGMENT.size:]


GOOD = encode(Packet(token=7, number=5, cumulative_ack=3, fragments=(Fragment(2, 1, 3, b"hello"),)))
# One field of GOOD made wrong, per check the one-unpack path makes; each must send it to the other path.
ONE_FIELD_WRONG = {
    "not the magic": with_field(GOOD, "magic", 0x48),
    "an unknown flag": with_field(GOOD, "flags", 0x80),
    "packet number 0": with_field(GOOD, "number", 0),
    "cumulative ack 0": with_field(GOOD, "cumulative_ack", 0),
    "an ack range": with_field(GOOD, "range_count", 1),
    "no fragment": with_field(GOOD, "fragment_count", 0),
    "two fragments": with_field(GOOD, "fragment_count", 2),
    "message id 0": with_field(GOOD, "message_id", 0),
    "index = count": with_field(GOOD, "index", 3),
    "count 0": with_field(GOOD, "count", 0),
    "data shorter than its length": with_field(GOOD, "length", 6),
    "data longer than its length": with_field(GOOD, "length", 4),
    "zero padding after the data": GOOD + bytes(3),
    "other bytes after the data": GOOD + b"\x01",
    "cut short": GOOD[:-1],
}


def test_the_example_takes_the_one_unpack_path():
    assert _decode_common_shape(GOOD) == _decode_field_by_field(GOOD)


@pytest.mark.parametrize("case", ONE_FIELD_WRONG)
def test_anything_else_is_left_to_the_field_by_field_path(case):
    assert _decode_common_shape(ONE_FIELD_WRONG[case]) is None


@given(common_shape_packets())
def test_a_packet_of_the_common_shape_takes_the_one_unpack_path(packet):
    datagram = encode(packet)
    quick = _decode_common_shape(datagram)
    assert quick is not None and quick == _decode_field_by_field(datagram) == decode(datagram)


@settings(max_examples=1000)
@given(common_shape_packets(), st.sampled_from((None,) + FIELDS), st.integers(0, 2**64 - 1),
       st.sampled_from([b"", b"", b"\x00" * 3, b"\x01"]))
def test_the_one_unpack_path_reads_exactly_what_the_field_by_field_path_reads(packet, field, value, tail):
    # A well-formed packet with at most one field set to any value its width holds.
    datagram = encode(packet)
    if field is not None:
        datagram = with_field(datagram, field, value % 2 ** FIELD_BITS[field])
    datagram += tail
    quick = _decode_common_shape(datagram)
    try:
        careful = _decode_field_by_field(datagram)
    except PacketError:
        assert quick is None  # never accepts what the careful path refuses
        return
    assert quick is None or quick == careful


def test_header_budget_constants():
    assert FIXED_HEADER == 22 and MAX_HEADER == 86


def test_a_challenge_and_its_response_carry_the_secret_in_a_packet_numbered_0():
    secret = bytes.fromhex("0123456789abcdef")
    challenge, response = decode(challenge_packet(7, secret)), decode(response_packet(7, secret))
    assert (challenge.token, challenge.number, challenge.secret) == (7, 0, secret)
    assert challenge.flags == FLAG_CHALLENGE and response.flags == FLAG_RESPONSE and response.secret == secret
    # Any other packet numbered 0 still carries no data.
    unflagged = bytearray(challenge_packet(7, secret))
    unflagged[1] = 0  # the flags byte
    with pytest.raises(PacketError, match="cannot carry data"):
        decode(bytes(unflagged))
