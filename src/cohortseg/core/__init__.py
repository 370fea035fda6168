"""Layer 0: what every part of cohortseg stands on (errors, paths shown in logs, atomic
files, geometry, the cohort and its shards, pseudonyms, the per-subject failure loop, colours).
numpy and nibabel only: no torch, monai, matplotlib, flwr, h5py or highdicom."""
