"""The bundled model's recipes for each accelerator engine and a prompt, shared by the simulator tests."""

from __future__ import annotations

RECIPES = {
    "int8": "",
    "w4g128": "quantize{bits=4,group=128}",
    "w4-2of4": "sparsify{pattern=2:4},quantize{bits=4,group=128}",
    "w2-lut": "quantize{bits=2,group=128},lut-mpgemm",
}
PROMPT = [1, 72, 271, 400, 291, 261, 300, 90, 77, 500, 33, 18, 260, 261, 262, 263, 264, 265, 266, 267]
