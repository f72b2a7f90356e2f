"""DICOM Segmentation output: vertebrae, C2 pediculoisthmic components, planned screws."""
