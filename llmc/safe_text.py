"""Text that reaches generated files: every name and string a template writes passes one of these
filters, chosen by where it lands. A value a filter cannot represent safely is refused with
:class:`~llmc.errors.LlmcError`, never written.

- ``identifier``: a C++/Verilog/Tcl symbol, ``[A-Za-z_][A-Za-z0-9_]*``.
- ``word``: a value in a Makefile, Tcl script or ``.cfg`` line (a part number, a platform name or
  path): letters, digits and ``_ . + - /`` only, so no quoting, expansion or command substitution
  can happen in any of those languages.
- ``comment``: free text (a model or board name) inside a one-line comment of any language: every
  character outside printable ASCII letters, digits, space and ``_ . , : = + @ % ( ) / -`` becomes
  ``?``, so a comment can neither end its line nor its comment (``*/``, ``-->``, a trailing
  backslash) nor carry shell, Make or Tcl syntax.
- ``memory_bank``: a v++ memory resource (``HBM[3]``, ``DDR[0]``, ``HBM[0:1]``, ``HP0``) in a ``.cfg`` line.
- ``xml``: text inside an SVG/XML element or attribute (``& < > " '`` escaped).
- ``markdown``: text inside a Markdown paragraph or table cell: one line, with the characters that
  Markdown or inline HTML would act on (``\\ ` * _ [ ] < > | # &``) backslash-escaped.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from llmc.errors import LlmcError

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORD = re.compile(r"[A-Za-z0-9_.+/-]+")
MEMORY_BANK = re.compile(r"(HBM|DDR|PLRAM|HOST)\[\d+(:\d+)?\]|HPC?\d")  # HP0, HPC1: Zynq MPSoC ports
COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:=+@%()/-]")
MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]<>|#&])")
MAX_COMMENT = 200


def _checked(value: object, pattern: re.Pattern[str], problem: str) -> str:
    text = str(value)
    if not pattern.fullmatch(text) or text.startswith("-"):
        raise LlmcError(f"{text!r} {problem}")
    return text


def identifier(value: object) -> str:
    return _checked(value, IDENTIFIER, "is not a valid identifier for generated code ([A-Za-z_][A-Za-z0-9_]*)")


def word(value: object) -> str:
    return _checked(value, WORD, "cannot be written into a Makefile, Tcl or .cfg line: use letters, digits and "
                                 "_ . + - / only")


def memory_bank(value: object) -> str:
    return _checked(value, MEMORY_BANK, "is not a memory bank v++ knows (HBM[i], DDR[i], PLRAM[i], HOST[i], HPi, HPCi)")


def comment(value: object) -> str:
    text = COMMENT_UNSAFE.sub("?", str(value))
    return text if len(text) <= MAX_COMMENT else text[:MAX_COMMENT] + "..."


def xml(value: object) -> str:
    return escape(str(value), {'"': "&quot;", "'": "&apos;"})


def markdown(value: object) -> str:
    return MARKDOWN_ACTIVE.sub(r"\\\1", " ".join(str(value).split()))


FILTERS = {"identifier": identifier, "word": word, "memory_bank": memory_bank, "comment": comment, "xml": xml,
           "markdown": markdown}
