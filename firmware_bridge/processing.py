"""Per-burst activity of decoded collar frames (thin glue over ``namazu.analytics.activity``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from namazu.analytics.activity import odba, vedba
from namazu.firmware_bridge.frame import CollarFrame

ACTIVITY_FRAME_COLUMNS = ("animal", "species", "t_ms", "odba", "vedba", "battery_v")


def collar_animal_id(gateway: str, species: str, collar_id: int) -> str:
    """Animal id of a collar as the gateway publishes it: ``{gateway}-{species}-{nnn}``."""
    return f"{gateway}-{species}-{collar_id:03d}"


def activity_from_frames(frames: Sequence[CollarFrame], gateway: str) -> pd.DataFrame:
    """ODBA and VeDBA of each frame's burst.

    frames : decoded collar frames (any mix of burst lengths).
    gateway : gateway id, used to name the animals.
    Returns a DataFrame with columns animal, species, t_ms (burst's first-sample UTC
    time [ms]), odba [g], vedba [g], battery_v [V], in the frames' order.
    """
    n = len(frames)
    odba_g = np.empty(n, dtype=np.float64)
    vedba_g = np.empty(n, dtype=np.float64)
    by_length: dict[int, list[int]] = {}
    for i, frame in enumerate(frames):
        by_length.setdefault(frame.n_samples, []).append(i)
    for indices in by_length.values():
        bursts = np.stack([frames[i].acceleration_g() for i in indices])
        odba_g[indices] = odba(bursts)
        vedba_g[indices] = vedba(bursts)
    return pd.DataFrame(
        {
            "animal": [collar_animal_id(gateway, f.species, f.collar_id) for f in frames],
            "species": [f.species for f in frames],
            "t_ms": np.array([f.t0_ms for f in frames], dtype=np.int64),
            "odba": odba_g,
            "vedba": vedba_g,
            "battery_v": np.array([f.battery_mv / 1000.0 for f in frames], dtype=np.float64),
        },
        columns=list(ACTIVITY_FRAME_COLUMNS),
    )
