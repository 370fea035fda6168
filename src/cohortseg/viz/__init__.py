"""Layer 1: figures saved to files (learning curves) and slice montages of an image with its
label map."""
