"""The farm gateways of a cluster run: one process publishing every farm's simulated herd.

``python -m tests.cluster.gateways PLAN.json`` reads the farms (``FarmPlan`` as JSON),
the broker address, the data span and the pace, and for each farm spools the herd's
activity (``namazu.firmware_bridge.simulator.Herd`` with its unrest episodes) through
the project's spool and publisher (QoS 1, persistent session, receipts from ingest),
spread evenly over ``duration_s``. It exits 0 once every message is confirmed stored by
ingest, printing the publishers' counters as one JSON line. Restarted on the same spool
directory it resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MINUTE_MS = 60_000


@dataclass(frozen=True)
class FarmPlan:
    """One farm of the run: id, gateway id, InfluxDB instance (None = the default
    ``[influx]``), herd seed, species counts, and unrest episodes as
    (start [UTC epoch ms], duration [min], intensity [-])."""

    farm: str
    gateway: str
    instance: str | None
    seed: int
    counts: dict[str, int] = field(default_factory=dict)
    episodes: tuple[tuple[int, float, float], ...] = ()

    def herd(self):
        """The simulated herd (``namazu.firmware_bridge.simulator.Herd``)."""
        from namazu.firmware_bridge.simulator import Herd, UnrestEpisode

        episodes = tuple(
            UnrestEpisode(pd.Timestamp(start, unit="ms", tz="UTC").to_pydatetime(), length, gain)
            for start, length, gain in self.episodes
        )
        return Herd(self.farm, self.gateway, dict(self.counts), seed=self.seed, episodes=episodes)

    def activity(self, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Every sample the farm's gateway publishes in [start_ms, end_ms): animal,
        species, t_ms [ms], odba and vedba [g] rounded to the payload's 6 decimals."""
        frame = self.herd().activity(start_ms, end_ms)
        frame["odba"] = np.round(frame["odba"].to_numpy(), 6)
        frame["vedba"] = np.round(frame["vedba"].to_numpy(), 6)
        return frame


def plan_to_json(
    farms: list[FarmPlan],
    broker: str,
    port: int,
    start_ms: int,
    end_ms: int,
    duration_s: float,
    per_message: int,
    spool_dir: Path,
) -> str:
    return json.dumps(
        {
            "farms": [asdict(f) for f in farms],
            "broker": broker,
            "port": port,
            "start_ms": start_ms,
            "end_ms": end_ms,
            "duration_s": duration_s,
            "per_message": per_message,
            "spool_dir": str(spool_dir),
        }
    )


def main(argv: list[str] | None = None) -> int:
    """Publish every farm of the plan; exit 0 when all is confirmed stored, 3 if not."""
    from namazu.firmware_bridge.payload import batches_from_frame
    from namazu.firmware_bridge.publisher import GatewayPublisher
    from namazu.firmware_bridge.spool import Spool

    args = argv if argv is not None else sys.argv[1:]
    plan = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spool_dir = Path(plan["spool_dir"])
    spool_dir.mkdir(parents=True, exist_ok=True)
    publishers, pending = [], []
    for item in plan["farms"]:
        farm = FarmPlan(**{**item, "episodes": tuple(tuple(e) for e in item["episodes"])})
        spool = Spool(spool_dir / f"{farm.farm}.sqlite")
        publisher = GatewayPublisher(
            farm.farm,
            farm.gateway,
            spool,
            host=plan["broker"],
            port=plan["port"],
            client_id=f"cluster-{farm.farm}-{farm.gateway}",
            keepalive_s=5,
            reconnect_max_s=2.0,
            status_interval_s=5.0,
            wait_for_ingest=True,
            receipt_timeout_s=30.0,
        )
        publisher.start()
        frame = farm.activity(plan["start_ms"], plan["end_ms"])
        batches = list(batches_from_frame(frame, farm.farm, farm.gateway, plan["per_message"]))
        publishers.append((publisher, spool))
        pending.append(batches[spool.last_seq() :])  # resume after a restart
    total = sum(len(b) for b in pending)
    rate = max(total, 1) / max(plan["duration_s"], 1e-3)  # messages per second, all farms
    t0, sent = time.monotonic(), 0
    positions = [0] * len(pending)
    while sent < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while sent < due:  # round-robin over the farms, one message each
            for i, batches in enumerate(pending):
                if sent < due and positions[i] < len(batches):
                    publishers[i][0].publish_batches(batches[positions[i] : positions[i] + 1])
                    positions[i] += 1
                    sent += 1
        time.sleep(0.02)
    drained = all(p.wait_drained(900) for p, _ in publishers)
    stats = {}
    for (publisher, spool), item in zip(publishers, plan["farms"], strict=True):
        publisher.stop()
        stats[item["farm"]] = dict(publisher.stats, spool_depth=spool.depth())
        spool.close()
    print(json.dumps(stats, default=str), flush=True)
    return 0 if drained else 3


if __name__ == "__main__":
    raise SystemExit(main())
