"""TID 1500 Comprehensive 3D SR output: per-screw and per-C2-side measurement groups."""
