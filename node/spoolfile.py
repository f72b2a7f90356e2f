"""The spool's file format: a received data set behind file meta that names its sender.

A spool file is a DICOM Part 10 file: preamble, ``DICM``, File Meta Information (Explicit VR
Little Endian, PS3.10 7.1) and then the data set exactly as it came off the wire (no re-encoding).
Besides the usual elements the file meta holds the Sending and Receiving Application Entity
Titles (0002,0017/0018) and the Sending Presentation Address (0002,0027) as ``//host``, so that a
file whose receipt row was lost can be recorded at start-up with who sent it
(:mod:`node.recovery`). The meta is encoded here directly (pydicom's writer costs ~0.25 ms per
instance on the receive path); the tests read it back with pydicom.

The job log's checksum of an instance is :func:`content_sha256`: the transfer syntax and the data
set, not the file meta, so the same instance from another sender is a duplicate, not a conflict.
The file meta also holds that checksum and the data set's length, as Private Information
(0002,0102) of :data:`PRIVATE_CREATOR_UID`: a file written into a pooled spool file
(:mod:`storage.spool_pool`) ends with Data Set Trailing Padding (FFFC,FFFC) up to the pooled
file's size (:func:`padding_trailer`), and start-up recovery tells a whole file from a partly
written one by the checksum (:func:`verified_sha256`).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\x00" * 128 + b"DICM"
_LONG_VRS = frozenset({b"OB", b"UR"})
#: Private Information Creator UID (0002,0100) of the spool's own meta element (a 2.25 UID).
PRIVATE_CREATOR_UID = "2.25.151238207931823307716131406924375227313"
#: Private Information (0002,0102): this tag, the data set's length (uint64 LE), its sha256.
_CONTENT_TAG = b"SPN1"
_CONTENT_SIZE = 4 + 8 + 32
_EXPLICIT_PADDING = b"\xfc\xff\xfc\xffOB\x00\x00"
_IMPLICIT_PADDING = b"\xfc\xff\xfc\xff"
_IMPLICIT_VR_LE = "1.2.840.10008.1.2"
_EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_META_START = len(_PREAMBLE)
#: Where the data set starts is 12 bytes after the group length element's start plus its value.
_GROUP_LENGTH_SIZE = 12


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who sent an instance to whom: AE titles and the sender's host (IP address)."""

    sending_ae: str
    receiving_ae: str
    sending_host: str


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    pad = b"\x00" if vr == b"UI" else b" "
    if len(value) % 2:
        value += pad
    tag = struct.pack("<HH", 0x0002, element)
    if vr in _LONG_VRS:
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    provenance: Provenance,
    content: tuple[int, str] | None = None,
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (with its group length);
    ``content``: the data set's length and :func:`content_sha256` (hex), kept in the meta."""
    host = provenance.sending_host
    private = b""
    if content is not None:
        length, sha = content
        private = _element(0x0100, b"UI", PRIVATE_CREATOR_UID.encode("ascii")) + _element(
            0x0102, b"OB", _CONTENT_TAG + struct.pack("<Q", length) + bytes.fromhex(sha)
        )
    address = f"//[{host}]" if ":" in host else f"//{host}"
    body = b"".join(
        (
            _element(0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, b"UI", sop_class_uid.encode("ascii")),
            _element(0x0003, b"UI", sop_instance_uid.encode("ascii")),
            _element(0x0010, b"UI", transfer_syntax.encode("ascii")),
            _element(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode("ascii")),
            _element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")),
            _element(0x0017, b"AE", provenance.sending_ae.encode("ascii", "replace")),
            _element(0x0018, b"AE", provenance.receiving_ae.encode("ascii", "replace")),
            _element(0x0027, b"UR", address.encode("ascii", "replace")),
            private,
        )
    )
    return _PREAMBLE + _element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def content_sha256(transfer_syntax: str, dataset: bytes | memoryview) -> str:
    """The instance's checksum as the job log records it: sha256 of the transfer syntax UID, a
    NUL byte and the encoded data set."""
    digest = hashlib.sha256(transfer_syntax.encode("ascii"))
    digest.update(b"\x00")
    digest.update(dataset)
    return digest.hexdigest()


