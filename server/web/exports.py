"""Exports of the panel: Movebank-compatible activity CSV (the timeline CSV is in
``namazu.server.web.api``). Wiring only: InfluxDB rows in, ``namazu.analytics.movebank`` formats.

No export reads or writes a file: output is built in memory and sent as the response,
and download names are derived from validated ids only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from namazu.analytics.movebank import activity_to_movebank
from namazu.server.core.config import FarmConfig
from namazu.server.store import queries

TAXA = {"cow": "Bos taurus", "sheep": "Ovis aries", "dog": "Canis lupus familiaris"}


def movebank_csv(handles: Any, farm: FarmConfig, animal: str, start_ms: int, end_ms: int) -> str:
    """Movebank web-export CSV text of one animal's activity in [start, end) [UTC ms]."""
    frame = handles.influx.query_frame(
        *queries.activity_for_export(farm.id, animal, start_ms, end_ms)
    )
    if frame.empty or "odba" not in frame:
        frame = pd.DataFrame(
            {
                "time": pd.Series([], dtype="datetime64[ns, UTC]"),
                "odba": pd.Series([], dtype=float),
                "vedba": pd.Series([], dtype=float),
                "species": pd.Series([], dtype=str),
            }
        )
    activity = pd.DataFrame(
        {
            "individual": animal,
            "time": frame["time"],
            "odba": pd.to_numeric(frame["odba"], errors="coerce"),
            "vedba": pd.to_numeric(frame.get("vedba"), errors="coerce"),
        }
    )
    species = str(frame["species"].dropna().iloc[0]) if frame["species"].notna().any() else ""
    table = activity_to_movebank(
        activity,
        study=f"Namazu {farm.name or farm.id}",
        individuals={animal: {"tag": animal, "deployment": f"{farm.id}-{animal}",
                              "taxon": TAXA.get(species, "")}},
    )  # fmt: skip
    return table.to_csv(index=False, lineterminator="\n")
