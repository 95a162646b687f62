"""How many examples the property-based tests draw.

``examples(n)`` is the number a test asks for times ``NAMAZU_HYPOTHESIS_SCALE``
(default 1). ``make fuzz`` sets a large scale and the random hypothesis profile for a
longer hunt than ``make test`` can afford.
"""

from __future__ import annotations

import os


def examples(count: int) -> int:
    """``count`` generated examples, scaled by ``NAMAZU_HYPOTHESIS_SCALE`` (an integer ≥ 1)."""
    scale = int(os.environ.get("NAMAZU_HYPOTHESIS_SCALE", "1"))
    if scale < 1:
        raise ValueError(f"NAMAZU_HYPOTHESIS_SCALE must be an integer >= 1, got {scale}")
    return count * scale
