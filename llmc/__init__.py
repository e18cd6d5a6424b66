"""llmc: compile large language models to verified FPGA accelerator designs and TVM targets.

Python API: ``llmc.load(source)`` imports a model (see :func:`llmc.model.load`); the result's
``.module`` is the IR and ``.run(prompt=...)`` generates through the reference interpreter.

The names below are imported on first use, so that importing one layer (``llmc.ir``, or the
deployed runtime) does not import the layers above it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from llmc.version import __version__

if TYPE_CHECKING:
    from llmc.errors import FrontendError, LlmcError
    from llmc.generate.loop import Generation, SamplingOptions
    from llmc.model import Model, load

_PUBLIC = {"FrontendError": "llmc.errors", "LlmcError": "llmc.errors", "Generation": "llmc.generate.loop",
           "SamplingOptions": "llmc.generate.loop", "Model": "llmc.model", "load": "llmc.model"}
__all__ = ["FrontendError", "Generation", "LlmcError", "Model", "SamplingOptions", "__version__", "load"]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'llmc' has no attribute '{name}'")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
