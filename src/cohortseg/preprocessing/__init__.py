"""Layer 2: the plan (fingerprint, target grid, patch size), the way in to the plan's grid
and the way back, and the HDF5 patch stores."""
