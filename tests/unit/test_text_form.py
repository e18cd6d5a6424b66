"""The text form: print/parse round trips in both directions, and parse errors that name the line."""

from __future__ import annotations

import math
import re

import pytest
from ir_fixtures import build_every_op_module

from llmc.ir import (
    F32,
    OPS,
    Builder,
    Dim,
    DType,
    Function,
    Module,
    Node,
    Param,
    ParseError,
    TensorType,
    Value,
    parse_module,
    print_module,
    verify_module,
)


def _round_trips(module: Module) -> str:
    text = print_module(module)
    back = parse_module(text)
    assert back == module
    assert print_module(back) == text
    return text


# ---------------------------------------------------------------------------------------------
# Module -> text -> module
# ---------------------------------------------------------------------------------------------


def test_every_registered_op_round_trips():
    module = build_every_op_module()
    used = {n.op for _, n in module.iter_nodes()}
    assert set(OPS) - used == set(), "fixture must use every registered op"
    text = _round_trips(module)
    verify_module(parse_module(text))
    for op in OPS:
        assert re.search(rf"= {op}\(", text), op


def test_text_form_of_every_op_module_is_stable():
    text = print_module(build_every_op_module())
    assert "func @step.v1(%ids: tensor<1xLxi64>, %x: tensor<1xLx8xf32>, %mask: tensor<1x1xLxL+Pxf32>" in text
    assert '%model_embed_weight = param() {name = "model.embed.weight"} : tensor<16x8xf32>' in text
    assert "%pos.ids = iota() {start = P, end = L+P, dtype = i64} : tensor<Lxi64>" in text
    assert "return %scores, %present.k, %total\n" in text
    assert text.endswith("  }\n}\n")


ATTRS = {
    "i": 3,
    "neg": -7,
    "big": 2**70,
    "zero": 0,
    "f": 0.5,
    "tiny": 1e-06,
    "huge": 1.5e300,
    "sub": 5e-324,
    "third": 1 / 3,
    "negzero": -0.0,
    "poszero": 0.0,
    "pinf": math.inf,
    "ninf": -math.inf,
    "nan": math.nan,
    "t": True,
    "fl": False,
    "nothing": None,
    "s": "plain",
    "empty": "",
    "quoted": 'say "hi" \\ back\\slash',
    "multi": "line1\nline2\ttab\r",
    "uni": "héllo → 世界 🙂",
    "dt_f32": F32,
    "dt_bf16": DType.parse("bf16"),
    "dt_bool": DType.parse("bool"),
    "dt_i1": DType.parse("i1"),
    "dt_u64": DType.parse("u64"),
    "dt_fixed": DType.parse("fixed<16,8>"),
    "dt_ufixed": DType.parse("ufixed<8,8>"),
    "dims": [1, Dim.parse("L"), Dim.parse("P+1"), Dim.parse("4*L"), Dim.parse("B*L-2"), Dim.parse("-L+3")],
    "dim": Dim.parse("KV_LEN"),
    "ints": [0, -1, 2],
    "floats": [1.0, -2.5, math.inf, 1e-06],
    "empty_list": [],
    "nested": [[1, 2], [], ["a", None, True, F32]],
    "dotted.key_2": 1,
}


