"""node.wireparse: the SCP's identity of a received data set, read from its bytes, as pydicom's."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from node.wireparse import WireIdentity, WireParseError, read_identity
from tests.node.dicomnet import write_series


def _with_sequences(path: Path) -> Dataset:
    """A CT slice with undefined-length sequences (nested, empty items) before the Study UID."""
    ds = dcmread(path)
    inner = Dataset()
    inner.CodeValue = "X"
    inner.is_undefined_length_sequence_item = True
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.3"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item["PurposeOfReferenceCodeSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    empty = Dataset()
    empty.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([item, empty])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.ProcedureCodeSequence = Sequence([inner])  # defined length
    return ds


def _expected(ds: Dataset) -> WireIdentity:
    return WireIdentity(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        str(ds.Modality),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
    )


@pytest.mark.parametrize("implicit", [True, False])
def test_identity_matches_pydicom_with_sequences(tmp_path: Path, implicit: bool) -> None:
    (path,) = write_series(tmp_path / "in", slices=1)
    ds = _with_sequences(path)
    data = encode(ds, implicit, True)
    assert data is not None
    assert read_identity(data, implicit) == _expected(ds)
    assert read_identity(memoryview(data), implicit) == _expected(ds)


def test_undefined_length_un_element_is_walked_as_implicit(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "in", slices=1)
    ds = dcmread(path)
    data = encode(ds, False, True)
    assert data is not None
    # A private sequence sent as UN with undefined length: its content is Implicit VR.
    item_element = struct.pack("<HHI", 0x0009, 0x1002, 4) + b"abcd"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item_element
    item += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    un = struct.pack("<HH", 0x0009, 0x1001) + b"UN\0\0" + struct.pack("<I", 0xFFFFFFFF)
    un += item + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    cut = data.index(struct.pack("<HH", 0x0010, 0x0010))  # before Patient's Name, after group 8
    assert read_identity(data[:cut] + un + data[cut:], False) == _expected(ds)


def test_missing_values_are_empty_and_padding_is_stripped() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.StudyInstanceUID = "1.2.3"  # odd length: padded with NUL on the wire
    data = encode(ds, False, True)
    assert data is not None
    assert read_identity(data, False) == WireIdentity("", "", "CT", "1.2.3", "")


def test_truncated_or_malformed_data_is_declined(tmp_path: Path) -> None:
    (path,) = write_series(tmp_path / "in", slices=1)
    ds = _with_sequences(path)
    data = encode(ds, False, True)
    assert data is not None
    cut = data.index(struct.pack("<HH", 0x0008, 0x1140)) + 40  # inside the sequence
    with pytest.raises(WireParseError):
        read_identity(data[:cut], False)
    with pytest.raises(WireParseError):
        read_identity(data[: -len(data) // 2 + 3], True)  # read as Implicit VR: lengths are wrong
