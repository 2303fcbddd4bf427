"""The one error hierarchy of caltrail's parsers.

A ParseError means "this file cannot be read as this format at all" (wrong magic, empty,
missing required column). Problems inside a readable file are not raised: they become
`parsers.base.ParseIssue` items and the parser goes on. Messages say where, what was
expected and what was found.
"""

from __future__ import annotations


class ParseError(Exception):
    """Base class: a file that cannot be parsed as the format it was given to."""


class InvalidSignatureError(ParseError):
    """The file does not start with the format's magic bytes or header line."""


class TruncatedError(ParseError):
    """The file ends before its first complete structure."""


class ChecksumError(ParseError):
    """A checksum does not match (raised only where nothing of the file can be trusted)."""


class UnsupportedFormatError(ParseError):
    """A known format in a variant we do not read (the message says which)."""


class MissingColumnError(ParseError):
    """A tabular export lacks a column the table needs (the message names it)."""


__all__ = [
    "ChecksumError",
    "InvalidSignatureError",
    "MissingColumnError",
    "ParseError",
    "TruncatedError",
    "UnsupportedFormatError",
]
