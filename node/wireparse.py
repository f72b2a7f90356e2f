"""The few attributes the SCP records, read straight from a received data set's bytes.

Decoding a whole CT slice with pydicom (what ``event.dataset`` does) reads every element, the
half-megabyte Pixel Data included, to look at five values at its start. :func:`read_identity` walks
the top-level elements of a Little Endian data set (Implicit or Explicit VR, as received; the pixel
data of compressed syntaxes is encoded the same way) only up to (0020,000E), skipping sequences item
by item, and never looks further. Anything it does not expect (truncated lengths, a malformed
sequence, a value that is not ASCII) raises :class:`WireParseError`, and the caller decodes with
pydicom instead, which refuses what it cannot read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
#: Explicit VRs whose length is a 4-byte field after two reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SOP_CLASS, _SOP_INSTANCE, _MODALITY = 0x00080016, 0x00080018, 0x00080060
_STUDY, _SERIES = 0x0020000D, 0x0020000E
_WANTED = frozenset({_SOP_CLASS, _SOP_INSTANCE, _MODALITY, _STUDY, _SERIES})
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class WireParseError(ValueError):
    """The bytes are not a data set :func:`read_identity` can walk (decode with pydicom)."""


@dataclass(frozen=True, slots=True)
class WireIdentity:
    """Top-level values of a data set ('' where absent), stripped of padding."""

    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    study_uid: str
    series_uid: str


def read_identity(data: bytes | memoryview, implicit_vr: bool) -> WireIdentity:
    """SOP Class/Instance UID, Modality, Study and Series Instance UID of an encoded data set.

    Parameters
    ----------
    data
        The data set as received (Little Endian, not deflated).
    implicit_vr
        True for Implicit VR Little Endian, False for the Explicit VR Little Endian encodings.

    Raises
    ------
    WireParseError
        The elements up to (0020,000E) cannot be walked, or a wanted value is not ASCII.
    """
    values: dict[int, str] = {}
    offset, size = 0, len(data)
    while offset + 8 <= size:
        tag, start, length, vr = _header(data, offset, implicit_vr)
        if tag > _SERIES:
            break
        if length == _UNDEFINED:
            if tag in _WANTED:
                raise WireParseError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has no length")
            offset = _skip_sequence(data, start, implicit_vr or vr == b"UN")
            continue
        end = start + length
        if end > size:
            raise WireParseError("an element runs past the end of the data set")
        if tag in _WANTED:
            try:
                values[tag] = bytes(data[start:end]).strip(b"\x00 ").decode("ascii")
            except UnicodeDecodeError as exc:
                raise WireParseError(f"a value is not ASCII: {exc}") from exc
        offset = end
    return WireIdentity(
        sop_class_uid=values.get(_SOP_CLASS, ""),
        sop_instance_uid=values.get(_SOP_INSTANCE, ""),
        modality=values.get(_MODALITY, ""),
        study_uid=values.get(_STUDY, ""),
        series_uid=values.get(_SERIES, ""),
    )


_Buffer = bytes | memoryview


def _header(data: _Buffer, offset: int, implicit_vr: bool) -> tuple[int, int, int, bytes]:
    """(tag, value start, value length, VR or b'') of the element at ``offset``."""
    if offset + 8 > len(data):
        raise WireParseError("the data set ends inside an element header")
    group, element = _TAG.unpack_from(data, offset)
    tag = group << 16 | element
    if implicit_vr or group == 0xFFFE:  # item and delimiter tags have no VR in any syntax
        return tag, offset + 8, _U32.unpack_from(data, offset + 4)[0], b""
    vr = bytes(data[offset + 4 : offset + 6])
    if vr in _LONG_VRS:
        if offset + 12 > len(data):
            raise WireParseError("the data set ends inside an element header")
        return tag, offset + 12, _U32.unpack_from(data, offset + 8)[0], vr
    return tag, offset + 8, _U16.unpack_from(data, offset + 6)[0], vr


def _skip_sequence(data: bytes | memoryview, offset: int, implicit_vr: bool) -> int:
    """The offset after an undefined-length sequence whose items start at ``offset``."""
    while True:
        tag, start, length, _ = _header(data, offset, True)
        if tag == _SEQUENCE_END:
            return start
        if tag != _ITEM:
            raise WireParseError(f"expected an item in a sequence, found {tag:08X}")
        offset = _skip_item(data, start, implicit_vr) if length == _UNDEFINED else start + length


def _skip_item(data: bytes | memoryview, offset: int, implicit_vr: bool) -> int:
    """The offset after an undefined-length item whose elements start at ``offset``."""
    while True:
        tag, start, length, vr = _header(data, offset, implicit_vr)
        if tag == _ITEM_END:
            return start
        if length == _UNDEFINED:
            offset = _skip_sequence(data, start, implicit_vr or vr == b"UN")
        else:
            offset = start + length
        if offset > len(data):
            raise WireParseError("an element runs past the end of the data set")
