"""Layer 3: the predictor (sliding window, test-time augmentation), the streaming shard job
that segments many subjects with one model, uncertainty scores, and the MONAI bundle export."""
