"""Compression algorithms on NumPy matrices (no IR): quantizers, calibration-aware solvers, masks."""
