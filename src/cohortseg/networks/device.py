"""The device a network runs on."""

from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
