"""Continual-learning methods, the shared training protocol, and the run-record writer."""
