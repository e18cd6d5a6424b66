"""Build the llmc-tiny training corpus from two Debian packages.

The corpus is plain English prose from two redistributable sources:

* the Jargon File 4.4.7 (public domain), Debian package ``jargon-text``;
* the reStructuredText sources of the Python 3.11 documentation (PSF License
  Agreement), Debian package ``python3.11-doc``.

Obtain the packages (no installation needed) and run::

    apt-get download jargon-text=4.4.7-4.1 python3.11-doc=3.11.2-6+deb12u9
    .venv/bin/python scripts/make_corpus.py \\
        --jargon-deb jargon-text_4.4.7-4.1_all.deb \\
        --python-doc-deb python3.11-doc_3.11.2-6+deb12u9_all.deb

The packages are unpacked with ``dpkg-deb -x``. Markup is stripped
deterministically: reST directives, code/literal blocks, doctests, tables and
index entries are dropped; inline roles are replaced by their text; paragraphs
are re-flowed to one line each. The text is cut into documents (one Jargon
lexicon entry, chapter or appendix; one section of a documentation page) and
each document goes to the test split iff the SHA-256 of its identifier falls in
the lowest ``--test-permille`` of the hash space, so the splits are disjoint and
stable. Output files hold one document per block, documents separated by one
blank line, paragraphs by single newlines.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "llmc" / "assets" / "corpus"

# Top-level folders of the Python documentation that are mostly prose.
# Left out: c-api and extending (C API), distutils/install/distributing
# (deprecated packaging), whatsnew (change logs), license/copyright pages.
PYDOC_SECTIONS: tuple[str, ...] = (
    "tutorial",
    "howto",
    "faq",
    "reference",
    "library",
    "using",
    "glossary.rst.txt",
)

# Directives whose argument is an API signature worth keeping as a line.
SIGNATURE_DIRECTIVES = frozenset(
    """
    function method class attribute data exception decorator
    decoratormethod classmethod staticmethod coroutinemethod
    coroutinefunction abstractmethod awaitablefunction awaitablemethod
    opcode envvar cmdoption pdbcommand describe object
    """.split()
)
# Directives whose body is prose and is kept (the directive line is dropped).
BODY_DIRECTIVES = frozenset(
    """
    note warning seealso impl-detail important caution tip attention
    topic sidebar admonition glossary only hint danger error
    """.split()
)
VERSION_DIRECTIVES = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}.",
    "deprecated": "Deprecated since version {}.",
    "deprecated-removed": "Deprecated since version {}.",
}

TYPOGRAPHY = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u2014": " -- ",
        "\u2013": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)

SECTION_RULE = re.compile(r"^([=\-~*^\"#+`':.])\1{3,}\s*$")
TABLE_RULE = re.compile(r"^\s*(=+(\s+=+)+|[+|].*[+|])\s*$")
DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z][\w:-]*)::\s*(.*)$")
EXPLICIT_MARKUP = re.compile(r"^(\s*)\.\.(\s|$)")
BULLET = re.compile(r"^([-*+\u2022]|\d+[.)]|#\.)\s")
ROLE = re.compile(r":([a-zA-Z][\w:+-]*):`([^`]+)`")
REF_WITH_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$")
HYPERLINK = re.compile(r"`([^`<]+?)\s*<[^`]+>`__?")
NAMED_REF = re.compile(r"`([^`]+)`_{1,2}")
LITERAL = re.compile(r"``(.+?)``")
INTERPRETED = re.compile(r"`([^`]+)`")
EMPHASIS = re.compile(r"\*\*([^*]+?)\*\*|\*([^\s*](?:[^*]*?[^\s*])?)\*")
FOOTNOTE_REF = re.compile(r"\s?\[(#\w*|\d+)\]_")
SUBSTITUTION = re.compile(r"\|(\w+)\|")
JARGON_HEADWORD = re.compile(r"^   :(.+?):(\s|$)")
JARGON_LETTER = re.compile(r"^  [A-Z0]$")
JARGON_XREF = re.compile(r"\{([^{}\n]+)\}")


@dataclass(frozen=True)
class Document:
    """A unit of text that goes entirely to one split."""

    ident: str
    text: str


def unpack_deb(deb: Path, dest: Path) -> None:
    """Extract a Debian package's file tree into ``dest``."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def reflow(lines: list[str]) -> str:
    """Join wrapped lines: one output line per paragraph, list item or term.

    A list item continues on lines indented like its text (reST) or like its
    marker (the Jargon File); any other change of indentation starts a new line.
    """
    out: list[str] = []
    current: list[str] = []
    continuations: tuple[int, ...] = ()  # indents that continue the current block
    for raw in lines + [""]:
        stripped = raw.strip()
        line_indent = len(raw) - len(raw.lstrip())
        bullet = BULLET.match(stripped)
        if current and (not stripped or bullet or line_indent not in continuations):
            out.append(" ".join(current))
            current = []
        if stripped:
            if not current:
                marker = len(bullet.group(0)) if bullet else 0
                continuations = (line_indent, line_indent + marker)
            current.append(stripped)
    text = "\n".join(re.sub(r"\s+", " ", p).strip() for p in out)
    return text.translate(TYPOGRAPHY).replace("  ", " ")


