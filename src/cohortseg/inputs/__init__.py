"""Layer 2: what comes in: validation of every subject's files, DICOM and 2D-picture
conversion, and the synthetic demo cohort."""
