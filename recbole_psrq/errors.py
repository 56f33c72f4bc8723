"""Errors raised for bad user input.

Every message names the offending file / row / item and says how to fix it, so a researcher never has
to read a stack trace from inside RecBole, pandas or faiss.
"""


class PSRQError(Exception):
    """Base class: a problem the user can fix (bad input, bad config)."""


class DataFormatError(PSRQError, ValueError):
    """A data file is malformed (wrong columns, non-numeric values, misaligned ids...)."""


class ConfigError(PSRQError, ValueError):
    """A model / dataset / option name or value that cannot be used."""
