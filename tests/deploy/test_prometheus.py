"""deploy/prometheus and the operations dashboard: the alert rules pass ``promtool test
rules`` (each alert fires on the data it is for and stays quiet otherwise), the scrape
configuration passes ``promtool check config``, every expression of the operations
dashboard parses, and every ``namazu_*`` metric they name is one the services export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from namazu.server.core.metrics import FAMILIES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
OPERATIONS = json.loads((DEPLOY / "grafana" / "dashboards" / "namazu-operations.json").read_text())
PROMTOOL = shutil.which("promtool")
# Skipped without promtool on a developer's machine; in CI (NAMAZU_REQUIRE_DATA=1, where
# make setup installs it) a missing promtool fails.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("NAMAZU_REQUIRE_DATA") != "1",
    reason="promtool missing: Debian package prometheus (make setup)",
)
REQUIRED_ALERTS = {
    "NamazuIngestDown",
    "NamazuStoreRefusingWrites",
    "NamazuGatewaySpoolFilling",
    "NamazuGatewayOffline",
    "NamazuFarmSilent",
    "NamazuAlarmLogVerificationFailing",
}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None, "promtool is missing (Debian package prometheus)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _rules() -> dict[str, dict]:
    groups = yaml.safe_load((PROMETHEUS / "namazu-alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def _dashboard_expressions() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in OPERATIONS["panels"]
        for target in panel["targets"]
    ]


def _exported_names() -> set[str]:
    names = set()
    for families in FAMILIES.values():
        for family in families:
            base = family._name  # noqa: SLF001 - the family name prometheus_client keeps
            kind = family._type  # noqa: SLF001
            names |= {base} | ({f"{base}_total"} if kind == "counter" else set())
            if kind == "histogram":
                names |= {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def test_the_required_alerts_are_there_with_severity_and_text():
    rules = _rules()
    assert set(rules) >= REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@needs_promtool
def test_promtool_checks_and_tests_the_rules():
    checked = _promtool("check", "rules", "namazu-alerts.yml", cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "namazu-alerts.test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    fired = {t["alertname"] for test in yaml.safe_load(
        (PROMETHEUS / "namazu-alerts.test.yml").read_text())["tests"]
        for t in test["alert_rule_test"] if t.get("exp_alerts")}  # fmt: skip
    assert set(_rules()) <= fired, f"alerts without a firing test: {set(_rules()) - fired}"


@needs_promtool
def test_promtool_checks_the_scrape_configuration(tmp_path):
    config = (PROMETHEUS / "prometheus.yml").read_text()
    token = tmp_path / "viewer.token"
    token.write_text("a-viewer-token\n")
    config = config.replace("/etc/prometheus/namazu-viewer.token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(PROMETHEUS / "namazu-alerts.yml", tmp_path)
    checked = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(config)["scrape_configs"]}
    rules_text = (PROMETHEUS / "namazu-alerts.yml").read_text()
    assert set(re.findall(r'job="(namazu-[a-z]+)"', rules_text)) <= jobs


@needs_promtool
def test_every_operations_panel_expression_parses(tmp_path):
    rules = [
        {"record": f"namazu:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(_dashboard_expressions())
    ]
    (tmp_path / "panels.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "p", "rules": rules}]})
    )
    checked = _promtool("check", "rules", "panels.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_and_panels_name_only_exported_metrics():
    exported = _exported_names()
    texts = [rule["expr"] for rule in _rules().values()]
    texts += [expr for _, expr in _dashboard_expressions()]
    named = {name for text in texts for name in re.findall(r"\bnamazu_[a-z_]+", text)}
    assert named, "no namazu_* metric found"
    assert named <= exported, f"not exported by any process: {sorted(named - exported)}"


def test_operations_dashboard_takes_prometheus_from_a_variable():
    (variable,) = OPERATIONS["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "namazu.yaml").read_text()
    )["datasources"]
    assert variable["current"]["value"] in {s["uid"] for s in sources if s["type"] == "prometheus"}
    for panel in OPERATIONS["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${prometheus}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
