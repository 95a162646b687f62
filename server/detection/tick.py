"""The detection tick: InfluxDB -> ``namazu.analytics.rule`` -> alarms in the state store and log.

The grid. The live rule runs on a grid of step Δ = ``resolution_s`` (default 15 min,
the step of the 2017 study data); a sample labelled t covers [t, t + Δ) and its value is
the ``aggregate`` (default the median) of the raw collar samples in that step. The rule
itself is unchanged (consecutive anomalous samples on the grid whose span reaches
``min_duration``). Why 15 min and the median: at 1 min, single noisy samples (lognormal
per-sample noise) fall under the threshold and break a run, so a real surge is missed or
split; the median of a step ignores single outliers and bursts shorter than half a step
(a dog's 5-min bark does not count as 15 min of unrest). The cost: an alarm is declared
at the earliest ``min_duration`` after the surge's first full step (45 to 60 min with the
defaults), surges shorter than about half a step are invisible, and times are known to
one step. ``bench/bench_detection_quality.py`` measures recall, splits, false alarms and
delays on simulated herds for this and the former 1-min grid.

One tick, per farm:

1. The new samples are the grid times t in (checkpoint, now - settle - Δ], i.e. whose
   whole step has passed, at most ``max_catchup_s`` of them per tick (a scheduler back
   from downtime catches up over several ticks). The checkpoint lives in the state store.
2. The baseline of a sample at t needs only the same time of day on the previous
   ``baseline_days`` days, so the tick reads ``baseline_days + 1`` short slices of
   activity (the new span itself and the same span 1..D days earlier), all in one
   InfluxQL request (``GROUP BY time(resolution), animal, species``: InfluxDB regrids).
   A tick's cost therefore grows with the new data, never with the stored history.
3. The slices are laid side by side as a compact series whose "day" is the new span, so
   ``namazu.analytics.rule.detect_matrix`` applies the rule unchanged to every animal,
   every species group and the herd's collective series; the quorum comes from the
   animals' flags through ``namazu.analytics.rule.quorum_flags``.
4. Runs of anomalous samples continue across ticks through a small per-series state
   (run start, peak ratio, and for collective series how often each animal was
   anomalous) saved with the checkpoint. An alarm OPENS when its run reaches
   ``min_duration``: ``declared_at`` (= ``opened_at``) is the end of that sample, the
   first moment the rule could know the episode. It is then written to the hash-chained
   log and handed to ``on_open`` (the e-mail queue, sent by the next mail cycle). It is
   EXTENDED while samples stay anomalous, and CLOSES at the first sample that is not
   anomalous: ``close_reason`` is "calm", "gap" (missing sample) or "no_baseline".
   Every alarm records ``resolution_s``.
5. Baseline and alarm points go back to InfluxDB (idempotent per series + time); alarms,
   run state and checkpoint are committed in one transaction. Re-processing a window
   after a crash finds the same alarms (identity = farm + series + kind + start), and the
   log's append is idempotent per identity, so a restart neither loses nor duplicates.

Collective series (species groups, herd) are the **mean activity per reporting animal**
[g] (written back as the ``baseline`` points' ``value``), so an animal that stops
reporting does not look like calm; when fewer than ``min_reporting_fraction`` of the
animals report, the collective sample is missing. A collective alarm names as
``animals_involved`` the animals anomalous in at least half of its run's samples, i.e.
the ones that surged, not every animal that reported.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from namazu.analytics.params import RULE_VERSION, RuleParams
from namazu.analytics.rule import declaration_time, detect_matrix, quorum_flags
from namazu.server.detection.alarmlog import AlarmLog
from namazu.server.store.influx import InfluxClient, point_line
from namazu.server.store.influx_router import InfluxRouter
from namazu.server.store.state import Alarm, Checkpoint, alarm_severity, session_scope

log = logging.getLogger(__name__)

MS_PER_DAY = 86_400_000
#: How the raw samples inside one grid step become the step's value.
AGGREGATES = ("median", "mean")


class DetectionError(Exception):
    """The tick cannot run with these settings (the message names the setting)."""


@dataclass(frozen=True)
class SeriesKey:
    """One judged series of a farm: kind (animal/species/herd/quorum), name, species."""

    kind: str
    name: str
    species: str | None

    @property
    def token(self) -> str:
        """Key of the series in the checkpoint's run state."""
        return f"{self.kind}|{self.name}"


