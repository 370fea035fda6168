"""A trained model as a MONAI bundle that runs wherever MONAI runs: the transforms and loop it
ships (``transforms``), their self-contained copy under the bundle's ``scripts/``
(``portable``), its configs for inference, training and evaluation (``configs``), its metadata
by the specification (``metadata``), TorchScript and ONNX copies of the network checked against
it (``model_files``), and the export that writes them all (``export``)."""
