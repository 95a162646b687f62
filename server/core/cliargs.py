"""Argument types for the command line: each names the allowed range when a value is outside.

Used as ``type=`` of ``argparse`` options, so a bad value ends in one line and exit
code 2, e.g. ``namazu analyze: error: argument --increase-pct: must be > 0, got -50``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["number_in_range"]


def number_in_range(
    kind: type[int] | type[float],
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` (int or float) parsed and checked against the bounds.

    minimum, maximum : inclusive bounds (None: unbounded); exclusive_minimum : the value
    must be strictly greater than ``minimum``. Non-finite floats are refused.
    """

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None:
            if exclusive_minimum and value <= minimum:
                raise argparse.ArgumentTypeError(f"must be > {minimum:g}, got {text}")
            if not exclusive_minimum and value < minimum:
                raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
