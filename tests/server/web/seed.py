"""A small simulated farm for the panel tests: two cows with 1-minute activity over ten
days (a surge on the last day), their baseline rows, a gateway status, earthquakes near
the farm and the alarm the rule finds, stored in a real InfluxDB and state store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from namazu.analytics import rule
from namazu.analytics.params import RuleParams
from namazu.server.store.influx import InfluxClient, float_series_lines, point_line
from namazu.server.store.state import Alarm, session_scope

FARM = "demo-farm"
FARM_LAT, FARM_LON = 43.0147, 13.0509
START = pd.Timestamp("2024-03-01T00:00:00Z")
DAYS = 10
SURGE_START = START + pd.Timedelta(days=9, hours=10)
SURGE_MINUTES = 90


@dataclass
class SeededFarm:
    """What the seed wrote: the alarm id, its episode and the cow-1 series."""

    alarm_id: int
    episode: rule.Episode
    cow1: pd.Series
    start: pd.Timestamp
    end: pd.Timestamp


def activity(animal_seed: int, surge: bool) -> pd.Series:
    """Daily-cycle activity [g] at 1 min, with a 90-min 4x surge when ``surge``."""
    index = pd.date_range(START, periods=DAYS * 1440, freq="1min")
    rng = np.random.default_rng(animal_seed)
    minutes = np.arange(index.size) % 1440
    values = (
        0.1 + 0.05 * (1 + np.sin(2 * np.pi * minutes / 1440)) + rng.uniform(0, 0.01, index.size)
    )
    if surge:
        k0 = int((SURGE_START - START) / pd.Timedelta(minutes=1))
        values[k0 : k0 + SURGE_MINUTES] *= 4.0
    # a 3-hour gap on day 5
    gap = slice(5 * 1440 + 600, 5 * 1440 + 780)
    values[gap] = np.nan
    return pd.Series(values, index=index, name="cow-1")


def seed(influx: InfluxClient, sessions) -> SeededFarm:
    """Write the farm to InfluxDB and its alarm to the state store."""
    cow1 = activity(1, surge=True)
    cow2 = activity(2, surge=False).rename("cow-2")
    lines: list[str] = []
    for name, series in (("cow-1", cow1), ("cow-2", cow2)):
        ok = series.dropna()
        t_ms = ok.index.as_unit("ms").asi8
        lines += float_series_lines(
            "activity",
            {"farm": FARM, "gateway": "gw-1", "animal": name, "species": "cow"},
            {"odba": ok.to_numpy(), "vedba": ok.to_numpy() * 0.8},
            t_ms,
        )
    params = RuleParams()
    episodes, comp = rule.detect(cow1, "1min", params, return_components=True)
    herd = pd.concat([cow1, cow2], axis=1).mean(axis=1).rename("herd")  # as the tick writes it
    _, herd_comp = rule.detect(herd, "1min", params, return_components=True)
    for name, frame in (("cow-1", comp), ("herd", herd_comp)):
        ok = frame.dropna(subset=["baseline", "value"])
        lines += float_series_lines(
            "baseline",
            {"farm": FARM, "series": name},
            {
                "baseline": ok["baseline"].to_numpy(),
                "threshold": ok["threshold"].to_numpy(),
                "value": ok["value"].to_numpy(),
            },
            ok.index.as_unit("ms").asi8,
        )
    lines.append(
        point_line(
            "gateway_status",
            {"farm": FARM, "gateway": "gw-1"},
            {"online": True, "clock_offset_s": 0.25, "seq": 42},
            int((START + pd.Timedelta(days=DAYS)).value // 10**6),
        )
    )
    lines.append(  # a gateway whose clock runs 90 s ahead of the server
        point_line(
            "gateway_status",
            {"farm": FARM, "gateway": "gw-fast-clock"},
            {"online": True, "clock_offset_s": 90.0, "seq": 7},
            int((START + pd.Timedelta(days=DAYS)).value // 10**6),
        )
    )
    quakes = [
        # (time, magnitude, lat, lon, id): one M4.3 12 h after the surge 20 km away,
        # one small local shock, one far event
        (SURGE_START + pd.Timedelta(hours=12), 4.3, 43.15, 13.2, "q-near"),
        (START + pd.Timedelta(days=3), 2.8, 43.02, 13.06, "q-local"),
        (START + pd.Timedelta(days=4), 5.5, 38.0, 15.5, "q-far"),
    ]
    for when, mag, lat, lon, event_id in quakes:
        lines.append(
            point_line(
                "earthquake",
                {"source": "test"},
                {"magnitude": mag, "latitude": lat, "longitude": lon, "depth_km": 10.0,
                 "event_id": event_id},
                int(when.value // 10**6),
            )
        )  # fmt: skip
    influx.write_lines(lines)
    assert len(episodes) == 1, episodes
    ep = episodes[0]
    with session_scope(sessions) as db:
        alarm = Alarm(
            farm=FARM,
            series="cow-1",
            kind="animal",
            species="cow",
            start=ep.start.to_pydatetime(),
            end=ep.end.to_pydatetime(),
            last_anomalous=ep.end.to_pydatetime(),
            opened_at=(ep.start + pd.Timedelta(minutes=44)).to_pydatetime(),
            closed_at=(ep.end + pd.Timedelta(minutes=1)).to_pydatetime(),
            state="closed",
            peak_ratio=ep.peak_ratio,
            animals_reporting=2,
            animals_total=2,
            animals_involved=["cow-1"],
            params=ep.params,
            rule_version=ep.params["rule_version"],
            log_hash="ab" * 32,
            log_index=0,
        )
        db.add(alarm)
        db.flush()
        alarm_id = alarm.id
    return SeededFarm(alarm_id, ep, cow1, START, START + pd.Timedelta(days=DAYS))
