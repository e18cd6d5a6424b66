"""The one Jinja2 environment that renders every generated text file of llmc.

Templates live in ``llmc/hls_templates`` (kernels, headers, RTL, build files, hosts),
``llmc/sim/templates`` (reports), ``llmc/deploy/templates`` (the deployed folder),
``llmc/backends/tvm/templates`` (the cross-compiled kernels' harness) and ``llmc/sweep/templates``
(a sweep's report and plots), and are
named relative to their folder. One set of rules for all: an undefined variable is an error,
block tags take their line with them (``trim_blocks``, ``lstrip_blocks``), a file's last newline
is kept, and nothing is escaped implicitly: every name or string a template writes goes through one
of the filters of :mod:`llmc.safe_text` (``identifier``, ``word``, ``comment``, ``xml``), chosen by
the language and the place it lands in.
"""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from llmc.safe_text import FILTERS

PACKAGE = Path(__file__).parent
HLS_TEMPLATES = PACKAGE / "hls_templates"
TEMPLATE_FOLDERS = (HLS_TEMPLATES, PACKAGE / "sim" / "templates", PACKAGE / "deploy" / "templates",
                    PACKAGE / "backends" / "tvm" / "templates", PACKAGE / "sweep" / "templates")


@functools.cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader([str(folder) for folder in TEMPLATE_FOLDERS]),
                      undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                      lstrip_blocks=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render(template_name: str, **context: object) -> str:
    """Render the template ``template_name`` (relative to its folder) with ``context``."""
    return environment().get_template(template_name).render(**context)


def static_file(template_name: str) -> str:
    """A file of the template folders copied verbatim (a header or RTL block with nothing to fill)."""
    return environment().loader.get_source(environment(), template_name)[0]
