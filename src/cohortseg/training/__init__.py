"""Layer 5: the one trainer (loop in named steps, losses, augmentation, batch order,
checkpoints, stop signals, DDP/Horovod)."""
