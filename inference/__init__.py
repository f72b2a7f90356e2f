"""Image analysis on arrays in millimetres: segmentation, planning, C2 assessment, phantoms."""
