"""Layer 1: DICOM series in (found, selected, checked slice by slice), DICOM Segmentation
objects in and out, and DICOM writers for tests and the demo."""