def clean_inline_rst(text: str) -> str:
    """Replace inline reST markup by the text a reader would see."""

    def role(match: re.Match[str]) -> str:
        name, content = match.groups()
        if name in ("pep", "rfc"):
            return f"{name.upper()} {content}"
        titled = REF_WITH_TARGET.match(content)
        if titled and titled.group(1):
            return titled.group(1)
        content = content.lstrip("!")
        if content.startswith("~"):
            content = content[1:].rsplit(".", 1)[-1]
        return content

    text = ROLE.sub(role, text)
    text = HYPERLINK.sub(r"\1", text)
    text = NAMED_REF.sub(r"\1", text)
    text = LITERAL.sub(r"\1", text)
    text = INTERPRETED.sub(r"\1", text)
    text = EMPHASIS.sub(lambda m: m.group(1) or m.group(2), text)
    text = FOOTNOTE_REF.sub("", text)
    text = SUBSTITUTION.sub(r"\1", text)
    return text


def indent_of(line: str) -> int:
    """Number of leading spaces of ``line``."""
    return len(line) - len(line.lstrip(" "))


def rst_prose_lines(source: str) -> Iterator[str | None]:
    """Yield the prose lines of a reST page; ``None`` marks a section break."""
    lines = source.expandtabs(8).splitlines()
    skip_deeper_than: int | None = None
    in_options = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if skip_deeper_than is not None:
            if not stripped or indent_of(line) > skip_deeper_than:
                continue
            skip_deeper_than = None
            yield ""
        if in_options and stripped.startswith(":") and not stripped.startswith("::"):
            continue
        in_options = False
        if SECTION_RULE.match(line):  # overlines and transitions
            continue
        if i < len(lines) and stripped and SECTION_RULE.match(lines[i]) and (len(lines[i].strip()) >= len(stripped)):
            yield None
            yield line
            yield ""
            i += 1
            continue
        directive = DIRECTIVE.match(line)
        if directive:
            indent, name, argument = directive.groups()
            name = name.lower()
            in_options = True
            if name in SIGNATURE_DIRECTIVES:
                yield indent + argument
            elif name in VERSION_DIRECTIVES:
                version = argument.split()[0] if argument else ""
                yield indent + VERSION_DIRECTIVES[name].format(version)
            elif name == "rubric":
                yield indent + argument
                yield ""
            elif name not in BODY_DIRECTIVES:
                skip_deeper_than = len(indent)
            continue
        if EXPLICIT_MARKUP.match(line):  # comments, labels, substitutions
            skip_deeper_than = indent_of(line)
            continue
        if TABLE_RULE.match(line) or stripped.startswith(">>>"):
            while i < len(lines) and lines[i].strip():
                i += 1
            yield ""
            continue
        if stripped.endswith("::"):
            skip_deeper_than = indent_of(line)
            text = stripped[:-2].rstrip()
            if text:
                colon = "" if stripped.endswith(" ::") else ":"
                yield " " * indent_of(line) + text + colon
            continue
        yield line


