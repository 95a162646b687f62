"""A gateway publisher process for kill tests: ``python -m tests.firmware_bridge.gateway_proc``.

argv: PORT SPOOL N MAX_INFLIGHT. Spools N one-animal batches (skipped when the spool
already holds messages from an earlier run), then sends until drained and prints
"drained". Prints "spooled" once its messages are on disk.
"""

from __future__ import annotations

import sys
import time

from namazu.firmware_bridge.publisher import GatewayPublisher
from namazu.firmware_bridge.spool import Spool


def batch(i: int) -> list[dict]:
    t0 = 1_714_521_600_000 + i * 60_000
    return [
        {
            "animal": "gw-k-cow-001",
            "species": "cow",
            "t_ms": [t0 + k for k in range(50)],
            "odba": [0.1] * 50,
            "vedba": [0.07] * 50,
        }
    ]


def main() -> None:
    port, path, n, inflight = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    spool = Spool(path)
    publisher = GatewayPublisher(
        "f-kill",
        "gw-k",
        spool,
        "127.0.0.1",
        port,
        max_inflight=inflight,
        keepalive_s=5,
        confirm="puback",  # a plain subscriber: the broker's PUBACK confirms
    )
    if spool.next_seq() == 1:
        publisher.publish_batches(batch(i) for i in range(n))
    print("spooled", flush=True)
    publisher.start()
    while not publisher.wait_drained(0.5):
        time.sleep(0.01)
    print("drained", flush=True)
    time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
    publisher.stop()


if __name__ == "__main__":
    main()
