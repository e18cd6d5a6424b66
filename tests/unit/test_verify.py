"""The verifier: every malformed module is rejected with a message naming the function and node."""

from __future__ import annotations

import numpy as np
import pytest
from ir_fixtures import build_every_op_module

from llmc.ir import F32, I64, Function, Module, Node, Param, TensorType, Value, VerifyError, parse_module, verify_module


def _module(body: str, args: str = "%a: tensor<2xf32>, %b: tensor<2xf32>", ret: str = "%bad") -> Module:
    text = (
        'module "m" {\n'
        '  param "w" : tensor<2x3xf32>\n'
        f"  func @f({args}) {{\n"
        + "".join(f"    {line}\n" for line in body.strip().splitlines())
        + f"    return {ret}\n  }}\n}}\n"
    )
    return parse_module(text)


def test_well_formed_modules_verify():
    verify_module(build_every_op_module())
    verify_module(_module("%bad = add(%a, %b) : tensor<2xf32>"))


# (body, function args, expected message fragment after "func @f, %bad = op: ")
BAD = {
    "unknown op": ("%bad = frobnicate(%a) : tensor<2xf32>", None, "frobnicate: unknown op 'frobnicate'"),
    "too few operands": ("%bad = add(%a) : tensor<2xf32>", None, "add: takes 2 operands, got 1"),
    "too many operands": ("%bad = neg(%a, %b) : tensor<2xf32>", None, "neg: takes 1 operands, got 2"),
    "operand range": ("%bad = linear(%a, %a, %a, %a) : tensor<2xf32>", None, "linear: takes 2..3 operands, got 4"),
    "variadic needs one": ("%bad = concat() {axis = 0} : tensor<2xf32>", None, "concat: takes 1.. operands, got 0"),
    "missing attr": ("%bad = softmax(%a) : tensor<2xf32>", None, "softmax: missing attribute 'axis'"),
    "unknown attr": ("%bad = add(%a, %b) {alpha = 1} : tensor<2xf32>", None, "add: unknown attribute 'alpha'"),
    "float for int attr": ("%bad = softmax(%a) {axis = 0.0} : tensor<2xf32>", None, "attribute 'axis' must be int, got 0.0"),
    "bool for int attr": ("%bad = softmax(%a) {axis = true} : tensor<2xf32>", None, "attribute 'axis' must be int"),
    "int for ints attr": ("%bad = reduce_sum(%a) {axes = 0} : tensor<f32>", None, "attribute 'axes' must be ints"),
    "int for bool attr": (
        "%bad = reduce_sum(%a) {axes = [0], keepdim = 1} : tensor<f32>", None, "attribute 'keepdim' must be bool",
    ),
    "str for dtype attr": ('%bad = cast(%a) {dtype = "f16"} : tensor<2xf16>', None, "attribute 'dtype' must be dtype"),
    "str for float attr": ('%bad = layer_norm(%a) {eps = "small"} : tensor<2xf32>', None, "attribute 'eps' must be float"),
    "wrong shape": ("%bad = add(%a, %b) : tensor<3xf32>", None, "result %bad declared tensor<3xf32>, but the op gives tensor<2xf32>"),
    "wrong dtype": ("%bad = add(%a, %b) : tensor<2xf16>", None, "result %bad declared tensor<2xf16>, but the op gives tensor<2xf32>"),
    "wrong encoding": (
        "%bad = neg(%a) : tensor<2xf32 #sparse<2:4>>", None, "but the op gives tensor<2xf32>",
    ),
    "param missing": ('%bad = param() {name = "nope"} : tensor<2x3xf32>', None, "param: no parameter named 'nope'"),
    "param type": ('%bad = param() {name = "w"} : tensor<3x2xf32>', None, "param: type tensor<3x2xf32> differs from parameter type tensor<2x3xf32>"),
    "param without name": ("%bad = param() : tensor<2x3xf32>", None, "param: missing attribute 'name'"),
    "unbound symbol": (
        "%bad = iota() {start = 0, end = Q, dtype = i64} : tensor<Qxi64>", None,
        "iota: result type uses dimension symbols ['Q'] that no function input binds",
    ),
    "broadcast": ("%bad = add(%a, %c) : tensor<2xf32>", "%a: tensor<2xf32>, %c: tensor<3xf32>", "add: shapes do not broadcast: [2], [3]"),
    "symbolic broadcast": (
        "%bad = mul(%a, %c) : tensor<Lxf32>", "%a: tensor<Lxf32>, %c: tensor<L+1xf32>", "mul: shapes do not broadcast: [L], [L+1]",
    ),
    "operand dtypes": ("%bad = add(%a, %i) : tensor<2xf32>", "%a: tensor<2xf32>, %i: tensor<2xi64>", "add: operands have different dtypes: f32, i64"),
    "matmul inner": (
        "%bad = matmul(%a, %c) : tensor<2x5xf32>", "%a: tensor<2x3xf32>, %c: tensor<4x5xf32>", "matmul: matmul inner dims differ: 3 vs 4",
    ),
    "matmul rank": ("%bad = matmul(%a, %a) : tensor<2xf32>", None, "matmul operands need rank >= 2"),
    "reshape numel": (
        "%bad = reshape(%a) {shape = [L, 3]} : tensor<Lx3xf32>", "%a: tensor<Lx2xf32>",
        "reshape: reshape changes the element count: 2*L -> 3*L",
    ),
    "concat dtype": (
        "%bad = concat(%a, %i) {axis = 0} : tensor<4xf32>", "%a: tensor<2xf32>, %i: tensor<2xi64>", "concat: operands have different dtypes",
    ),
    "concat other dim": (
        "%bad = concat(%a, %c) {axis = 0} : tensor<4x2xf32>", "%a: tensor<2x2xf32>, %c: tensor<2x3xf32>", "concat operands differ in dim 1",
    ),
    "axis range": ("%bad = softmax(%a) {axis = 1} : tensor<2xf32>", None, "softmax: axis 1 out of range for rank 1"),
    "negative axis range": ("%bad = cumsum(%a) {axis = -2} : tensor<2xf32>", None, "axis -2 out of range for rank 1"),
    "bad perm": ("%bad = transpose(%a) {perm = [0, 0]} : tensor<2x3xf32>", "%a: tensor<2x3xf32>", "perm [0, 0] is not a permutation"),
    "where cond": ("%bad = where(%a, %a, %b) : tensor<2xf32>", None, "where condition must be bool, got f32"),
    "gather float index": ("%bad = gather(%a, %b) {axis = 0} : tensor<2xf32>", None, "gather indices must be integers"),
    "float-only op on ints": ("%bad = exp(%i) : tensor<2xi64>", "%i: tensor<2xi64>", "exp needs a float operand, got i64"),
    "slice past end": ("%bad = slice(%a) {axis = 0, start = 0, end = 3} : tensor<3xf32>", None, "slice bound 3 is past the dim size 2"),
    "slice start past end": (
        "%bad = slice(%a) {axis = 0, start = 2, end = 1} : tensor<2xf32>", None, "slice start 2 is past its end 1",
    ),
    "attention heads": (
        "%bad = attention(%q, %k, %k) : tensor<1x3x2x4xf32>",
        "%q: tensor<1x3x2x4xf32>, %k: tensor<1x2x2x4xf32>",
        "attention heads 3 not a multiple of KV heads 2",
    ),
    "embedding float ids": (
        "%bad = embedding(%t, %a) : tensor<2x3xf32>", "%t: tensor<4x3xf32>, %a: tensor<2xf32>", "embedding ids must be integers",
    ),
    "linear features": ("%bad = linear(%a, %w) : tensor<2xf32>", "%a: tensor<4xf32>, %w: tensor<2x3xf32>", "linear input features 4 != weight K 3"),
    "constant count": (
        "%bad = constant() {value = [1.0, 2.0], shape = [3], dtype = f32} : tensor<3xf32>", None, "constant has 2 values for 3 elements",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_malformed_node_rejected(case):
    body, args, fragment = BAD[case]
    module = _module(body, args) if args else _module(body)
    with pytest.raises(VerifyError) as info:
        verify_module(module)
    message = str(info.value)
    op = body.split("=", 1)[1].split("(")[0].strip()
    assert message.startswith(f"func @f, %bad = {op}: "), message
    assert fragment in message, message


def _f(nodes, inputs=(), outputs=None) -> Module:
    module = Module("m")
    func = Function("g", list(inputs), list(nodes), list(outputs if outputs is not None else nodes[-1].outputs))
    module.functions["g"] = func
    return module


T = TensorType.of([2], F32)


def test_use_before_definition():
    a = Value("a", T)
    x, y = Value("x", T), Value("y", T)
    module = _f([Node("neg", [y], [x]), Node("neg", [a], [y])], [a], [x])
    with pytest.raises(VerifyError, match=r"^func @g, %x = neg: operand %y is not defined before use$"):
        verify_module(module)


def test_operand_from_another_function_is_not_defined():
    a, stranger = Value("a", T), Value("a", T)  # same name, different SSA value
    module = _f([Node("neg", [stranger], [Value("x", T)])], [a])
    with pytest.raises(VerifyError, match=r"^func @g, %x = neg: operand %a is not defined before use$"):
        verify_module(module)


def test_value_defined_twice():
    a = Value("a", T)
    n1 = Node("neg", [a], [Value("x", T)])
    n2 = Node("neg", [n1.output], [Value("x", T)])
    with pytest.raises(VerifyError, match=r"^func @g, %x = neg: value %x is defined twice$"):
        verify_module(_f([n1, n2], [a]))
    with pytest.raises(VerifyError, match=r"^func @g, %a = neg: value %a is defined twice$"):
        verify_module(_f([Node("neg", [a], [Value("a", T)])], [a]))
    with pytest.raises(VerifyError, match=r"^func @g: value %a is defined twice$"):
        verify_module(_f([Node("neg", [a], [Value("x", T)])], [a, Value("a", T)]))


def test_result_count():
    a = Value("a", T)
    module = _f([Node("add", [a, a], [Value("x", T), Value("y", T)])], [a])
    with pytest.raises(VerifyError, match=r"^func @g, %x, %y = add: has 2 results, the op defines 1$"):
        verify_module(module)
    module = _f([Node("add", [a, a], [])], [a], [a])
    with pytest.raises(VerifyError, match=r"^func @g, \(no result\) = add: has 0 results"):
        verify_module(module)


def test_returns_nothing_or_undefined():
    a = Value("a", T)
    with pytest.raises(VerifyError, match=r"^func @g: returns nothing$"):
        verify_module(_f([Node("neg", [a], [Value("x", T)])], [a], []))
    with pytest.raises(VerifyError, match=r"^func @g: returns %z, which is not defined$"):
        verify_module(_f([Node("neg", [a], [Value("x", T)])], [a], [Value("z", T)]))
    module = _module("", ret="")
    with pytest.raises(VerifyError, match=r"^func @f: returns nothing$"):
        verify_module(module)


def test_module_level_errors():
    with pytest.raises(VerifyError, match="has no functions"):
        verify_module(Module("empty"))
    a = Value("a", T)
    module = _f([Node("neg", [a], [Value("x", T)])], [a])
    module.params["w"] = Param("v", T)
    with pytest.raises(VerifyError, match="parameter table key 'w' does not match its name 'v'"):
        verify_module(module)
    module.params = {"w": Param("w", T, np.zeros(3, np.float32))}
    with pytest.raises(VerifyError, match=r"parameter 'w' data shape \(3,\) != type tensor<2xf32>"):
        verify_module(module)
    module.params = {"w": Param("w", T, np.zeros(2, np.float32))}
    verify_module(module)


def test_first_error_in_second_function_names_it():
    module = _module("%bad = add(%a, %b) : tensor<2xf32>")
    x = Value("x", TensorType.of([2], I64))
    module.functions["h"] = Function("h", [x], [Node("exp", [x], [Value("y", x.type)])])
    module.functions["h"].outputs = module.functions["h"].nodes[0].outputs
    with pytest.raises(VerifyError, match=r"^func @h, %y = exp: exp needs a float operand, got i64$"):
        verify_module(module)
