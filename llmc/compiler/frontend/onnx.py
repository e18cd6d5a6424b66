"""Import an ONNX file into the IR.

A file of llmc's step contract (as written by :func:`llmc.compiler.frontend.hf.export_onnx`:
inputs ``input_ids [1, L]``, ``mask [1, 1, L, P+L]``, ``position_ids [1, L]``, ``past_k_i`` and
``past_v_i [1, Hkv, P, D]``; outputs ``logits``, ``k_i`` and ``v_i``; the module attributes as
JSON in the metadata property ``llmc.attrs``) becomes one IR function ``step`` over the symbols L
and P, specialised into ``prefill`` (P=0) and ``decode`` (L=1) as the torch.export path does.

Any other file becomes a *plain function*: a module with one function ``main`` whose inputs and
outputs are the graph's (named as in the file, other characters than letters, digits, ``_`` and
``.`` replaced by ``_``), with one symbol per ``dim_param`` of the inputs.

Files of opsets before 13 are converted to opset 13 first (``onnx.version_converter``); local
functions are inlined. Values known at import time stay :class:`Const` instead of becoming IR
ops: initializers, ``Constant`` nodes and shape arithmetic (``Shape -> Gather -> Concat ->
Reshape``), whose int64 elements may be symbolic :class:`Dim` (held in NumPy object arrays).
Those subgraphs fold into the static or symbolic attributes of the IR ops that use them. An
initializer becomes a module parameter when a runtime op reads it; a ``MatMul`` or ``Gemm`` by a
weight becomes ``linear`` with the weight in PyTorch's [N, K] layout. Quantized weights
(``DequantizeLinear`` of constants, onnxruntime's ``com.microsoft.MatMulNBits``) keep the file's
codes in llmc's ``dequantize`` form where that is exact (docs/onnx.md, "Quantized files").

This module holds the file handling and the contract checks; the conversion state is
:class:`~llmc.compiler.frontend.onnx_converter.Converter`, the op handlers are listed in
:mod:`llmc.compiler.frontend.onnx_registry`. docs/onnx.md lists the ops and their coverage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from llmc.compiler.frontend.onnx_converter import PAST, SEQ, Converter
from llmc.compiler.frontend.onnx_llm import as_step_contract
from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.fuse import fuse_function
from llmc.compiler.passes.specialize import specialize
from llmc.errors import FrontendError
from llmc.ir.graph import Function, Module

ATTRS_KEY = "llmc.attrs"  # metadata property holding the module attributes as JSON
CONTRACT = "inputs input_ids, mask, position_ids, past_k_0, past_v_0, ...; outputs logits, k_0, v_0, ..."
MIN_OPSET = 13
CONTRIB_OPS = {"SimplifiedLayerNormalization"}  # onnxruntime's ops of the default domain, not ONNX's
PLAIN_FUNCTION = "main"


def import_onnx(path: Path, name: str, max_position: int = 4096) -> Module:
    """Import an ONNX file: a step model of llmc's contract as a module with ``prefill`` and
    ``decode``, any other model as a module with one function ``main``."""
    path = Path(path)
    if not path.is_file():
        raise FrontendError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf decode errors, unreadable external data
        raise FrontendError(f"{path}: not a readable ONNX file: {_first_line(e)}") from None
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        unregistered = re.match(r"No Op registered for (\w+) with domain_version", str(e))
        if unregistered is None or unregistered[1] not in CONTRIB_OPS:
            raise FrontendError(f"{path}: malformed ONNX model: {_first_line(e)}") from None
    return import_model(model, path, name, max_position)


def import_model(model: onnx.ModelProto, path: Path, name: str, max_position: int = 4096) -> Module:
    """Import a checked model (``path`` names it in messages), as :func:`import_onnx` does; a causal
    LM exported by another tool (:mod:`.onnx_llm`) becomes a step model with a context of
    ``max_position`` tokens."""
    model = _normalized(model, path)
    if ATTRS_KEY in {p.key for p in model.metadata_props}:
        attrs = _contract_attrs(model, path)
    else:
        rewritten = as_step_contract(model, max_position)
        if rewritten is None:
            return import_plain(model, path, name)
        model, attrs = rewritten
    module = Module(name, attrs)
    step = Function("step")
    Converter(path, model, module, step, contract=True).run()
    fuse_function(module, step)
    module.functions["prefill"] = dce(specialize(step, {PAST: 0}, "prefill"))
    module.functions["decode"] = dce(specialize(step, {SEQ: 1}, "decode"))
    return prune_params(module)


def import_plain(model: onnx.ModelProto, path: Path, name: str) -> Module:
    """A normalised model as a module with one function ``main`` (the graph, unfused)."""
    module = Module(name, {"source": "onnx"})
    func = Function(PLAIN_FUNCTION)
    Converter(path, model, module, func, contract=False).run()
    module.functions[PLAIN_FUNCTION] = dce(func)
    return prune_params(module)


def _normalized(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """The model at opset 13 or later, its local functions inlined."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        except Exception as e:  # the converter raises RuntimeError or ConvertError
            raise FrontendError(f"{path}: opset {opset} could not be converted to opset {MIN_OPSET}: "
                                f"{_first_line(e)}") from None
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    return model


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _contract_attrs(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    """The module attributes from the metadata, after checking the graph's inputs and outputs."""
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        attrs = json.loads(meta[ATTRS_KEY])
        if not isinstance(attrs["layers"], int):
            raise ValueError("'layers' is not an integer")
        if not all(isinstance(v, (int, float, str)) for v in attrs.values()):
            raise ValueError("attribute values must be numbers or strings")
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise FrontendError(f"{path}: corrupt '{ATTRS_KEY}' metadata: {e}") from None
    caches = [f"{t}_{i}" for i in range(attrs["layers"]) for t in "kv"]
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in initializers]
    outputs = [v.name for v in model.graph.output]
    expected = ["input_ids", "mask", "position_ids", *(f"past_{c}" for c in caches)], ["logits", *caches]
    if (inputs, outputs) != expected:
        raise FrontendError(f"{path}: graph inputs ({', '.join(inputs)}) and outputs ({', '.join(outputs)}) do not "
                            f"follow llmc's StepModule contract for {attrs['layers']} layers ({CONTRACT})")
    return attrs
