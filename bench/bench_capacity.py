"""Benchmark: panel requests per second of one worker thread, for the capacity table
(docs/capacity.md).

Starts a private InfluxDB (``namazu.server.launch.stack``), writes one day of 1-minute
activity for a 20-animal farm, builds the panel app (``create_app``) on a SQLite state
store with one viewer and an API token, and sends each request ``--requests`` times in
a row through the app itself (Flask's test client: the panel's own CPU and its InfluxDB
and state-store round trips, without gunicorn's HTTP parsing), one thread. Prints the
requests per second per request kind.

    .venv/bin/python -m bench.bench_capacity [--requests 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import activity_frame_lines
from namazu.firmware_bridge.simulator import Herd
from namazu.server.launch.stack import Stack
from namazu.server.store.influx import InfluxClient
from namazu.server.store.state import init_db, session_scope

END = datetime(2024, 5, 8, tzinfo=UTC)


def _seed(client: InfluxClient) -> str:
    herd = Herd("cap-farm", "gw-1", {"cow": 12, "sheep": 8}, seed=5)
    frame = herd.activity(END - timedelta(days=1), END)
    client.write_lines(activity_frame_lines(frame, "cap-farm"))
    return str(frame["animal"].iloc[0])


def run(stack: Stack, workdir: Path, requests: int) -> dict[str, float]:
    """Requests per second of one thread for each request kind [1/s]."""
    from namazu.server.web import create_app
    from namazu.server.web.auth import create_user, issue_token

    client = InfluxClient(stack.influx_url, "bench_capacity")
    client.create_database()
    animal = _seed(client)
    state_url = f"sqlite:///{workdir}/state.sqlite"
    engine = init_db(state_url)
    with session_scope(engine) as db:
        token = issue_token(db, create_user(db, "viewer", "viewer", "a long passphrase"))
    app = create_app(
        {
            "influx": {"url": stack.influx_url, "database": "bench_capacity"},
            "state": {"url": state_url},
            "web": {"secret_key": "b" * 48, "secure_cookies": False},
            "farms": [{"id": "cap-farm", "latitude": 43.0, "longitude": 13.0}],
        }
    )
    start, end = (END - timedelta(days=1)).isoformat(), END.isoformat()
    kinds = {
        "farms list": "/api/v1/farms",
        "overview": "/api/v1/overview",
        "timeline 1 d, one animal": (
            f"/api/v1/timeline?farm=cap-farm&series={animal}&start={start}&end={end}"
        ),
        "timeline 1 d, herd": f"/api/v1/timeline?farm=cap-farm&series=herd&start={start}&end={end}",
    }
    headers = {"Authorization": f"Bearer {token}"}
    rates: dict[str, float] = {}
    with app.test_client() as http:
        for kind, url in kinds.items():
            answer = http.get(url, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"{url}: {answer.status_code} {answer.get_data(as_text=True)}")
            started = time.perf_counter()
            for _ in range(requests):
                http.get(url, headers=headers)
            rates[kind] = requests / (time.perf_counter() - started)
            print(f"  {kind}: {rates[kind]:.0f} requests/s (one thread, {requests} requests)")
    client.drop_database()
    client.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="namazu-capacity-") as tmp:
        stack = Stack(Path(tmp) / "stack").start()
        try:
            run(stack, Path(tmp), args.requests)
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
