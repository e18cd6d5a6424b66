"""llmc: compile large language models to verified FPGA accelerator designs and TVM targets."""

__version__ = "0.1.0"
