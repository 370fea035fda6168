"""Layer 1: networks built by name or from the plan (nnU-Net's topology rules), the device
they run on, and trained networks loaded from checkpoints."""
