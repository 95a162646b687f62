"""A chaos-run gateway: deterministic samples through the project's spool and publisher.

``python -m tests.chaos.gateway --index 3 --port 1883 --spool /tmp/gw3.sqlite ...``
spools ``samples`` activity samples of ``animals`` animals at a steady pace (as a
farm's collars would produce them, whether or not the broker is reachable) through
``namazu.firmware_bridge.publisher.GatewayPublisher`` and exits 0 once every message is
confirmed (by default by an ingest receipt: stored). It resumes where it stopped when
restarted on the same spool, after a SIGKILL too (message k carries spool seq k + 1).
The samples are a pure function of the arguments (``expected_samples``), so the
harness can check the store against them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

FARM = "chaos-farm"
MINUTE_MS = 60_000


def gateway_name(index: int) -> str:
    """Gateway id of chaos gateway ``index``."""
    return f"gw-{index:02d}"


def animal_names(index: int, animals: int) -> list[str]:
    """Animal ids of chaos gateway ``index``."""
    return [f"g{index:02d}-cow-{a:03d}" for a in range(animals)]


def expected_samples(
    index: int, animals: int, samples: int, start_ms: int
) -> dict[str, np.ndarray]:
    """All samples gateway ``index`` publishes, in publication order.

    Sample j belongs to animal j % animals at minute j // animals after ``start_ms``
    (UTC epoch [ms]). Returns arrays ``animal`` (index), ``t_ms`` [ms], ``odba`` and
    ``vedba`` [g] (six decimals, so they survive the JSON round trip exactly).
    """
    j = np.arange(samples, dtype=np.int64)
    animal = j % animals
    minute = j // animals
    odba = ((index * 7919 + animal * 104_729 + minute * 31) % 100_000) / 100_000.0
    return {
        "animal": animal,
        "t_ms": start_ms + minute * MINUTE_MS,
        "odba": np.round(odba, 6),
        "vedba": np.round(odba * 0.75, 6),
    }


def message_batches(index: int, animals: int, samples: int, per_message: int, start_ms: int):
    """The animal lists of every message, in order (``per_message`` samples each)."""
    data = expected_samples(index, animals, samples, start_ms)
    names = animal_names(index, animals)
    for lo in range(0, samples, per_message):
        hi = min(lo + per_message, samples)
        ids = data["animal"][lo:hi]
        batch = []
        for a in np.unique(ids):
            rows = np.flatnonzero(ids == a) + lo
            batch.append(
                {
                    "animal": names[int(a)],
                    "species": "cow",
                    "t_ms": data["t_ms"][rows],
                    "odba": data["odba"][rows],
                    "vedba": data["vedba"][rows],
                }
            )
        yield batch


def main(argv: list[str] | None = None) -> int:
    """Run one chaos gateway until all its samples are acknowledged; print stats as JSON."""
    from namazu.firmware_bridge.publisher import GatewayPublisher
    from namazu.firmware_bridge.spool import Spool

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--port", type=int, required=True, help="broker (or proxy) port")
    parser.add_argument("--spool", required=True, help="SQLite spool file")
    parser.add_argument("--animals", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--start-ms", type=int, required=True, help="first sample, epoch ms")
    parser.add_argument("--duration-s", type=float, default=60.0, help="spooling time [s]")
    parser.add_argument("--drain-timeout-s", type=float, default=900.0)
    parser.add_argument("--confirm", choices=("receipt", "puback"), default="receipt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    spool = Spool(args.spool)
    publisher = GatewayPublisher(
        FARM,
        gateway_name(args.index),
        spool,
        port=args.port,
        client_id=f"chaos-{gateway_name(args.index)}",
        keepalive_s=5,
        reconnect_max_s=2.0,
        status_interval_s=5.0,
        wait_for_ingest=True,  # hold the spool after a broker restart until ingest is back
        confirm=args.confirm,  # receipt: the spool frees a message once ingest stored it
    )
    publisher.start()
    batches = list(
        message_batches(args.index, args.animals, args.samples, args.per_message, args.start_ms)
    )
    done = spool.last_seq()  # messages already spooled by an earlier run
    remaining = batches[done:]
    rate = len(batches) / max(args.duration_s, 1e-3)  # messages per second
    t0 = time.monotonic()
    position = 0
    while position < len(remaining):
        due = min(len(remaining), int((time.monotonic() - t0) * rate) + 1)
        if due > position:
            publisher.publish_batches(remaining[position:due])
            position = due
        time.sleep(0.05)
    drained = publisher.wait_drained(args.drain_timeout_s)
    publisher.stop()
    stats = dict(publisher.stats, spool_depth=spool.depth(), last_seq=spool.last_seq())
    spool.close()
    print(json.dumps(stats), flush=True)
    return 0 if drained else 3


if __name__ == "__main__":
    raise SystemExit(main())
