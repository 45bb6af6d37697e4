"""The reliable datagram's wire format: a fixed header, acks, then fragments.

All integers are big-endian (network order). See docs/udp-reliability.md for
the byte layout table and examples in hex.

    offset size  field
    0      1     magic 0xB1: "reliable hellohi, version 1"; never printable ASCII,
                 so it cannot be confused with a PLAIN datagram (a raw text frame)
    1      1     flags: 0x01 PING (ack this now), 0x02 RESET (I do not know this token),
                 0x04 CHALLENGE (prove you receive at this address), 0x08 RESPONSE
                 (to a CHALLENGE); these two carry their secret as the only fragment
                 of a packet numbered 0, which no other packet may be
    2      8     session token (0 = the server has not issued one yet)
    10     4     packet number (1, 2, 3...; 0 = carries no data: pure ack or keepalive)
    14     4     cumulative ack: every packet number below this one has arrived
    18     2     ack delay, in units of 10 microseconds
    20     1     R = number of selective-ack ranges
    21     1     F = number of data fragments
    22     8*R   ranges: first u32, last u32 (inclusive), packets received above the
                 cumulative ack, newest range first
    ...    F*    fragments: message id u32, fragment index u16, fragment count u16,
                 data length u16, then the data
    ...          zero bytes of padding, if any, up to the end of the datagram

A data packet keeps its packet number when it is retransmitted (like a TCP
sequence number, counting packets instead of bytes); only the ack fields are
refreshed. That is why Karn's rule is needed (see rtt.py).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

MAGIC = 0xB1
FLAG_PING = 0x01
FLAG_RESET = 0x02
FLAG_CHALLENGE = 0x04
FLAG_RESPONSE = 0x08
KNOWN_FLAGS = FLAG_PING | FLAG_RESET | FLAG_CHALLENGE | FLAG_RESPONSE

HEADER = struct.Struct("!BBQIIHBB")
RANGE = struct.Struct("!II")
FRAGMENT = struct.Struct("!IHHH")
FIXED_HEADER = HEADER.size  # 22
FRAGMENT_HEADER = FRAGMENT.size  # 10
MAX_SACK_RANGES = 8
MAX_HEADER = FIXED_HEADER + MAX_SACK_RANGES * RANGE.size  # 86
ACK_DELAY_UNIT = 10e-6  # seconds per unit of the ack delay field
MAX_PACKET_NUMBER = 0xFFFFFFFF  # the field's limit; the endpoint never sends this one (see endpoint.py)
MAX_MESSAGE_ID = 0xFFFFFFFF  # message ids run 1 ... this, then start again at 1


class PacketError(Exception):
    """A datagram that is not a well-formed reliable packet."""


def is_reliable(datagram: bytes) -> bool:
    """Byte 0 tells the kinds apart: printable ASCII means a PLAIN text frame."""
    return bool(datagram) and datagram[0] == MAGIC


def packet_number(datagram: bytes) -> int:
    """A reliable datagram's packet number, read in place; 0 for one that carries no data,
    for a PLAIN datagram, and for one too short to have a header."""
    if not is_reliable(datagram) or len(datagram) < FIXED_HEADER:
        return 0
    return int.from_bytes(datagram[10:14], "big")


# Named tuples rather than frozen dataclasses: a Packet is built for every datagram
# received and a Fragment for every piece of a message sent or received, and a
# frozen dataclass takes twice as long to build.
class Fragment(NamedTuple):
    message_id: int
    index: int
    count: int
    data: bytes


class Packet(NamedTuple):
    token: int
    number: int  # 0: no data, not acknowledged, never retransmitted
    cumulative_ack: int
    ack_delay: float = 0.0  # seconds
    ranges: tuple[tuple[int, int], ...] = ()
    fragments: tuple[Fragment, ...] = ()
    flags: int = 0

    @property
    def is_ping(self) -> bool:
        return bool(self.flags & FLAG_PING)

    @property
    def is_reset(self) -> bool:
        return bool(self.flags & FLAG_RESET)

    @property
    def secret(self) -> bytes:
        """What a CHALLENGE asks to be sent back, or a RESPONSE sends back."""
        return self.fragments[0].data if self.fragments else b""


def encode(packet: Packet, pad_to: int = 0) -> bytes:
    """The datagram for `packet`, padded with zero bytes to `pad_to` bytes if shorter."""
    return encode_fields(
        packet.token,
        packet.number,
        packet.cumulative_ack,
        packet.ack_delay,
        packet.ranges,
        packet.fragments,
        packet.flags,
        pad_to,
    )


def reset_packet(token: int) -> bytes:
    """A RESET for session `token`: "forget this session". A 22-byte header, never more
    than any datagram it answers. Servers send it to a session they do not know (or
    when they stop), clients for a session they abandon; nobody ever answers one."""
    return encode(Packet(token, 0, 1, flags=FLAG_RESET))


def _carries_a_secret(flags: int, fragment_count: int) -> bool:
    """A CHALLENGE or RESPONSE: numbered 0, its one fragment is the secret, not data."""
    return bool(flags & (FLAG_CHALLENGE | FLAG_RESPONSE)) and fragment_count == 1


def challenge_packet(token: int, secret: bytes) -> bytes:
    """"Answer this from where you are": the server's check that a session which moved to a
    new address really receives there (QUIC's path validation). Outside the reliable
    stream, so that nothing queued for the client waits ahead of it."""
    return _secret_packet(token, secret, FLAG_CHALLENGE)


def response_packet(token: int, secret: bytes) -> bytes:
    """The client's answer to a CHALLENGE: the same secret, back from its own address."""
    return _secret_packet(token, secret, FLAG_RESPONSE)


def _secret_packet(token: int, secret: bytes, flag: int) -> bytes:
    """Numbered 0 (outside the reliable stream), its one fragment the secret (Packet.secret)."""
    return encode(Packet(token, 0, 1, fragments=(Fragment(1, 0, 1, secret),), flags=flag))


# The most common datagram, one fragment and no ack ranges (a chat frame, or its
# answer, with nothing lost), packs its header and fragment header in one call.
_HEADER_AND_FRAGMENT = struct.Struct(HEADER.format + FRAGMENT.format[1:])


def encode_fields(
    token: int,
    number: int,
    cumulative_ack: int,
    ack_delay: float,
    ranges: tuple[tuple[int, int], ...],
    fragments: tuple[Fragment, ...],
    flags: int = 0,
    pad_to: int = 0,
) -> bytes:
    """encode() without building a Packet first: the endpoint sends one datagram per
    call and would otherwise make a Packet only to take it apart again."""
    if len(ranges) > MAX_SACK_RANGES or len(fragments) > 255:
        raise PacketError("too many ranges or fragments for one packet")
    if number == 0 and fragments and not _carries_a_secret(flags, len(fragments)):
        raise PacketError("data needs a packet number")
    # Clamped to what the 16-bit field holds.
    delay_units = round(ack_delay / ACK_DELAY_UNIT)
    if delay_units > 0xFFFF:
        delay_units = 0xFFFF
    elif delay_units < 0:
        delay_units = 0
    if not ranges and len(fragments) == 1:
        fragment = fragments[0]
        datagram = _HEADER_AND_FRAGMENT.pack(
            MAGIC, flags, token, number, cumulative_ack, delay_units, 0, 1,
            fragment.message_id, fragment.index, fragment.count, len(fragment.data),
        ) + fragment.data
    else:
        parts = [HEADER.pack(MAGIC, flags, token, number, cumulative_ack, delay_units, len(ranges), len(fragments))]
        for first, last in ranges:
            parts.append(RANGE.pack(first, last))
        for fragment in fragments:
            parts.append(FRAGMENT.pack(fragment.message_id, fragment.index, fragment.count, len(fragment.data)))
            parts.append(fragment.data)
        datagram = b"".join(parts)
    if len(datagram) < pad_to:
        datagram += bytes(pad_to - len(datagram))
    return datagram


def decode(datagram: bytes) -> Packet:
    """Parse one datagram; anything malformed raises PacketError and nothing else."""
    packet = _decode_common_shape(datagram)
    return packet if packet is not None else _decode_field_by_field(datagram)


def _decode_field_by_field(datagram: bytes) -> Packet:
    if len(datagram) < FIXED_HEADER:
        raise PacketError(f"{len(datagram)} bytes is shorter than the {FIXED_HEADER}-byte header")
    magic, flags, token, number, cumulative_ack, delay_units, range_count, fragment_count = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise PacketError(f"first byte 0x{magic:02x} is not the reliable magic 0x{MAGIC:02x}")
    if flags & ~KNOWN_FLAGS:
        raise PacketError(f"unknown flags 0x{flags:02x}")
    if cumulative_ack == 0:
        raise PacketError("cumulative ack 0: packet numbers start at 1")
    if range_count > MAX_SACK_RANGES:
        raise PacketError(f"{range_count} ack ranges; at most {MAX_SACK_RANGES}")
    if number == 0 and fragment_count and not _carries_a_secret(flags, fragment_count):
        raise PacketError("packet number 0 cannot carry data")
    size = len(datagram)
    offset = FIXED_HEADER
    ranges = []
    floor = cumulative_ack  # ranges lie above the cumulative ack, newest first, not touching
    previous_first = MAX_PACKET_NUMBER + 2
    for _ in range(range_count):
        if offset + RANGE.size > size:
            raise PacketError("truncated in the ack ranges")
        first, last = RANGE.unpack_from(datagram, offset)
        offset += RANGE.size
        if not floor < first <= last or last + 1 >= previous_first:
            raise PacketError(f"ack range {first}-{last} is out of order or overlaps")
        previous_first = first
        ranges.append((first, last))
    fragments = []
    for _ in range(fragment_count):
        if offset + FRAGMENT_HEADER > size:
            raise PacketError("truncated in a fragment header")
        message_id, index, count, length = FRAGMENT.unpack_from(datagram, offset)
        offset += FRAGMENT_HEADER
        if count == 0 or index >= count:
            raise PacketError(f"fragment {index} of {count} is impossible")
        if message_id == 0:
            raise PacketError("message id 0 is not used")
        if offset + length > size:
            raise PacketError("truncated in fragment data")
        fragments.append(Fragment(message_id, index, count, bytes(datagram[offset : offset + length])))
        offset += length
    # Most datagrams end right here; only padded ones have a tail to check.
    if offset < size and any(datagram[offset:]):
        raise PacketError(f"{size - offset} trailing bytes that are not zero padding")
    return Packet(
        token=token,
        number=number,
        cumulative_ack=cumulative_ack,
        ack_delay=delay_units * ACK_DELAY_UNIT,
        ranges=tuple(ranges),
        fragments=tuple(fragments),
        flags=flags,
    )


def _decode_common_shape(datagram: bytes) -> Packet | None:
    """decode() for the most common datagram (see unpack_common_shape); None for
    anything else, well-formed or not: decode() then reads it field by field
    (_decode_field_by_field), and says what is wrong if something is.

    Every check _decode_field_by_field makes of such a packet is made here too, so
    both ways give the same Packet (tests/test_reliable_packet.py compares them).
    """
    fields = unpack_common_shape(datagram)
    if fields is None:
        return None
    flags, token, number, cumulative_ack, delay_units, message_id, index, count, data = fields
    fragment = Fragment(message_id, index, count, data)
    return Packet(token, number, cumulative_ack, delay_units * ACK_DELAY_UNIT, (), (fragment,), flags)


def unpack_common_shape(datagram: bytes) -> tuple[int, int, int, int, int, int, int, int, bytes] | None:
    """The most common datagram, read with one unpack: a well-formed packet with no
    ack ranges and one fragment that ends the datagram (a chat frame, or its answer,
    with nothing lost). Returns its fields as a plain tuple, without building a
    Packet: (flags, token, number, cumulative_ack, delay_units, message_id, index,
    count, data). None for anything else.
    """
    size = _HEADER_AND_FRAGMENT.size
    # Bytes 20 and 21 (R and F in the table above) count the ack ranges and the
    # fragments: looking at them before unpacking, other datagrams lose next to
    # nothing by trying this way first.
    if len(datagram) < size or datagram[20] != 0 or datagram[21] != 1:
        return None
    (magic, flags, token, number, cumulative_ack, delay_units, _, _,
     message_id, index, count, length) = _HEADER_AND_FRAGMENT.unpack_from(datagram)
    if len(datagram) != size + length:
        return None  # data cut short, or padding or something else after it
    if magic != MAGIC or flags & ~KNOWN_FLAGS or not cumulative_ack:
        return None  # a bad header
    if not number or not message_id or index >= count:  # (count 0 fails here too)
        return None  # a bad fragment, or data without a packet number
    return flags, token, number, cumulative_ack, delay_units, message_id, index, count, bytes(datagram[size:])
