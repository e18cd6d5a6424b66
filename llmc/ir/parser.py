"""Parse the text form written by :mod:`llmc.ir.printer` back into a :class:`Module`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from llmc.ir.graph import AttrValue, Function, Module, Node, Param, Value, canonical_attr
from llmc.ir.types import Dim, DType, TensorType


class ParseError(ValueError):
    """Malformed IR text; the message starts with the line number."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*)
    |(?P<str>"(?:[^"\\]|\\.)*")
    |(?P<type>tensor<(?:[^<>]|<(?:[^<>]|<[^<>]*>)*>)*>)
    |(?P<fixed>u?fixed<\d+,\d+>)
    |(?P<val>%[A-Za-z0-9_.]+)
    |(?P<func>@[A-Za-z0-9_.]+)
    |(?P<punct>[(){}\[\],:=])
    |(?P<word>[A-Za-z0-9_.+\-*]+)
    """,
    re.VERBOSE,
)
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+\.\d*(e[+-]?\d+)?|\d+e[+-]?\d+|inf)|nan")
_DIM = re.compile(r"-?[A-Z0-9_*]*[A-Z][A-Z0-9_*]*([+-][A-Z0-9_*]+)*")


@dataclass
class _Tok:
    kind: str
    text: str
    line: int


def _tokenize(text: str) -> list[_Tok]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    tokens.append(_Tok("eof", "", line))
    return tokens


def _string(text: str, line: int) -> str:
    """A quoted string token's value (JSON escapes)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"line {line}: bad string {text[:40]!r}: {e.msg}") from None
    if not isinstance(value, str):
        raise ParseError(f"line {line}: expected a string, got {text[:40]!r}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    # -- token helpers ----------------------------------------------------------------------
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def error(self, message: str, line: int | None = None) -> ParseError:
        """An error at the current token, or at ``line`` for a token already consumed."""
        if line is not None:
            return ParseError(f"line {line}: {message}")
        return ParseError(f"line {self.tok.line}: {message} (at {self.tok.text or 'end of input'!r})")

    def take_val(self) -> tuple[str, int]:
        """A ``%name``: the name and its line."""
        line = self.tok.line
        return self.take("val")[1:], line

    def take(self, kind: str, text: str | None = None) -> str:
        if self.tok.kind != kind or (text is not None and self.tok.text != text):
            raise self.error(f"expected {text or kind}")
        self.i += 1
        return self.toks[self.i - 1].text

    def accept(self, text: str) -> bool:
        if self.tok.text == text and self.tok.kind in ("punct", "word"):
            self.i += 1
            return True
        return False

    def type_(self) -> TensorType:
        text = self.take("type")
        try:
            return TensorType.parse(text)
        except ValueError as e:
            raise ParseError(f"line {self.toks[self.i - 1].line}: {e}") from None

    # -- grammar ----------------------------------------------------------------------------
    def module(self) -> Module:
        self.take("word", "module")
        name = _string(self.take("str"), self.tok.line)
        # The body also opens with '{': attributes follow only as '{key =' (or an empty '{}' '{').
        ahead = [t.text for t in self.toks[self.i : self.i + 3]]
        has_attrs = ahead[:1] == ["{"] and (
            (self.toks[min(self.i + 1, len(self.toks) - 1)].kind == "word" and ahead[2:] == ["="])
            or ahead[1:] == ["}", "{"]
        )
        module = Module(name=name, attrs=self.attrs() if has_attrs else {})
        self.take("punct", "{")
        while not self.accept("}"):
            line = self.tok.line
            if self.accept("param"):
                name = _string(self.take("str"), self.tok.line)
                self.take("punct", ":")
                if name in module.params:
                    raise self.error(f"parameter '{name}' declared twice", line)
                module.params[name] = Param(name, self.type_())
            elif self.accept("func"):
                func = self.function()
                if func.name in module.functions:
                    raise self.error(f"function @{func.name} defined twice", line)
                module.functions[func.name] = func
            else:
                raise self.error("expected 'param', 'func' or '}'")
        self.take("eof")
        return module

    def function(self) -> Function:
        func = Function(self.take("func")[1:])
        values: dict[str, Value] = {}

        def define(name: str, line: int, type_: TensorType) -> Value:
            if name in values:
                raise self.error(f"value %{name} defined twice", line)
            values[name] = Value(name, type_)
            return values[name]

        def use(name: str, line: int) -> Value:
            if name not in values:
                raise self.error(f"value %{name} used before it is defined", line)
            return values[name]

        self.take("punct", "(")
        while not self.accept(")"):
            name, line = self.take_val()
            self.take("punct", ":")
            func.inputs.append(define(name, line, self.type_()))
            if self.tok.text != ")":
                self.take("punct", ",")
        self.take("punct", "{")
        while not self.accept("return"):
            outs = [self.take_val()]
            while self.accept(","):
                outs.append(self.take_val())
            self.take("punct", "=")
            op = self.take("word")
            self.take("punct", "(")
            ins = []
            while not self.accept(")"):
                ins.append(use(*self.take_val()))
                if self.tok.text != ")":
                    self.take("punct", ",")
            attrs = self.attrs()
            self.take("punct", ":")
            types = [self.type_()]
            while self.accept(","):
                types.append(self.type_())
            if len(types) != len(outs):
                raise self.error(f"{len(outs)} results but {len(types)} types", outs[0][1])
            func.nodes.append(Node(op, ins, [define(n, line, t) for (n, line), t in zip(outs, types)], attrs))
        if self.tok.kind == "val":
            func.outputs.append(use(*self.take_val()))
            while self.accept(","):
                func.outputs.append(use(*self.take_val()))
        self.take("punct", "}")
        return func

    def attrs(self) -> dict[str, AttrValue]:
        out: dict[str, AttrValue] = {}
        if not self.accept("{"):
            return out
        while not self.accept("}"):
            key = self.take("word")
            self.take("punct", "=")
            if key in out:
                raise self.error(f"attribute '{key}' given twice")
            out[key] = self.attr_value()
            if self.tok.text != "}":
                self.take("punct", ",")
        return out

    def attr_value(self) -> AttrValue:
        tok = self.tok
        if self.accept("["):
            items = []
            while not self.accept("]"):
                items.append(self.attr_value())
                if self.tok.text != "]":
                    self.take("punct", ",")
            return items
        self.i += 1
        if tok.kind == "str":
            return _string(tok.text, tok.line)
        if tok.kind == "fixed":
            return DType.parse(tok.text)
        if tok.kind == "word":
            text = tok.text
            if text in ("true", "false"):
                return text == "true"
            if text == "none":
                return None
            if _INT.fullmatch(text):
                return int(text)
            if _FLOAT.fullmatch(text):
                return float(text)
            if _DIM.fullmatch(text):
                return canonical_attr(Dim.parse(text))
            try:
                return DType.parse(text)
            except ValueError:
                pass
        self.i -= 1
        raise self.error("expected an attribute value")


def parse_module(text: str) -> Module:
    """Parse IR text; raises :class:`ParseError` naming the line on malformed input."""
    return _Parser(text).module()
