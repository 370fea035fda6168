"""Layer 6 (capability): how far to trust a segmentation: calibration, robustness under
perturbation, explanations."""
