"""LUT-mpGEMM weight encoding: offset codes and the packed bit-plane layout of docs/lut.md."""
