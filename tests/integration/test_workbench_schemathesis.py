"""Property-based run of the workbench API against its own OpenAPI document (schemathesis).

Every operation gets generated requests (valid and edge-case parameters and
bodies) with a supervisor's token, on SQLite and PostgreSQL (whose refusals —
NUL characters, integer ranges — differ); no answer may be a 5xx, and every
answer must match the documented schema and status codes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from scoring.workbench.app import create_app
from scoring.workbench.settings import WorkbenchSettings
from tests.workbench_support import add_users, bearer, new_alert, seed

pytestmark = pytest.mark.integration

EXAMPLES = 20


def test_the_api_never_answers_5xx_and_matches_its_openapi(alerts_db_url: str) -> None:
    seed(alerts_db_url, [new_alert(i) for i in range(30)])
    accounts = add_users(alerts_db_url, {"sam": "supervisor", "alice": "analyst"})
    app = create_app(WorkbenchSettings(db_url=alerts_db_url, four_eyes=True,
                                       secure_cookies=False))
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
        headers = bearer(accounts["sam"])
        checks = [not_a_server_error, response_schema_conformance, status_code_conformance,
                  content_type_conformance]
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 11
        calls = 0
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(headers=headers, checks=checks)

            run()
        assert calls >= len(operations) * 5
