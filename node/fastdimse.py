"""The SCP's successful C-STORE responses, encoded directly instead of through pydicom.

pynetdicom 3.0.4 sends every response by filling a pydicom Dataset (each element validated on
assignment), encoding it once to compute the command group length and again to send it: about a
fifth of the SCP's Python time per received CT slice. A successful C-STORE response is seven
fixed elements (PS3.7 9.3.1.2), so :class:`StoreResponseDIMSE` encodes it with ``struct`` (Implicit
VR Little Endian, PS3.7 6.3.1) into the same single P-DATA primitive pynetdicom would send; every
other message (failures with their comments, C-ECHO, anything else) takes pynetdicom's path. The
bytes are the same as pynetdicom's (a test compares them). Unlike pynetdicom's path, the shortcut
does not trigger ``EVT_DIMSE_SENT`` (only pynetdicom's debug logging listens to it).
"""

from __future__ import annotations

import struct

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE, DimsePrimitiveType
from pynetdicom.pdu_primitives import P_DATA

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
#: Message control header of the last (here: only) fragment of a command (PS3.8 E.2).
_LAST_COMMAND_FRAGMENT = b"\x03"


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\x00" if len(encoded) % 2 else encoded


def encode_store_response(primitive: C_STORE) -> bytes | None:
    """The command set of a C-STORE response without Offending Element or Error Comment, or
    None for any other primitive (encode it with pynetdicom)."""
    if (
        primitive.MessageIDBeingRespondedTo is None
        or primitive.Status is None
        or primitive.AffectedSOPClassUID is None
        or primitive.AffectedSOPInstanceUID is None
        or primitive.OffendingElement is not None
        or primitive.ErrorComment is not None
    ):
        return None
    body = b"".join(
        (
            _element(0x0002, _uid(str(primitive.AffectedSOPClassUID))),
            _element(0x0100, struct.pack("<H", _C_STORE_RSP)),
            _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
            _element(0x0800, struct.pack("<H", _NO_DATA_SET)),
            _element(0x0900, struct.pack("<H", primitive.Status)),
            _element(0x1000, _uid(str(primitive.AffectedSOPInstanceUID))),
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


class StoreResponseDIMSE(DIMSEServiceProvider):
    """The DIMSE provider whose :meth:`send_msg` encodes plain C-STORE responses itself."""

    def send_msg(self, primitive: DimsePrimitiveType, context_id: int) -> None:
        # pynetdicom 3.0.4's send_msg (see node.fastassoc.REVIEWED_SOURCES) for all but these.
        command = encode_store_response(primitive) if isinstance(primitive, C_STORE) else None
        if command is None or 0 < self.maximum_pdu_size < len(command) + 7:
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
        self.dul.send_pdu(pdata)
