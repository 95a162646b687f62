"""Benchmarks: each module exposes ``run(quick: bool = False) -> list[dict]``.

Every result row is a figure measured in the run together with the limit it is
compared against, measured in the same run (see ``bench.common.result``).
``python -m bench.run_all`` (``make bench``) runs them all and prints one table.
"""
