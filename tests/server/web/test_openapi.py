"""The served OpenAPI document describes the API: schemathesis generates requests from it
(valid and invalid) and checks every response (status codes, content types, response
schemas, no server errors) against the real app on a real InfluxDB.

20 generated requests per operation; ``make fuzz`` scales that up (``tests/budget.py``)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.budget import examples
from tests.server.web.conftest import build_panel


@pytest.fixture(scope="module")
def api_panel(stack, tmp_path_factory):
    built = build_panel(stack, tmp_path_factory.mktemp("openapi"))
    yield built
    built.app.extensions["namazu"].influx.drop_database()


@pytest.fixture(scope="module")
def api_schema(api_panel):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_panel.app)


def test_document_is_served_and_names_every_route(api_panel):
    client = api_panel.app.test_client()
    doc = client.get("/api/v1/openapi.json").json
    documented = set(doc["paths"])
    routed = {
        str(rule.rule).replace("<int:", "{").replace(">", "}")
        for rule in api_panel.app.url_map.iter_rules()
        if str(rule.rule).startswith("/api/v1/")
    }
    assert routed == documented


def test_api_conforms_to_its_document(api_schema, api_panel):
    headers = {"Authorization": f"Bearer {api_panel.tokens['admin']}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples(20),
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case):
            # Cross-field constraints (end after start, at most 400 days, a real calendar
            # date, an existing alarm for the review) cannot be written in OpenAPI; such
            # requests get a 400 naming the parameter. All other checks run, including
            # the rejection of schema-invalid requests and the response schemas.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