def test_every_attribute_kind_round_trips():
    module = Module("attrs \"test\"\n", attrs=dict(ATTRS))
    func = Function("f.g")
    x = Value("in.0", TensorType.of(["L", 4], F32))
    y = Value("out.1", TensorType.of(["L", 4], F32))
    func.inputs = [x]
    func.nodes = [Node("custom.op", [x], [y], dict(ATTRS))]
    func.outputs = [y]
    module.functions[func.name] = func
    text = _round_trips(module)
    back = parse_module(text)
    got = back.attrs
    assert got["negzero"] == 0.0 and math.copysign(1.0, got["negzero"]) == -1.0
    assert math.copysign(1.0, got["poszero"]) == 1.0
    assert math.isnan(got["nan"]) and got["pinf"] == math.inf and got["ninf"] == -math.inf
    assert got["tiny"] == 1e-06 and got["sub"] == 5e-324 and got["third"] == 1 / 3
    assert type(got["i"]) is int and type(got["f"]) is float and got["t"] is True and got["nothing"] is None
    assert got["big"] == 2**70
    assert got["multi"] == "line1\nline2\ttab\r" and got["uni"] == ATTRS["uni"] and got["quoted"] == ATTRS["quoted"]
    assert got["dt_fixed"] == DType("fixed", 16, 8) and got["dt_bool"] == DType.parse("bool")
    assert got["dims"] == [1, Dim.sym("L"), Dim.sym("P") + 1, 4 * Dim.sym("L"), Dim.parse("B*L-2"), 3 - Dim.sym("L")]
    assert got["dim"] == Dim.sym("KV_LEN")
    assert got["nested"] == [[1, 2], [], ["a", None, True, F32]]
    assert back.name == 'attrs "test"\n'
    assert back.functions["f.g"].nodes[0].attrs["dims"] == got["dims"]
    # the multi-line string must not have broken the line structure of the text
    assert text.count("\n") == 6


def test_float_attr_distinctions_are_kept():
    def mod(v):
        return Module("m", attrs={"v": v})

    assert mod(-0.0) != mod(0.0)
    assert mod(1) != mod(1.0)
    assert mod(True) != mod(1)
    assert mod(math.nan) == mod(math.nan)
    assert parse_module(print_module(mod(1.0))).attrs["v"] == 1.0
    assert type(parse_module(print_module(mod(1))).attrs["v"]) is int


def test_multi_result_syntax_round_trips():
    text = (
        'module "m" {\n'
        '  param "w.0" : tensor<2x2xbf16 #quant<bits=4,group=0,scale=f16,sym> #sparse<2:4>>\n'
        "  func @f(%a: tensor<4xf32>) {\n"
        "    %lo, %hi.x = split2(%a) {axis = 0} : tensor<2xf32>, tensor<2xf32>\n"
        "    %w = param() {name = \"w.0\"} : tensor<2x2xbf16 #quant<bits=4,group=0,scale=f16,sym> #sparse<2:4>>\n"
        "    return %hi.x, %lo, %a\n"
        "  }\n"
        "  func @g() {\n"
        "    %0 = constant() {value = [1, 2], shape = [2], dtype = fixed<8,4>} : tensor<2xfixed<8,4>>\n"
        "    return %0\n"
        "  }\n"
        "}\n"
    )
    module = parse_module(text)
    assert print_module(module) == text
    node = module.functions["f"].nodes[0]
    assert [v.name for v in node.outputs] == ["lo", "hi.x"]
    assert [v.name for v in module.functions["f"].outputs] == ["hi.x", "lo", "a"]
    assert module.functions["f"].outputs[2] is module.functions["f"].inputs[0]
    assert module.params["w.0"].type.encodings
    assert parse_module(print_module(module)) == module


def test_module_without_attrs_or_functions():
    for text in ['module "m" {\n}\n', 'module "m" {\n  param "p" : tensor<2xf32>\n}\n', 'module "m" {k = 1} {\n}\n']:
        assert print_module(parse_module(text)) == text
    module = Module("m")
    module.params["p"] = Param("p", TensorType.of([2], F32))
    func = Function("f")
    b = Builder(module, func)
    b.ret(b.op("add", [b.param("p"), b.param("p")]))
    module.functions["f"] = func
    _round_trips(module)


def test_comments_and_whitespace_are_ignored():
    text = (
        '// leading comment\nmodule "m"   {\n  func @f(%a: tensor<2xf32>) {   // trailing\n'
        "    %b = neg(%a) : tensor<2xf32>\n\n    return %b\n  }\n}\n"
    )
    module = parse_module(text)
    verify_module(module)
    assert print_module(module) == 'module "m" {\n  func @f(%a: tensor<2xf32>) {\n    %b = neg(%a) : tensor<2xf32>\n    return %b\n  }\n}\n'


