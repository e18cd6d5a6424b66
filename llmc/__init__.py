"""llmc: compile large language models to verified FPGA accelerator designs and TVM targets.

Python API: ``llmc.load(source)`` imports a model (see :func:`llmc.model.load`); the result's
``.module`` is the IR and ``.run(prompt=...)`` generates through the reference interpreter.
"""

from llmc.deploy.generate import Generation, SamplingOptions
from llmc.errors import FrontendError, LlmcError
from llmc.model import Model, load

__version__ = "0.1.0"
__all__ = ["FrontendError", "Generation", "LlmcError", "Model", "SamplingOptions", "load"]
