"""Layer 6 (capability): whole-slide images: slides, tissue, labels, patches, slide training
and inference, pyramids and the slide report."""
