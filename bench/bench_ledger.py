"""Cost of the sequence ledger per activity message: decode + check without and with it.

Decodes the same 100-sample messages as the ingest benchmark the way an ingest worker
does (parse, validate, digest, the worker's sequence book, line protocol), once alone
("book only", what a worker did before the ledger) and once with the ledger claim of
each write batch in a SQLite state store (one insert-or-ignore + one select per batch),
first for new numbers and then for the same messages re-sent (every key present). The
two are measured alternately in the same run; medians of ``--runs`` are compared.

    .venv/bin/python -m bench.bench_ledger [--messages 5000] [--batch 500] [--runs 3]
                                           [--url postgresql+psycopg://...]

``--url`` measures on that state store instead of a new SQLite file per run (its
``message_digests`` rows are deleted before each run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_ingest import payloads, synthetic_points
from namazu.server.ingest.payload import decode_activity_message, parse_json
from namazu.server.ingest.service import SequenceBook, activity_digest, activity_lines
from namazu.server.store import digests
from namazu.server.store.state import MessageDigest, dispose_engine, init_db

MAX_FUTURE_MS = 300_000
MAX_AGE_MS = 400 * 86_400_000


def decode_all(messages: list[tuple[str, bytes]], now_ms: int) -> list:
    """Decode like ``IngestService._decode_into``: the (key, digest) ledger entries."""
    book = SequenceBook()
    entries = []
    for topic, payload in messages:
        document = parse_json(payload)
        decoded = decode_activity_message(topic, document, now_ms, MAX_FUTURE_MS, MAX_AGE_MS)
        digest = activity_digest(document)
        book.check(decoded.farm, decoded.gateway, decoded.boot_id, decoded.seq, digest)
        activity_lines(decoded.batch)
        key = (decoded.farm, decoded.gateway, decoded.boot_id or "", decoded.seq)
        entries.append((key, digest))
    return entries


def run_once(
    messages: list[tuple[str, bytes]], batch: int, url: str | None, fresh: bool = False
) -> float:
    """Seconds to decode (and, with a state-store URL, claim) every message."""
    now_ms = int(time.time() * 1000)
    engine = None if url is None else init_db(url)
    if engine is not None and fresh:
        with engine.begin() as connection:
            connection.execute(MessageDigest.__table__.delete())
    started = time.perf_counter()
    for lo in range(0, len(messages), batch):
        entries = decode_all(messages[lo : lo + batch], now_ms)
        if engine is not None:
            digests.claim(engine, entries, datetime.now(UTC))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Print microseconds per message without and with the ledger."""
    parser = argparse.ArgumentParser(prog="bench.bench_ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages of 100 samples")
    parser.add_argument("--batch", type=int, default=500, help="messages per write batch")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs")
    parser.add_argument("--url", help="state store URL (default: a new SQLite file per run)")
    args = parser.parse_args(argv)
    messages = payloads(synthetic_points(args.messages * 100))
    book_only, new, resent = [], [], []
    with tempfile.TemporaryDirectory(prefix="namazu-ledger-") as tmp:
        for run in range(args.runs):
            url = args.url or f"sqlite:///{Path(tmp)}/state-{run}.sqlite"
            book_only.append(run_once(messages, args.batch, None))
            new.append(run_once(messages, args.batch, url, fresh=True))
            resent.append(run_once(messages, args.batch, url))
            if args.url is None:
                dispose_engine(url)
    per = 1e6 / len(messages)
    base = statistics.median(book_only) * per
    store = "SQLite" if args.url is None else args.url.split(":", 1)[0]
    print(f"{len(messages):,} messages of 100 samples, batches of {args.batch}, {store}")
    print(f"  decode + book only{'':<18}{base:8.1f} us/message")
    for name, runs in (("+ ledger, new numbers", new), ("+ ledger, re-sent", resent)):
        value = statistics.median(runs) * per
        print(f"  decode + book {name:<22}{value:8.1f} us/message ({value / base:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
