"""DICOM <-> arrays: series assembly and checks, HU volume + affine, SEG/SR/SC writers."""
