"""Metrics, aggregation, paper-style tables and forgetting plots, computed from run records only."""
