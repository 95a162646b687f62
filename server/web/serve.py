"""``namazu web``: the panel on gunicorn, a production WSGI server.

Threads in a few worker processes (``web.workers`` × ``web.threads``); a worker that
hangs for ``web.timeout_s`` is replaced. Under systemd (``Type=notify``) gunicorn reports
readiness itself. Its own log lines go through the same JSON (or text) handler as the
rest of Namazu. Put nginx in front for TLS (``deploy/nginx``). Werkzeug's development
server is only for the demo and the tests.

With more than one worker the workers share their counters through a directory of
Prometheus' multiprocess mode (``share_metrics_between_workers``), so every scrape of
``/metrics`` counts the requests of all of them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from namazu.server.core.config import NamazuConfig

log = logging.getLogger(__name__)


class RootLogger(GunicornLogger):
    """gunicorn's error and access logs through the root logger's handler."""

    def setup(self, cfg: Any) -> None:
        """Let gunicorn set up, then drop its handlers so records reach the root."""
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


class PanelServer(BaseApplication):
    """A gunicorn application serving ``create_app(config)`` in each worker.

    config : the validated configuration. bind : "HOST:PORT". workers, threads :
    processes and threads per process. timeout_s : a worker silent this long is
    replaced [s].
    """

    def __init__(
        self,
        config: NamazuConfig,
        bind: str,
        workers: int,
        threads: int,
        timeout_s: float,
    ):
        self.config = config
        self.options: dict[str, Any] = {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": int(timeout_s),
            "graceful_timeout": 30,
            "keepalive": 5,
            "logger_class": RootLogger,
            "accesslog": None,  # nginx keeps the access log
            "errorlog": "-",
            "proc_name": "namazu-web",
            "forwarded_allow_ips": "127.0.0.1,::1",
        }
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.options["child_exit"] = _forget_worker_metrics
        super().__init__()

    def load_config(self) -> None:
        """Hand the options to gunicorn's settings."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the Flask app (in each worker, after the fork)."""
        from namazu.server.web import create_app

        return create_app(self.config)


def share_metrics_between_workers() -> Path:
    """A fresh directory in ``$PROMETHEUS_MULTIPROC_DIR`` where the worker processes keep
    their counters, so ``/metrics`` adds them up. Must run before ``prometheus_client``
    is first imported (it picks its mode then). Returns the directory."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the metrics were shared")
    path = Path(tempfile.mkdtemp(prefix="namazu-web-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _forget_worker_metrics(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: drop the gauges of a worker that has gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(
    config: NamazuConfig, host: str, port: int, workers: int, threads: int, timeout_s: float
) -> int:
    """Serve until SIGTERM/SIGINT; return gunicorn's exit status (0 after a clean stop)."""
    log.info(
        "serving the panel",
        extra={"url": f"http://{host}:{port}/", "workers": workers, "threads": threads},
    )
    try:
        PanelServer(config, f"{host}:{port}", workers, threads, timeout_s).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if shared and Path(shared).name.startswith("namazu-web-metrics-"):
            shutil.rmtree(shared, ignore_errors=True)
    return 0