def python_doc_documents(root: Path) -> Iterator[Document]:
    """Split the Python documentation sources into per-section documents."""
    paths: list[Path] = []
    for section in PYDOC_SECTIONS:
        target = root / section
        paths.extend(sorted(target.rglob("*.rst.txt")) if target.is_dir() else [target])
    for path in paths:
        rel = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        block: list[str] = []
        index = 0
        for line in list(rst_prose_lines(source)) + [None]:
            if line is not None:
                block.append(line)
                continue
            text = "\n".join(clean_inline_rst(p) for p in reflow(block).splitlines()).strip()
            block = []
            if len(text.split()) >= 20:
                yield Document(f"python-doc:{rel}#{index}", text)
                index += 1


def jargon_documents(text: str) -> Iterator[Document]:
    """Split the Jargon File into chapters, lexicon entries and appendices.

    The tables of contents (the global one, the glossary's and the list of
    headwords after each letter heading of the lexicon) and box-drawn tables
    are dropped.
    """
    lines = text.splitlines()
    glossary = lines.index("Glossary")
    start = max(  # the heading, not the table of contents entry
        i for i in range(glossary) if lines[i].strip() == "Welcome to the Jargon File"
    )
    ident = "Welcome to the Jargon File"
    block: list[str] = []
    in_index = False

    def flush() -> Iterator[Document]:
        prose = JARGON_XREF.sub(r"\1", reflow(block)).strip()
        if prose:
            yield Document(f"jargon:{ident}", prose)

    for line in lines[start:]:
        if any("\u2500" <= c <= "\u257f" for c in line):  # tables, rules
            continue
        headword = JARGON_HEADWORD.match(line)
        if line == "Glossary" or JARGON_LETTER.match(line):
            in_index = True
        elif headword:
            in_index = False
        if in_index:
            continue
        if headword or (line and not line[0].isspace()):
            yield from flush()
            block = []
            ident = headword.group(1) if headword else line.strip()
            line = line[4:] if headword else line
        block.append(line)
    yield from flush()


def is_test(doc: Document, test_permille: int) -> bool:
    """Deterministic split: hash the identifier into [0, 1000)."""
    digest = hashlib.sha256(doc.ident.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < test_permille


def write_split(path: Path, docs: list[Document]) -> None:
    """Write documents separated by blank lines (gzip if the name ends in .gz)."""
    data = ("\n\n".join(d.text for d in docs) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    else:
        path.write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jargon-deb", type=Path, required=True)
    parser.add_argument("--python-doc-deb", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--test-permille", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        unpack_deb(args.jargon_deb, Path(tmp))
        unpack_deb(args.python_doc_deb, Path(tmp))
        doc_root = Path(tmp) / "usr/share/doc"
        jargon = gzip.decompress((doc_root / "jargon-text/jargon.txt.gz").read_bytes()).decode("utf-8")
        docs = list(jargon_documents(jargon))
        docs += list(python_doc_documents(doc_root / "python3.11/html/_sources"))

    train = [d for d in docs if not is_test(d, args.test_permille)]
    test = [d for d in docs if is_test(d, args.test_permille)]
    args.out.mkdir(parents=True, exist_ok=True)
    write_split(args.out / "train.txt.gz", train)
    write_split(args.out / "test.txt.gz", test)
    for name, split in (("train", train), ("test", test)):
        chars = sum(len(d.text) for d in split)
        print(f"{name}: {len(split)} documents, {chars} characters")


if __name__ == "__main__":
    main()
