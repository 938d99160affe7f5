"""Operational helpers that are not part of the science (GPU slot allocation for local multi-GPU runs)."""
