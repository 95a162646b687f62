"""Named, a-priori parameter sets of the anomaly rule and of the evaluation.

The defaults are the ones fixed in the design contract ("The anomaly rule",
"Association and evaluation"). Every value is configurable; every alarm records
the parameter set it was computed with, together with ``RULE_VERSION``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RULE_VERSION = "namazu-rule/1"

#: Version of the association and scoring definitions (DESIGN.md, "Association and
#: evaluation"). 2: alarms count from their declaration time; reactions up to it; intervals,
#: power, undefined p-values, the seismicity reference and family-wise sweeps.
EVALUATION_VERSION = "namazu-evaluation/2"

#: Gardner-Knopoff-type window tables of ``analytics.decluster``.
DECLUSTER_WINDOWS: tuple[str, ...] = ("gardner-knopoff", "uhrhammer", "gruenthal")

#: Clocks of the baseline's "same time of day".
BASELINE_CLOCKS: tuple[str, ...] = ("utc", "local")

#: Sample-label conventions: a timestamp labels the start (default) or the end of its window.
SAMPLE_LABELS: tuple[str, ...] = ("start", "end")


@dataclass(frozen=True)
class RuleParams:
    """Parameters of the sustained-surge rule.

    baseline_days : int. Number of previous days whose same-time-of-day values form the
        baseline median [days].
    min_baseline_days : int. Minimum number of those days that must have a value for the
        baseline to be defined [days].
    increase_pct : float. A sample is anomalous when x >= b * (1 + increase_pct/100) [%].
    min_duration_min : float. Minimum episode span, end - start + resolution [min].
    quorum : float. Fraction of reporting animals that must be anomalous at once for a
        herd quorum alarm [0..1].
    sample_label : str. Which end of its window a sample's timestamp labels: "start"
        (default; a sample labelled t covers [t, t + Δ)) or "end" (it covers [t - Δ, t)).
        Only the declaration time of an episode and monitored time depend on it.
    baseline_clock : str. "utc" (default): the baseline compares the same UTC time of day;
        "local": the same local clock time in clock_timezone, across daylight-saving changes.
    clock_timezone : str. IANA zone of the local clock ("Europe/Rome"); used only with
        baseline_clock "local".
    """

    baseline_days: int = 7
    min_baseline_days: int = 3
    increase_pct: float = 140.0
    min_duration_min: float = 45.0
    quorum: float = 0.5
    sample_label: str = "start"
    baseline_clock: str = "utc"
    clock_timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.baseline_days < 1:
            raise ValueError(f"baseline_days must be >= 1, got {self.baseline_days}")
        if not 1 <= self.min_baseline_days <= self.baseline_days:
            raise ValueError(
                f"min_baseline_days must be in 1..baseline_days ({self.baseline_days}), "
                f"got {self.min_baseline_days}"
            )
        if self.increase_pct <= -100:
            raise ValueError(f"increase_pct must be > -100, got {self.increase_pct}")
        if self.min_duration_min <= 0:
            raise ValueError(f"min_duration_min must be > 0, got {self.min_duration_min}")
        if not 0 < self.quorum <= 1:
            raise ValueError(f"quorum must be in (0, 1], got {self.quorum}")
        if self.baseline_clock not in BASELINE_CLOCKS:
            raise ValueError(
                f"baseline_clock must be one of {', '.join(BASELINE_CLOCKS)}, "
                f"got {self.baseline_clock!r}"
            )
        try:
            ZoneInfo(self.clock_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"clock_timezone {self.clock_timezone!r} is not an IANA time zone"
            ) from None
        if self.sample_label not in SAMPLE_LABELS:
            raise ValueError(
                f"sample_label must be one of {', '.join(SAMPLE_LABELS)}, got {self.sample_label!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The parameters plus the rule version, as recorded with each alarm."""
        return {"rule_version": RULE_VERSION, **asdict(self)}