def padding_trailer(transfer_syntax: str) -> Callable[[int], bytes | None] | None:
    """For a pooled spool file: given the bytes left after the data set, the header of a Data
    Set Trailing Padding element whose value is the rest of the file (None when they cannot be
    padded so); None for the syntaxes it cannot follow (deflated, big endian)."""
    if transfer_syntax in (_DEFLATED, _EXPLICIT_VR_BE):
        return None
    head = _IMPLICIT_PADDING if transfer_syntax == _IMPLICIT_VR_LE else _EXPLICIT_PADDING

    def trailer(free: int) -> bytes | None:
        value = free - len(head) - 4
        if value < 0 or value % 2:
            return None
        return head + struct.pack("<I", value)

    return trailer


@dataclass(frozen=True, slots=True)
class _Content:
    syntax: str | None
    sha256: str  # of the data set read (to its recorded length when the meta records one)
    recorded: str | None  # the checksum the meta records


def _read_content(path: Path) -> _Content | None:
    with open(path, "rb") as handle:
        head = handle.read(_META_START + _GROUP_LENGTH_SIZE)
        if len(head) < _META_START + _GROUP_LENGTH_SIZE or head[128:140] != (
            b"DICM\x02\x00\x00\x00UL\x04\x00"
        ):
            return None
        (length,) = struct.unpack("<I", head[140:144])
        values = _meta_values(handle.read(length))
        info = values.get(0x0102, b"")
        recorded = None
        if (
            values.get(0x0100, b"").rstrip(b"\x00 ") == PRIVATE_CREATOR_UID.encode()
            and len(info) == _CONTENT_SIZE
            and info.startswith(_CONTENT_TAG)
        ):
            (size,) = struct.unpack("<Q", info[4:12])
            recorded = info[12:].hex()
            dataset = handle.read(size)
        else:
            dataset = handle.read()
    syntax_value = values.get(0x0010)
    syntax = (
        None if syntax_value is None else syntax_value.rstrip(b"\x00 ").decode("ascii", "replace")
    )
    digest = "" if syntax is None else content_sha256(syntax, dataset)
    return _Content(syntax, digest, recorded)


def file_content_sha256(path: Path) -> str | None:
    """:func:`content_sha256` of a spool file (its data set to the length its meta records, when
    it records one: a pooled file's padding is left out); None when it is not a Part 10 file
    whose meta starts with its group length (every file the SCP writes has one)."""
    content = _read_content(path)
    return None if content is None or content.syntax is None else content.sha256


def verified_sha256(path: Path) -> str | None:
    """The checksum of a spool file whose meta records its data set's length and checksum and
    whose data set matches them (a whole file); None for any other file (zeros, a partly
    written one, another format)."""
    content = _read_content(path)
    if content is None or content.syntax is None or content.recorded != content.sha256:
        return None
    return content.sha256


def _meta_values(meta: bytes) -> dict[int, bytes]:
    """The values of an encoded meta group (Explicit VR Little Endian), by element number."""
    values: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(meta):
        element = struct.unpack("<H", meta[offset + 2 : offset + 4])[0]
        vr = meta[offset + 4 : offset + 6]
        if vr in _LONG_VRS or vr in (b"OW", b"UN", b"SQ", b"UT", b"UC"):
            (size,) = struct.unpack("<I", meta[offset + 8 : offset + 12])
            start = offset + 12
        else:
            (size,) = struct.unpack("<H", meta[offset + 6 : offset + 8])
            start = offset + 8
        values[element] = meta[start : start + size]
        offset = start + size
    return values


def read_provenance(path: Path) -> Provenance:
    """The sender and receiver a spool file's meta names ('' for what it does not name).

    Raises
    ------
    InvalidDicomError
        Not a DICOM Part 10 file.
    """
    meta = dcmread(path, stop_before_pixels=True, specific_tags=[]).file_meta
    if meta is None:
        raise InvalidDicomError(f"{path} has no file meta")
    address = str(meta.get("SendingPresentationAddress", "") or "")
    return Provenance(
        sending_ae=str(meta.get("SendingApplicationEntityTitle", "") or "").strip(),
        receiving_ae=str(meta.get("ReceivingApplicationEntityTitle", "") or "").strip(),
        sending_host=address.removeprefix("//").removeprefix("[").removesuffix("]"),
    )
