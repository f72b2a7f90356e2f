"""HU bone segmentation, vertebra instance separation and labelling (shared by both engines).

Function API (arrays indexed [slice, row, col], 4×4 affine index → LPS mm):
``working_volume`` crops to the spine and resamples to 1 mm; ``bone_mask`` thresholds bone;
``separate_vertebrae`` splits it into vertebra instances; ``label_levels`` names them.
"""