@dataclass(frozen=True)
class EvaluationParams:
    """Parameters of alarm-earthquake association and scoring.

    lead_window_h : float. An alarm covers [declared_at, end + lead_window] [h].
    min_magnitude : float. Target earthquakes have magnitude >= this.
    fixed_radius_km : float | None. Fixed target radius [km]; None = Dobrovolsky
        radius R = 10**(0.43 M) [km].
    reaction_window_min : float. An alarm with local shaking from this long before its
        first anomalous sample up to its declaration time is a reaction [min].
    reaction_min_magnitude : float. Magnitude of "local shaking".
    reaction_radius_km : float. Distance of "local shaking" [km].
    max_gap_h : float. Data gaps longer than this are not monitored time [h].
    n_shifts : int. Number of circular time shifts for the empirical p-value.
    seed : int. Seed of the shift draw (results are reproducible).
    alpha : float. Significance level of intervals, statements and the Molchan curve [-].
    min_targets_for_skill : int. Fewest targets for which a skill sentence may be written
        (with both p-values <= alpha) [targets].
    reference_window_h : float. The seismicity reference forecast alarms for this long
        after each qualifying event [h].
    reference_min_magnitude : float. Magnitude of the events that open a reference alarm.
    reference_radius_km : float. Epicentral distance from the farm of those events [km].
    decluster_window : str. Declustering window table: gardner-knopoff (van Stiphout et al.
        2012 fit), uhrhammer (1986) or gruenthal.
    foreshock_fraction : float. Fraction of a mainshock's time window searched before it
        for foreshocks when declustering; 0 = aftershocks only [-].
    merge_targets_h : float | None. Targets closer than this in time (and than
        merge_targets_km in distance) count once, as the earliest of them; None = off [h].
    merge_targets_km : float | None. Distance limit of merge_targets_h [km].
    """

    lead_window_h: float = 20.0
    min_magnitude: float = 4.0
    fixed_radius_km: float | None = None
    reaction_window_min: float = 60.0
    reaction_min_magnitude: float = 2.5
    reaction_radius_km: float = 30.0
    max_gap_h: float = 2.0
    n_shifts: int = 1000
    seed: int = 20170118
    alpha: float = 0.05
    min_targets_for_skill: int = 5
    reference_window_h: float = 20.0
    reference_min_magnitude: float = 2.5
    reference_radius_km: float = 30.0
    decluster_window: str = "gardner-knopoff"
    foreshock_fraction: float = 0.0
    merge_targets_h: float | None = None
    merge_targets_km: float | None = None

    def __post_init__(self) -> None:
        if self.lead_window_h <= 0:
            raise ValueError(f"lead_window_h must be > 0, got {self.lead_window_h}")
        if self.fixed_radius_km is not None and self.fixed_radius_km <= 0:
            raise ValueError(f"fixed_radius_km must be > 0, got {self.fixed_radius_km}")
        if self.n_shifts < 0:
            raise ValueError(f"n_shifts must be >= 0, got {self.n_shifts}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_targets_for_skill < 1:
            raise ValueError(
                f"min_targets_for_skill must be >= 1, got {self.min_targets_for_skill}"
            )
        if self.reference_window_h <= 0 or self.reference_radius_km <= 0:
            raise ValueError(
                "reference_window_h and reference_radius_km must be > 0, got "
                f"{self.reference_window_h}, {self.reference_radius_km}"
            )
        if self.decluster_window not in DECLUSTER_WINDOWS:
            raise ValueError(
                f"decluster_window must be one of {', '.join(DECLUSTER_WINDOWS)}, "
                f"got {self.decluster_window!r}"
            )
        if self.foreshock_fraction < 0:
            raise ValueError(f"foreshock_fraction must be >= 0, got {self.foreshock_fraction}")
        if (self.merge_targets_h is None) != (self.merge_targets_km is None):
            raise ValueError("merge_targets_h and merge_targets_km must be given together")
        if self.merge_targets_h is not None and (
            self.merge_targets_h < 0 or (self.merge_targets_km or 0) < 0
        ):
            raise ValueError("merge_targets_h and merge_targets_km must be >= 0")

    def as_dict(self) -> dict[str, Any]:
        """The parameters plus the evaluation version, as recorded in every report."""
        return {"evaluation_version": EVALUATION_VERSION, **asdict(self)}


RULE_PRESETS: dict[str, RuleParams] = {
    "default": RuleParams(),
    # The study's own description: 140 % above baseline for at least 45 minutes.
    "wikelski2020": RuleParams(),
    # A stricter a-priori variant for sensitivity checks.
    "strict": RuleParams(increase_pct=200.0, min_duration_min=90.0),
}


def rule_preset(name: str, **overrides: Any) -> RuleParams:
    """Return the named rule preset, optionally with fields replaced.

    Raises KeyError naming the valid preset names when ``name`` is unknown.
    """
    try:
        base = RULE_PRESETS[name]
    except KeyError:
        valid = ", ".join(sorted(RULE_PRESETS))
        raise KeyError(f"unknown rule preset {name!r}; valid presets: {valid}") from None
    return replace(base, **overrides) if overrides else base
