"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class LlmcError(Exception):
    """Bad input or an impossible request; the message names the problem and where it is."""


class FrontendError(LlmcError):
    """A model cannot be imported; the message names the file, node or op."""
