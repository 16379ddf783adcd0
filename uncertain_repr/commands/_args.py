"""argparse types shared by the commands: a bad value is a usage error naming the flag, before any work."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, epochs, ...)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker counts, ``0 = all`` limits)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def device(text: str) -> str:
    """A torch device that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    from .._validation import check_device

    try:
        check_device(text, name="device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
