"""Layer 6 (capability): the annotation loop: the review package for 3D Slicer, corrections
coming back, Slicer's segmentation files."""
