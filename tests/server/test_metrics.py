"""The Prometheus metrics module: names, HTTP server, Flask-style response."""

from __future__ import annotations

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from namazu.server.core import metrics


def _families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_required_metric_is_exposed_with_namazu_prefix():
    metrics.INGEST_MESSAGES_REJECTED.labels(reason="schema").inc(0)
    metrics.SCHEDULER_TICK_SECONDS.labels(job="detection").observe(0.0)
    metrics.ALARMS_OPEN.labels(farm="demo-farm").set(0)
    registry = CollectorRegistry()
    metrics.export_families(*metrics.FAMILIES, registry=registry)
    families = _families(metrics.metrics_text(registry).decode())
    required = {
        "namazu_ingest_messages_received",
        "namazu_ingest_messages_written",
        "namazu_ingest_messages_rejected",
        "namazu_influx_write_seconds",
        "namazu_influx_write_failures",
        "namazu_spool_depth",
        "namazu_scheduler_tick_seconds",
        "namazu_alarms_open",
        "namazu_mails_queued",
        "namazu_farm_animals",
        "namazu_gateway_up",
        "namazu_alarm_log_verified",
    }
    missing = required - set(families)
    assert not missing, f"metrics not exposed: {sorted(missing)}"


@pytest.mark.parametrize("group", sorted(metrics.FAMILIES))
def test_each_process_exports_only_its_own_families(group):
    registry = CollectorRegistry()
    metrics.export_families(group, registry=registry)
    metrics.export_families(group, registry=registry)  # idempotent
    # The text format lists a counter's creation time as a family of its own.
    exported = {
        name.removesuffix("_created") for name in _families(metrics.metrics_text(registry).decode())
    }
    own = {family._name for family in metrics.FAMILIES[group]}
    assert exported == own, f"{group}: {sorted(exported ^ own)}"


def test_an_unknown_group_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown metric group 'panel'; valid groups: bridge"):
        metrics.export_families("panel", registry=CollectorRegistry())


def test_metrics_server_serves_updated_values_on_a_free_port():
    server = metrics.start_metrics_server(0, families=("ingest", "bridge"))
    try:
        before = metrics.INGEST_MESSAGES_REJECTED.labels(reason="not_json")._value.get()
        metrics.INGEST_MESSAGES_REJECTED.labels(reason="not_json").inc(3)
        metrics.SPOOL_DEPTH.set(42)
        response = requests.get(server.url, timeout=5)
        assert response.status_code == 200
        families = _families(response.text)
        rejected = {
            s.labels["reason"]: s.value
            for s in families["namazu_ingest_messages_rejected"].samples
            if s.name.endswith("_total")
        }
        assert rejected["not_json"] == before + 3
        assert families["namazu_spool_depth"].samples[0].value == 42
    finally:
        server.close()


def test_metrics_server_reports_a_port_in_use():
    first = metrics.start_metrics_server(0)
    try:
        try:
            metrics.start_metrics_server(first.port)
        except metrics.MetricsServerError as exc:
            assert str(first.port) in str(exc)
        else:
            raise AssertionError("second server on the same port did not fail")
    finally:
        first.close()


def test_metrics_response_is_a_flask_tuple_with_prometheus_content_type():
    body, status, headers = metrics.metrics_response()
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert b"namazu_build_info" in body


def test_every_metric_belongs_to_a_process_group():
    """A new metric must be created with ``registry=None`` and listed in FAMILIES, or
    every process would export it."""
    from prometheus_client.metrics import MetricWrapperBase

    grouped = {id(family) for families in metrics.FAMILIES.values() for family in families}
    objects = {
        name: value
        for name, value in vars(metrics).items()
        if isinstance(value, MetricWrapperBase) and value is not metrics.BUILD_INFO
    }
    assert objects
    assert [name for name, value in objects.items() if id(value) not in grouped] == []
