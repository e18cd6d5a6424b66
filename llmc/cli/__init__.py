"""The ``llmc`` command line: the table :data:`COMMANDS` of subcommands, and :func:`main`.

A subcommand is a :class:`~llmc.cli.common.Command` defined in the module of its group
(``model``, ``compress``, ``fpga``, ``sim``, ``deploy``, ``sweep``) and listed here. User errors
(:class:`~llmc.errors.LlmcError` and the others in :data:`USER_ERRORS`) print one line
``llmc: error: ...`` and exit 2; ``--debug`` adds the traceback and library warnings.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llmc.cli import compress, deploy, fpga, model, sim, sweep
from llmc.cli.common import Command
from llmc.errors import LlmcError
from llmc.ir.interpreter import InterpreterError
from llmc.ir.parser import ParseError
from llmc.ir.verify import VerifyError
from llmc.version import __version__

USER_ERRORS = (LlmcError, ParseError, VerifyError, InterpreterError, OSError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool killed by a closed pipe

COMMANDS: dict[str, Command] = {c.name: c for c in (
    model.IMPORT, model.SHOW, model.RUN,
    compress.OPT, compress.EVAL,
    fpga.COMPILE, fpga.BUILD, fpga.CSIM,
    sim.SIMULATE, sim.VERIFY,
    deploy.DEPLOY, deploy.CALIBRATE,
    sweep.SWEEP,
)}


def build_parser() -> argparse.ArgumentParser:
    debug = "show tracebacks, and library warnings, logs and progress bars"
    common = argparse.ArgumentParser(add_help=False)  # --debug also after the subcommand
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    parser = argparse.ArgumentParser(prog="llmc", description="Compile large language models to FPGA designs.")
    parser.add_argument("--debug", action="store_true", help=debug)
    parser.add_argument("--version", action="version", version=f"llmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, parents=[common], help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(handler=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmc ARGV``; returns the exit code (argparse exits 2 itself on usage errors)."""
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries(not args.debug):
            return args.handler(args)
    except BrokenPipeError:  # the reader left early (llmc show | head): stop quietly, like SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("llmc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        print(f"llmc: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def error_message(e: BaseException) -> str:
    """One line: ``FILE: reason`` for OS errors, else the message with its lines joined."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) or type(e).__name__


# Read when transformers and huggingface_hub are first imported, as in a fresh ``llmc`` process.
QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextmanager
def quiet_libraries(enabled: bool) -> Iterator[None]:
    """Hide warnings raised outside llmc, and transformers' log messages and progress bars."""
    if not enabled:
        yield
        return
    saved = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module="llmc")
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