def test_equality_sees_differences():
    base = build_every_op_module()
    other = build_every_op_module()
    assert base == other
    other.functions["step.v1"].nodes[3].attrs["eps"] = 2e-5
    assert base != other
    other = build_every_op_module()
    other.functions["step.v1"].outputs.pop()
    assert base != other


# ---------------------------------------------------------------------------------------------
# Parse errors
# ---------------------------------------------------------------------------------------------

GOOD = [
    'module "m" {',  # 1
    '  param "w" : tensor<2xf32>',  # 2
    "  func @f(%a: tensor<2xf32>) {",  # 3
    '    %w = param() {name = "w"} : tensor<2xf32>',  # 4
    "    %b = add(%a, %w) : tensor<2xf32>",  # 5
    "    return %b",  # 6
    "  }",  # 7
    "}",  # 8
]


def _with(line: int, text: str | None) -> str:
    lines = list(GOOD)
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    return "\n".join(lines) + "\n"


def test_good_text_parses():
    verify_module(parse_module(_with(5, GOOD[4])))


@pytest.mark.parametrize(
    "line,replacement,message",
    [
        (5, "    %b add(%a, %w) : tensor<2xf32>", "expected ="),  # missing '='
        (5, "    %b = add(%a, %w) $ : tensor<2xf32>", "unexpected character"),  # unknown token
        (5, "    %b = add(%a, %zz) : tensor<2xf32>", "%zz used before it is defined"),  # undefined value
        (5, "    %w = add(%a, %w) : tensor<2xf32>", "%w defined twice"),  # duplicate value
        (5, "    %b = add(%a, %w) : tensor<2xf7>", "float width 7"),  # bad dtype
        (5, "    %b = add(%a, %w) : tensor<2xlxf32>", "unknown dtype 'lxf32'"),  # bad shape
        (5, "    %b = add(%a, %w) : tensor<2xf32 #sparse<5:4>>", "N:M"),  # bad encoding
        (5, "    %b = add(%a, %w) : tensor<2xf32>, tensor<2xf32>", "1 results but 2 types"),
        (4, '    %w = param() {name = "w", name = "v"} : tensor<2xf32>', "given twice"),
        (4, "    %w = param() {name = @w} : tensor<2xf32>", "expected an attribute value"),
        (4, "    %w = param() {name = \"w} : tensor<2xf32>", "unexpected character"),  # unterminated string
        (2, '  param "w" : tensor<2xf32> param "w" : tensor<2xf32>', "declared twice"),
        (3, "  func @f(%a: tensor<2xf32>, %a: tensor<2xf32>) {", "%a defined twice"),
        (3, "  func @f(%a tensor<2xf32>) {", "expected :"),
        (6, "    return %nope", "%nope used before it is defined"),
        (6, "    return %b, %a, %b, %c", "%c used before it is defined"),
        (2, "  parm \"w\" : tensor<2xf32>", "expected 'param', 'func' or '}'"),
    ],
)
def test_parse_errors_name_the_line(line, replacement, message):
    with pytest.raises(ParseError) as info:
        parse_module(_with(line, replacement))
    text = str(info.value)
    assert text.startswith(f"line {line}: "), text
    assert message in text


def test_unterminated_module():
    with pytest.raises(ParseError, match=r"^line 8: .*end of input"):
        parse_module(_with(8, None))
    with pytest.raises(ParseError, match=r"^line 7: "):
        parse_module("\n".join(GOOD[:6]) + "\n")  # function body never closed


def test_duplicate_function_and_trailing_garbage():
    dup = "\n".join(GOOD[:7] + GOOD[2:8]) + "\n"
    with pytest.raises(ParseError, match=r"^line 8: function @f defined twice$"):
        parse_module(dup)
    with pytest.raises(ParseError, match=r"^line 9: "):
        parse_module("\n".join(GOOD) + "\nextra\n")


def test_parse_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_module("")
    with pytest.raises(ParseError, match=r"^line 1: "):
        parse_module("modul \"m\" {}")
