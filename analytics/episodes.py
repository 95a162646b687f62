"""Alarms of one farm grouped into episodes: what a reader sees as "one event".

A surge of a whole herd opens a herd alarm, often a quorum alarm, and one alarm per
animal that surged. They describe one episode. ``group_episodes`` puts alarms of one
farm whose spans overlap (or follow each other within ``join_gap``) into one group and
names its head: the most collective alarm (herd, then quorum, then species, then animal;
the earliest start on ties). The alarm list and the e-mail digest both use it, so a
restless night of 36 alarms reads as one episode with its animals beneath it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: How collective an alarm kind is: a lower rank heads an episode.
KIND_RANK = {"herd": 0, "quorum": 1, "species": 2, "animal": 3}


@dataclass
class Episode:
    """One episode: ``head`` and the other alarms of it (``members``, by start).

    start, end : first and last anomalous sample over all its alarms [UTC].
    """

    head: Mapping[str, Any]
    members: list[Mapping[str, Any]] = field(default_factory=list)
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @property
    def alarms(self) -> list[Mapping[str, Any]]:
        """The head first, then the members."""
        return [self.head, *self.members]


def _span(alarm: Mapping[str, Any]) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(alarm["start"])
    last = alarm.get("end") or alarm.get("last_anomalous") or alarm["start"]
    end = pd.Timestamp(last)
    if start.tzinfo is None:
        start = start.tz_localize("UTC")
    if end.tzinfo is None:
        end = end.tz_localize("UTC")
    return start, max(start, end)


def group_episodes(
    alarms: Sequence[Mapping[str, Any]], join_gap: pd.Timedelta | str = "30min"
) -> list[Episode]:
    """Alarms grouped into episodes, per farm, newest episode first.

    alarms : mappings with ``farm``, ``kind``, ``start`` and ``end`` or
        ``last_anomalous`` (datetimes or ISO 8601 strings, UTC when naive), as
        ``Alarm.to_dict()`` gives them.
    join_gap : alarms whose spans are at most this far apart join one episode [time].
    """
    gap = pd.Timedelta(join_gap)
    if gap < pd.Timedelta(0):
        raise ValueError(f"join_gap must be >= 0, got {join_gap!r}")
    by_farm: dict[str, list[tuple[pd.Timestamp, pd.Timestamp, Mapping[str, Any]]]] = {}
    for alarm in alarms:
        start, end = _span(alarm)
        by_farm.setdefault(str(alarm.get("farm", "")), []).append((start, end, alarm))
    episodes: list[Episode] = []
    for rows in by_farm.values():
        rows.sort(key=lambda row: (row[0], row[1]))
        groups: list[list[tuple[pd.Timestamp, pd.Timestamp, Mapping[str, Any]]]] = []
        group_end = None
        for row in rows:
            if group_end is None or row[0] > group_end + gap:
                groups.append([row])
                group_end = row[1]
            else:
                groups[-1].append(row)
                group_end = max(group_end, row[1])
        for group in groups:
            ordered = sorted(
                group, key=lambda row: (KIND_RANK.get(str(row[2].get("kind")), 9), row[0])
            )
            head = ordered[0][2]
            members = [row[2] for row in sorted(ordered[1:], key=lambda row: row[0])]
            episodes.append(
                Episode(
                    head=head,
                    members=members,
                    start=min(row[0] for row in group),
                    end=max(row[1] for row in group),
                )
            )
    episodes.sort(key=lambda e: e.start, reverse=True)
    return episodes
