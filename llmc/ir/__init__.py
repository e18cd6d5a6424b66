"""llmc's IR: typed SSA functions over tensors, a text form, a verifier and the reference interpreter."""

from llmc.ir import ops as _ops  # noqa: F401  (registers every op)
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.interpreter import InterpreterError, run_function
from llmc.ir.parser import ParseError, parse_module
from llmc.ir.printer import print_module
from llmc.ir.registry import OPS, InferError
from llmc.ir.types import BF16, BOOL, F16, F32, I32, I64, Dim, DType, QuantEncoding, SparseEncoding, TensorType
from llmc.ir.verify import VerifyError, verify_module

__all__ = [
    "BF16", "BOOL", "F16", "F32", "I32", "I64", "OPS",
    "Builder", "Dim", "DType", "Function", "InferError", "InterpreterError", "Module", "Node", "Param",
    "ParseError", "QuantEncoding", "SparseEncoding", "TensorType", "Value", "VerifyError",
    "parse_module", "print_module", "run_function", "verify_module",
]
