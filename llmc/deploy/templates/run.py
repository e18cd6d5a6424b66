#!/usr/bin/env python3
"""Generate text with the deployed design on an Alveo card (--device pynq) or on llmc's
instruction-set simulator (--device sim); see README.md. Needs NumPy, and pynq for the card."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # the folder stays as deployed (it may be read-only)
sys.path.insert(0, str(HERE))  # this folder's copy of llmc

from llmc.deploy.runtime import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(HERE))