@dataclass
class FarmTick:
    """What one tick did for one farm.

    first_ms, last_ms : first and last new grid time processed (UTC epoch [ms]);
    None when there was nothing new. samples : new samples read [count].
    opened / closed / extended : alarm ids. read_s / compute_s / write_s : timings [s].
    """

    farm: str
    first_ms: int | None = None
    last_ms: int | None = None
    animals: int = 0
    samples: int = 0
    opened: list[int] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    read_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(value: datetime) -> int:
    return int(round(value.timestamp() * 1000))


class DetectionJob:
    """The detection tick over a set of farms.

    influx : the activity store: an ``InfluxRouter`` (each farm read from and written to
    its own InfluxDB instance) or one ``InfluxClient`` for every farm; engine : the state
    store; alarm_log : the hash chain.
    farms : farm ids. params : the rule. resolution_s : grid step Δ [s] (divides 24 h).
    aggregate : "median" or "mean" of the raw samples in one step.
    settle_s : samples younger than this are left for a later tick (late arrivals) [s].
    max_catchup_s : most new time processed per tick, at most 24 h [s].
    initial_lookback_s : new time processed by the very first tick of a farm [s].
    min_reporting_fraction : collective series need this share of animals reporting [-].
    on_open : called with (session, opened alarms) inside the tick's transaction.
    fence : called with (session, farm) first in each farm's transaction; raises to
        stop a replica that no longer owns the farm (``namazu.server.store.leases``).
    """

    def __init__(
        self,
        influx: InfluxClient | InfluxRouter,
        engine: Engine,
        alarm_log: AlarmLog,
        farms: Sequence[str],
        params: RuleParams = RuleParams(),
        resolution_s: int = 900,
        settle_s: float = 120.0,
        max_catchup_s: float = 6 * 3600.0,
        initial_lookback_s: float = 3600.0,
        min_reporting_fraction: float = 0.5,
        on_open: Callable[[Session, list[Alarm]], None] | None = None,
        aggregate: str = "median",
        fence: Callable[[Session, str], None] | None = None,
    ):
        if MS_PER_DAY % (resolution_s * 1000):
            raise DetectionError(f"resolution_s={resolution_s} does not divide 24 h")
        if aggregate not in AGGREGATES:
            raise DetectionError(f"aggregate={aggregate!r}: use one of {', '.join(AGGREGATES)}")
        if not 0 < max_catchup_s <= 86_400:
            raise DetectionError(f"max_catchup_s={max_catchup_s} must be in (0, 86400]")
        self.router = influx if isinstance(influx, InfluxRouter) else InfluxRouter.single(influx)
        self.influx = self.router.default
        self.engine = engine
        self.alarm_log = alarm_log
        self.farms = list(farms)
        self.params = params
        self.res_ms = int(resolution_s * 1000)
        self.settle_ms = int(settle_s * 1000)
        self.max_catchup_ms = int(max_catchup_s * 1000) // self.res_ms * self.res_ms
        self.initial_ms = max(
            self.res_ms, int(initial_lookback_s * 1000) // self.res_ms * self.res_ms
        )
        self.min_reporting_fraction = min_reporting_fraction
        self.on_open = on_open
        self.fence = fence
        #: past days' slices kept in memory (``namazu.server.detection.window``); None
        #: reads every slice from InfluxDB at every tick
        self.window: Any = None
        self.aggregate = aggregate
        self.min_duration_ms = int(round(params.min_duration_min * 60_000))

    # ------------------------------------------------------------------ reading

    def read_slices(self, farm: str, last_ckpt_ms: int, end_ms: int) -> pd.DataFrame:
        """Activity of the new span (last_ckpt_ms, end_ms] and the same span on each of
        the previous ``baseline_days`` days, one request (or, with a ``window``, the new
        span alone and the past days from memory). Columns: t_ms, animal, species,
        odba [g] (mean per grid step)."""
        if self.window is not None:
            return self.window.read(self, farm, last_ckpt_ms, end_ms)
        lo, hi = last_ckpt_ms + self.res_ms, end_ms + self.res_ms
        days = range(self.params.baseline_days + 1)
        return self.read_spans(farm, [(lo - k * MS_PER_DAY, hi - k * MS_PER_DAY) for k in days])

    def read_spans(self, farm: str, spans: Sequence[tuple[int, int]]) -> pd.DataFrame:
        """Activity of ``farm`` per grid step in each [lo, hi) of ``spans`` [ms], one
        request. Columns: t_ms, animal, species, odba [g]."""
        statements = []
        for lo, hi in spans:
            statements.append(
                f'SELECT {self.aggregate}("odba") AS "odba" FROM "activity" '
                f'WHERE "farm" = $farm AND time >= {lo}ms AND time < {hi}ms '
                f'GROUP BY time({self.res_ms}ms), "animal", "species" fill(none)'
            )
        influx = self.router.for_farm(farm)
        series = influx.query("; ".join(statements), epoch="ms", params={"farm": farm})
        times, animals, species, values = [], [], [], []
        for item in series:
            rows = item.get("values") or []
            if not rows:
                continue
            tags = item.get("tags") or {}
            block = np.asarray(rows, dtype=object)
            times.append(block[:, 0].astype(np.int64))
            values.append(block[:, 1].astype(np.float64))
            animals.append(np.full(len(rows), tags.get("animal", ""), dtype=object))
            species.append(np.full(len(rows), tags.get("species", ""), dtype=object))
        if not times:
            return pd.DataFrame({"t_ms": [], "animal": [], "species": [], "odba": []})
        return pd.DataFrame(
            {
                "t_ms": np.concatenate(times),
                "animal": np.concatenate(animals),
                "species": np.concatenate(species),
                "odba": np.concatenate(values),
            }
        )

    # ------------------------------------------------------------------ tick

    def tick(self, now: datetime) -> list[FarmTick]:
        """Run one tick for every farm at wall (or simulated) time ``now`` [UTC]."""
        return [self.tick_farm(farm, now) for farm in self.farms]

    def tick_farm(self, farm: str, now: datetime) -> FarmTick:
        """One tick of one farm; commits alarms, run state and checkpoint together."""
        result = FarmTick(farm)
        # the newest sample whose whole step [t, t + Δ) lies before now - settle
        end_ms = (_ms(now) - self.settle_ms) // self.res_ms * self.res_ms - self.res_ms
        with session_scope(self.engine) as session:
            if self.fence is not None:
                self.fence(session, farm)
            name = f"detection:{farm}"
            ckpt = session.get(Checkpoint, name)
            if ckpt is None or ckpt.time is None:
                ckpt = Checkpoint(name=name, time=_dt(end_ms - self.initial_ms), value={})
                session.add(ckpt)
            last_ms = _ms(ckpt.time)
            if end_ms <= last_ms:
                return result
            end_ms = min(end_ms, last_ms + self.max_catchup_ms)
            m = (end_ms - last_ms) // self.res_ms
            started = time.perf_counter()
            frame = self.read_slices(farm, last_ms, end_ms)
            result.read_s = time.perf_counter() - started
            started = time.perf_counter()
            runs: dict[str, list[Any]] = dict((ckpt.value or {}).get("runs", {}))
            calm_closed: dict[str, Any] = dict((ckpt.value or {}).get("calm_closed", {}))
            open_alarms = {
                f"{a.kind}|{a.series}": a
                for a in session.scalars(
                    select(Alarm).where(Alarm.farm == farm, Alarm.state == "open")
                )
            }
            computed = self._compute(frame, last_ms, end_ms, m)
            result.first_ms, result.last_ms = last_ms + self.res_ms, end_ms
            result.animals = len(computed["animals"])
            result.samples = int(np.isfinite(computed["x"][: result.animals]).sum())
            touched: dict[str, Alarm] = {}
            opened = self._advance(
                session, farm, computed, runs, open_alarms, result, last_ms, m, touched,
                calm_closed,
            )  # fmt: skip
            result.compute_s = time.perf_counter() - started
            started = time.perf_counter()
            if opened:
                self._log(opened, computed)
                if self.on_open is not None:
                    self.on_open(session, opened)
            self._write_points(farm, computed, list(touched.values()))
            ckpt.time = _dt(end_ms)
            ckpt.value = {"runs": runs, "calm_closed": calm_closed}
            ckpt.updated_at = datetime.now(UTC)
            result.write_s = time.perf_counter() - started
        if result.opened or result.closed:
            log.info(
                "detection tick",
                extra={
                    "farm": farm,
                    "until": _iso(end_ms),
                    "opened": result.opened,
                    "closed": result.closed,
                },
            )
        return result

    # ------------------------------------------------------------------ maths

    def _compute(self, frame: pd.DataFrame, last_ms: int, end_ms: int, m: int) -> dict[str, Any]:
        """Series matrix in compact layout -> rule flags and baselines of the new span."""
        days = self.params.baseline_days
        width = (days + 1) * m
        animals = sorted(set(frame["animal"])) if len(frame) else []
        species_of = dict(zip(frame["animal"], frame["species"], strict=True)) if len(frame) else {}
        x = np.full((len(animals), width), np.nan)
        if len(frame):
            row = pd.Index(animals).get_indexer(frame["animal"])
            offset = end_ms - frame["t_ms"].to_numpy(np.int64)
            k = offset // MS_PER_DAY
            j = m - 1 - (offset - k * MS_PER_DAY) // self.res_ms
            col = (days - k) * m + j
            ok = (k >= 0) & (k <= days) & (j >= 0) & (j < m)
            x[row[ok], col[ok]] = frame["odba"].to_numpy(np.float64)[ok]
        wide = pd.DataFrame(x.T, columns=animals)
        n = len(animals)
        keys = [SeriesKey("animal", a, species_of[a]) for a in animals]
        rows = [x]
        if n:
            for sp in sorted(set(species_of.values())):
                members = [a for a in animals if species_of[a] == sp]
                counts = wide[members].notna().sum(axis=1).to_numpy()
                values = wide[members].mean(axis=1).to_numpy(np.float64, copy=True)
                values[counts < self.min_reporting_fraction * len(members)] = np.nan
                keys.append(SeriesKey("species", f"species:{sp}", sp))
                rows.append(values[None, :])
            herd = wide.mean(axis=1).to_numpy(np.float64, copy=True)
            reporting = wide.notna().sum(axis=1).to_numpy()
            herd[reporting < self.min_reporting_fraction * n] = np.nan
            keys.append(SeriesKey("herd", "herd", None))
            rows.append(herd[None, :])
        else:
            reporting = np.zeros(width, dtype=int)
        matrix = np.vstack(rows) if rows else np.empty((0, width))
        flags, base = detect_matrix(matrix, m, self.params)
        new = slice(days * m, width)
        xs, bs, fs = matrix[:, new], base[:, new], flags[:, new]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.isfinite(xs) & np.isfinite(bs) & (bs > 0), xs / bs, np.nan)
        inf = np.isfinite(xs) & (bs == 0) & (xs > 0)
        ratio[inf] = np.inf
        # quorum: animals judged (value and baseline) and the share of them anomalous
        if n:
            quorum, judged, _ = quorum_flags(
                fs[:n],
                np.isfinite(xs[:n]) & np.isfinite(bs[:n]),
                self.params.quorum,
                min_judged=self.min_reporting_fraction * n,
                return_components=True,
            )
            animal_ratio = ratio[:n]
            q_ratio = np.full(m, np.nan)
            has = np.isfinite(animal_ratio).any(axis=0)
            if has.any():
                q_ratio[has] = np.nanmedian(
                    np.where(np.isinf(animal_ratio), np.nan, animal_ratio)[:, has], axis=0
                )
            keys.append(SeriesKey("quorum", "quorum", None))
            fs = np.vstack([fs, quorum[None, :]])
            q_x = np.where(judged > 0, judged, np.nan).astype(np.float64)
            xs = np.vstack([xs, q_x[None, :]])
            bs = np.vstack([bs, np.where(judged > 0, 1.0, np.nan)[None, :]])
            ratio = np.vstack([ratio, q_ratio[None, :]])
        times = last_ms + self.res_ms * np.arange(1, m + 1, dtype=np.int64)
        return {
            "animals": animals,
            "species_of": species_of,
            "keys": keys,
            "x": xs,
            "base": bs,
            "flags": fs,
            "ratio": ratio,
            "times": times,
            "reporting": reporting[new],
            "matrix": x,
            "window": (last_ms + self.res_ms - days * MS_PER_DAY, end_ms),
        }

    @staticmethod
    def _members(computed: dict[str, Any], key: SeriesKey) -> np.ndarray:
        """Row indices of the animals that make up a collective series."""
        animals, species_of = computed["animals"], computed["species_of"]
        return np.asarray(
            [
                i
                for i, a in enumerate(animals)
                if key.species is None or species_of[a] == key.species
            ],
            dtype=np.int64,
        )

    def _advance(
        self,
        session: Session,
        farm: str,
        computed: dict[str, Any],
        runs: dict[str, list[Any]],
        open_alarms: dict[str, Alarm],
        result: FarmTick,
        last_ms: int,
        m: int,
        touched: dict[str, Alarm],
        calm_closed: dict[str, Any],
    ) -> list[Alarm]:
        """Walk the new samples of every series with work to do; open/extend/close.

        ``calm_closed`` maps a series to its last alarm closed "calm" or "gap" ([id,
        last anomalous sample [ms]]): a new episode of that series starting less than
        ``min_duration`` after it rejoins that alarm (reopened, no new e-mail).

        A run is kept as [first sample [ms], peak ratio, samples, {animal: anomalous
        samples}] (the last two only for collective series): an animal took part in a
        collective alarm when it was anomalous in at least half of the run's samples.
        """
        keys: list[SeriesKey] = computed["keys"]
        flags, ratio, xs, bs = (
            computed["flags"],
            computed["ratio"],
            computed["x"],
            computed["base"],
        )
        times = computed["times"]
        animals = computed["animals"]
        busy = flags.any(axis=1)
        position = {k.token: i for i, k in enumerate(keys)}
        closed: list[Alarm] = []
        closed_now: dict[str, Alarm] = {}
        for token in set(runs) | set(open_alarms):
            if token in position:
                busy[position[token]] = True
            else:  # the series vanished from the window: its run ends with a gap
                runs.pop(token, None)
                if token in open_alarms:
                    touched[token] = open_alarms.pop(token)
                    self._close(touched[token], last_ms + self.res_ms, "gap", closed)
        opened: list[Alarm] = []
        run_starts = {int(run[0]) for run in runs.values()} | {int(t) for t in times}
        existing: dict[tuple[str, str, int], Alarm] | None = None
        params = self.params.as_dict()
        for i in np.flatnonzero(busy):
            key = keys[i]
            token = key.token
            run = runs.get(token)
            alarm = open_alarms.get(token)
            collective = key.kind != "animal"
            members = self._members(computed, key) if collective else None
            counts = np.zeros(len(animals) if collective else 0, dtype=np.int64)
            if run is not None and collective:
                known = dict(run[3]) if len(run) > 3 else {}
                counts[:] = [int(known.get(a, 0)) for a in animals]
            for j in range(m):
                t = int(times[j])
                if flags[i, j]:
                    r = float(ratio[i, j]) if np.isfinite(ratio[i, j]) else 1e9
                    if run is None:
                        run = [t, r, 0]
                        counts[:] = 0
                    run[1] = max(run[1], r)
                    run[2] = int(run[2] if len(run) > 2 else 0) + 1
                    if collective:
                        counts[members] += flags[members, j]
                    if alarm is not None:
                        touched[token] = alarm
                        alarm.last_anomalous = _dt(t)
                        alarm.peak_ratio = max(alarm.peak_ratio, r)
                        if collective:
                            alarm.animals_involved = _took_part(animals, counts, run[2])
                        if alarm.id is not None and alarm.id not in result.extended:
                            result.extended.append(alarm.id)
                    elif t - run[0] + self.res_ms >= self.min_duration_ms:
                        alarm = self._rejoin(session, token, run, closed_now, calm_closed)
                        if alarm is not None:
                            touched[token] = open_alarms[token] = alarm
                            alarm.last_anomalous = _dt(t)
                            alarm.peak_ratio = max(alarm.peak_ratio, float(run[1]))
                            if collective:
                                alarm.animals_involved = sorted(
                                    set(alarm.animals_involved or [])
                                    | set(_took_part(animals, counts, run[2]))
                                )
                            if alarm.id is not None and alarm.id not in result.extended:
                                result.extended.append(alarm.id)
                            continue
                        if existing is None:  # one query, at the tick's first opening
                            existing = self._existing(session, farm, run_starts)
                        alarm = self._open(existing, farm, key, run, t, computed, j, params)
                        alarm.animals_involved = (
                            _took_part(animals, counts, run[2]) if collective else [key.name]
                        )
                        if alarm.id is None:
                            session.add(alarm)
                        open_alarms[token] = touched[token] = alarm
                        opened.append(alarm)
                else:
                    if alarm is not None:
                        touched[token] = alarm
                        if not np.isfinite(xs[i, j]):
                            reason = "gap"
                        elif not np.isfinite(bs[i, j]):
                            reason = "no_baseline"
                        else:
                            reason = "calm"
                        self._close(alarm, t, reason, closed)
                        open_alarms.pop(token, None)
                        if reason != "no_baseline":
                            closed_now[token] = alarm
                        alarm = None
                    run = None
            if run is None:
                runs.pop(token, None)
            else:
                if collective:
                    run[3:] = [{a: int(c) for a, c in zip(animals, counts, strict=True) if c}]
                runs[token] = run
        session.flush()  # one flush for the tick: ids of new alarms
        for token, alarm in closed_now.items():
            calm_closed[token] = [alarm.id, _ms(alarm.end)]
        # a run still short of min_duration at the last sample T began after
        # T - min_duration + Δ, so it can rejoin only alarms that ended after T - 2 min_duration
        horizon = last_ms + m * self.res_ms - 2 * self.min_duration_ms
        for token in [k for k, v in calm_closed.items() if v[1] < horizon]:
            del calm_closed[token]
        result.opened = [a.id for a in opened]
        result.closed += [a.id for a in closed]
        return opened

    def _rejoin(
        self,
        session: Session,
        token: str,
        run: list[Any],
        closed_now: dict[str, Alarm],
        calm_closed: dict[str, Any],
    ) -> Alarm | None:
        """The series' alarm closed ("calm" or "gap") less than ``min_duration`` before this
        episode's first sample, reopened; None when there is none. One surge whose
        samples dip under the threshold for a moment stays one alarm (one e-mail); the
        rule's episodes are unchanged (``namazu analyze`` reports both)."""
        alarm: Alarm | None = closed_now.pop(token, None)
        if alarm is None and token in calm_closed:
            alarm = session.get(Alarm, int(calm_closed[token][0]))
        calm_closed.pop(token, None)
        if alarm is None or alarm.end is None:
            return None
        calm_ms = int(run[0]) - _ms(alarm.end) - self.res_ms
        if calm_ms >= self.min_duration_ms:
            return None
        alarm.state = "open"
        alarm.end = alarm.closed_at = alarm.close_reason = None
        return alarm

    def _existing(
        self, session: Session, farm: str, starts: set[int]
    ) -> dict[tuple[str, str, int], Alarm]:
        """Stored alarms of ``farm`` starting at any of ``starts`` (UTC epoch [ms]), by
        (series, kind, start [ms]): the alarms a re-processed window finds again."""
        found: dict[tuple[str, str, int], Alarm] = {}
        ordered = sorted(starts)
        for first in range(0, len(ordered), 500):
            chunk = [_dt(ms) for ms in ordered[first : first + 500]]
            for alarm in session.scalars(
                select(Alarm).where(Alarm.farm == farm, Alarm.start.in_(chunk))
            ):
                found[(alarm.series, alarm.kind, _ms(alarm.start))] = alarm
        return found

    def _open(
        self,
        existing: dict[tuple[str, str, int], Alarm],
        farm: str,
        key: SeriesKey,
        run: list[Any],
        t: int,
        computed: dict[str, Any],
        j: int,
        params: dict[str, Any],
    ) -> Alarm:
        """The alarm of ``key``'s run, opened at sample ``t`` [ms] (column ``j``): the
        stored one of the same identity when there is one, else a new one (not added)."""
        start = _dt(int(run[0]))
        alarm = existing.get((key.name, key.kind, int(run[0]))) or Alarm(
            farm=farm, series=key.name, kind=key.kind, start=start
        )
        alarm.species = key.species
        alarm.severity = alarm_severity(key.kind, float(run[1]), self.params.increase_pct)
        alarm.last_anomalous = _dt(t)
        # the end of the sample at which the run's span reached min_duration (= t + Δ)
        first = pd.Timestamp(int(run[0]), unit="ms", tz="UTC")
        declared = declaration_time(first, pd.Timedelta(milliseconds=self.res_ms), self.params)
        alarm.declared_at = alarm.opened_at = declared.to_pydatetime()
        alarm.resolution_s = self.res_ms // 1000
        alarm.end = None
        alarm.closed_at = None
        alarm.close_reason = None
        alarm.state = "open"
        alarm.peak_ratio = float(run[1])
        alarm.animals_reporting = int(computed["reporting"][j])
        alarm.animals_total = len(computed["animals"])
        alarm.params = dict(params)
        alarm.rule_version = RULE_VERSION
        return alarm

    def _close(self, alarm: Alarm, t: int, reason: str, closed: list[Alarm]) -> None:
        alarm.state = "closed"
        alarm.end = alarm.last_anomalous
        alarm.closed_at = _dt(t)
        alarm.close_reason = reason
        closed.append(alarm)

    # ------------------------------------------------------------------ outputs

    def _log(self, opened: list[Alarm], computed: dict[str, Any]) -> None:
        """Append the records of the tick's opened alarms to the log, one locked append
        with one fsync, and note each alarm's (log_index, log_hash)."""
        skip = {"id", "log_hash", "log_index", "end", "closed_at", "close_reason", "state"}
        skip |= {"params", "rule_version"}
        records = [{k: v for k, v in a.to_dict().items() if k not in skip} for a in opened]
        lo, hi = computed["window"]
        data = {
            "series": list(computed["animals"]),
            "window": [_iso(lo), _iso(hi)],
            "layout": (
                f"{self.params.baseline_days + 1} slices of {len(computed['times'])} samples: "
                "the new span and the same span on each previous day"
            ),
            "resolution_s": self.res_ms // 1000,
            "sample_count": int(np.isfinite(computed["matrix"]).sum()),
            "values_sha256": _values_digest(computed),
        }
        entries = self.alarm_log.append_many(records, RULE_VERSION, opened[0].params, data)
        for alarm, (index, digest_hash) in zip(opened, entries, strict=True):
            alarm.log_index, alarm.log_hash = index, digest_hash

    def _write_points(
        self,
        farm: str,
        computed: dict[str, Any],
        alarms: list[Alarm],
    ) -> None:
        """Baseline points of the new samples and points of every alarm touched."""
        lines: list[str] = []
        times = computed["times"]
        factor = 1.0 + self.params.increase_pct / 100.0
        for i, key in enumerate(computed["keys"]):
            if key.kind == "quorum":
                continue
            xs, bs, rs = computed["x"][i], computed["base"][i], computed["ratio"][i]
            tags = {"farm": farm, "series": key.name}
            for j in np.flatnonzero(np.isfinite(xs)):
                fields: dict[str, float] = {"value": float(xs[j])}
                if np.isfinite(bs[j]):
                    fields["baseline"] = float(bs[j])
                    fields["threshold"] = float(bs[j] * factor)
                if np.isfinite(rs[j]):
                    fields["ratio"] = float(rs[j])
                lines.append(point_line("baseline", tags, fields, int(times[j])))
        for alarm in alarms:
            fields: dict[str, Any] = {
                "state": alarm.state,
                "peak_ratio": float(min(alarm.peak_ratio, 1e9)),
                "animals_reporting": int(alarm.animals_reporting),
            }
            if alarm.close_reason:
                fields["close_reason"] = alarm.close_reason
            lines.append(
                point_line(
                    "alarm",
                    {"farm": farm, "series": alarm.series, "kind": alarm.kind},
                    fields,
                    _ms(alarm.start),
                )
            )
        self.router.for_farm(farm).write_lines(lines)


def _took_part(animals: Sequence[str], counts: np.ndarray, samples: int) -> list[str]:
    """Animals anomalous in at least half of a collective run's ``samples``."""
    return [a for a, c in zip(animals, counts.tolist(), strict=True) if c and 2 * c >= samples]


def _values_digest(computed: dict[str, Any]) -> str:
    """SHA-256 of the tick's input: animal ids, then the float64 matrix (NaN canonical)."""
    h = hashlib.sha256()
    h.update("\n".join(computed["animals"]).encode())
    matrix = np.where(np.isnan(computed["matrix"]), np.nan, computed["matrix"])
    h.update(np.ascontiguousarray(matrix, dtype="<f8").tobytes())
    return h.hexdigest()


def wall_clock() -> datetime:
    """The current UTC time (the scheduler's clock outside replays)."""
    return datetime.now(UTC)


__all__ = ["DetectionError", "DetectionJob", "FarmTick", "SeriesKey"]
