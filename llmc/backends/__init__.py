"""Backends: lowering the IR to targets (TVM for CPUs and GPUs; the FPGA backend next)."""
