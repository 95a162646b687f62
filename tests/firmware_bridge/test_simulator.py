"""Simulator: determinism, chunk independence, diurnal shape, episodes, frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from namazu.firmware_bridge.frame import decode_frame
from namazu.firmware_bridge.processing import activity_from_frames
from namazu.firmware_bridge.simulator import (
    SPECIES_PROFILES,
    Herd,
    UnrestEpisode,
    main,
    parse_episode,
    species_profile,
)

DAY0 = datetime(2024, 5, 1, tzinfo=UTC)


def herd(**kw) -> Herd:
    base = dict(farm="f1", gateway="gw-1", counts={"cow": 8, "sheep": 6, "dog": 3}, seed=5)
    base.update(kw)
    return Herd(**base)


def test_animals_and_columns():
    h = herd()
    assert len(h.animals) == 17
    assert ("gw-1-cow-003", "cow") in h.animals
    df = h.activity(DAY0, DAY0 + timedelta(hours=1))
    assert list(df.columns) == ["animal", "species", "t_ms", "odba", "vedba"]
    assert df["t_ms"].dtype == np.int64
    assert len(df) == 17 * 60
    assert df.equals(df.sort_values(["t_ms", "animal"], kind="stable").reset_index(drop=True))


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = herd().activity(DAY0, DAY0 + timedelta(hours=6))
    b = herd().activity(DAY0, DAY0 + timedelta(hours=6))
    c = herd(seed=6).activity(DAY0, DAY0 + timedelta(hours=6))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["odba"], c["odba"])


@pytest.mark.parametrize("drift_ppm,dropout", [(0.0, 0.0), (40.0, 0.1)])
def test_independent_of_chunking(drift_ppm, dropout):
    h = herd(clock_drift_ppm=drift_ppm, dropout_rate=dropout)
    whole = h.activity(DAY0, DAY0 + timedelta(days=2), with_battery=True)
    edges = [DAY0 + timedelta(minutes=m) for m in (0, 7, 600, 1439, 1441, 2000, 2880)]
    parts = pd.concat(
        [h.activity(lo, hi, with_battery=True) for lo, hi in zip(edges, edges[1:], strict=False)]
    )
    parts = parts.sort_values(["t_ms", "animal"], kind="stable").reset_index(drop=True)
    whole = whole.sort_values(["t_ms", "animal"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, parts)


def test_magnitudes_like_real_collars():
    df = herd(counts={"cow": 20, "sheep": 20, "dog": 10}).activity(DAY0, DAY0 + timedelta(days=3))
    median = df.groupby("species")["odba"].median()
    assert ((median > 0.02) & (median < 0.5)).all(), median
    assert (df["odba"] > 0).all() and (df["vedba"] < df["odba"]).mean() > 0.99


def test_cow_diurnal_shape_milking_peaks_and_night_rest():
    h = herd(counts={"cow": 30}, tz_offset_h=1.0)
    df = h.activity(DAY0, DAY0 + timedelta(days=7))
    local_hour = ((df["t_ms"] // 3_600_000) + 1) % 24
    by_hour = df.groupby(local_hour)["odba"].mean()
    night = by_hour.loc[[0, 1, 2, 3]].mean()
    assert by_hour.loc[5] > 3 * night
    assert by_hour.loc[17] > 3 * night
    assert by_hour.loc[12] < by_hour.loc[5]  # midday rumination between the milkings


def test_sheep_dawn_dusk_and_dogs_alert_at_night():
    df = herd(counts={"sheep": 20, "dog": 20}).activity(DAY0, DAY0 + timedelta(days=7))
    hour = ((df["t_ms"] // 3_600_000) + 1) % 24
    sheep = df[df.species == "sheep"].groupby(hour[df.species == "sheep"])["odba"].mean()
    assert sheep.loc[[6, 7, 17, 18]].min() > 2 * sheep.loc[[12, 13]].mean()
    dogs = df[df.species == "dog"]
    night_q90 = dogs[hour[dogs.index].isin([0, 1, 2])]["odba"].quantile(0.95)
    assert night_q90 > 4 * SPECIES_PROFILES["dog"].hourly_odba_g[1]  # night alert bouts


def test_herd_coupling_is_shared():
    df = herd(counts={"cow": 20}).activity(DAY0, DAY0 + timedelta(days=3))
    wide = df.pivot(index="t_ms", columns="animal", values="odba")
    hourly = np.log(wide).groupby(wide.index // 3_600_000).mean()
    residual = hourly - hourly.mean(axis=1).to_numpy()[:, None]
    # animals vary individually, but a common factor dominates hour-to-hour changes
    assert hourly.mean(axis=1).std() > residual.std().mean()


def test_episode_ground_truth_is_visible():
    start = DAY0 + timedelta(hours=10)
    episode = UnrestEpisode(start, 90, 3.0, animals=("cow-002", "gw-1-sheep-001"))
    quiet = herd().activity(DAY0, DAY0 + timedelta(days=1))
    loud = herd(episodes=(episode,)).activity(DAY0, DAY0 + timedelta(days=1))
    ratio = loud["odba"] / quiet["odba"]
    inside = (loud.t_ms >= episode.start_ms) & (loud.t_ms < episode.end_ms)
    hit = loud.animal.isin(["gw-1-cow-002", "gw-1-sheep-001"])
    np.testing.assert_allclose(ratio[inside & hit], 3.0, rtol=1e-9)
    np.testing.assert_allclose(ratio[~(inside & hit)], 1.0, rtol=1e-9)
    assert (inside & hit).sum() == 2 * 90


def test_dropouts_battery_and_drift():
    h = herd(counts={"cow": 10}, dropout_rate=0.2, clock_drift_ppm=100)
    df = h.activity(DAY0, DAY0 + timedelta(days=2), with_battery=True)
    lost = 1 - len(df) / (10 * 2 * 1440)
    assert 0.1 < lost < 0.3
    assert df["battery_v"].between(3.39, 4.16).all()
    offsets = df["t_ms"] % 60_000
    offsets = np.minimum(offsets, 60_000 - offsets)
    assert offsets.max() > 1000 and offsets.max() <= 8640 + 1
    assert df["t_ms"].is_monotonic_increasing


def test_frames_carry_the_simulated_activity():
    h = herd(counts={"cow": 3, "dog": 2})
    end = DAY0 + timedelta(minutes=30)
    frames = [decode_frame(b) for b in h.frames(DAY0, end)]
    truth = h.activity(DAY0, end, with_battery=True)
    got = activity_from_frames(frames, "gw-1")
    assert list(got["animal"]) == list(truth["animal"])
    np.testing.assert_array_equal(got["t_ms"], truth["t_ms"])
    np.testing.assert_allclose(got["odba"], truth["odba"], atol=5e-4)
    np.testing.assert_allclose(got["battery_v"], truth["battery_v"], atol=1e-3)


def test_parse_episode_and_bad_input():
    ep = parse_episode("2024-05-01T10:00,45,2.5,cow-001;dog-002")
    assert ep.start == DAY0 + timedelta(hours=10)
    assert ep.animals == ("cow-001", "dog-002") and ep.intensity == 2.5
    assert parse_episode("2024-05-01T10:00Z,45,2").animals is None
    with pytest.raises(ValueError, match="expected START"):
        parse_episode("2024-05-01,45")
    with pytest.raises(ValueError, match="valid: cow, dog, sheep"):
        species_profile("goat")
    with pytest.raises(ValueError, match="valid: cow, dog, sheep"):
        Herd("f", "g", {"goat": 1})


def test_simulate_command_rejects_bad_episode(capsys):
    assert main(["--episode", "tomorrow,5", "--spool", "/nonexistent/x"]) == 2
    assert "episode" in capsys.readouterr().err


def test_a_herd_can_replace_a_species_profile_for_itself_only():
    from dataclasses import replace

    quiet = replace(species_profile("cow"), noise_sigma=0.0, bout_odba_g=0.0)
    counts = {"cow": 4}
    smooth = Herd("f1", "gw-1", counts, seed=5, profiles={"cow": quiet})
    noisy = Herd("f1", "gw-1", counts, seed=5)
    end = DAY0 + timedelta(hours=6)
    steps = {}
    for name, h in (("smooth", smooth), ("noisy", noisy)):
        frame = h.activity(DAY0, end).pivot(index="t_ms", columns="animal", values="odba")
        steps[name] = np.abs(np.diff(np.log(frame.to_numpy()), axis=0)).mean()
    # minute-to-minute changes: slow variation only vs the per-sample noise
    assert steps["smooth"] < 0.05 < steps["noisy"]
    assert SPECIES_PROFILES["cow"].noise_sigma > 0  # the shared table is untouched
