"""Property-based fuzzing of the live service from its own OpenAPI schema (schemathesis):
whatever the body, path or query, no 5xx, every status code documented, every response body
matching its schema."""

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra installs schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from live_service import Service  # noqa: E402

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


EXPECTED = ["GET /health", "POST /jobs", "GET /jobs", "GET /jobs/{job_id}", "DELETE /jobs/{job_id}",
            "GET /jobs/{job_id}/result", "GET /jobs/{job_id}/result/{index}", "POST /uploads",
            "GET /uploads/{upload_id}", "PATCH /uploads/{upload_id}", "DELETE /uploads/{upload_id}", "POST /plan"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("fuzz")).start()
    yield svc
    svc.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_error_and_responses_match_the_schema(live, mode):
    from hypothesis import given

    api = schemathesis.openapi.from_url(live.url + "/openapi.json")
    # the event stream follows a job until it ends; its 404 and 401 paths are the other job routes'
    operations = [r.ok() for r in api.get_all_operations() if not r.ok().path.endswith("/events")]
    # a new route must be added here on purpose, so that it is known to be fuzzed
    assert sorted(f"{o.method.upper()} {o.path}" for o in operations) == sorted(EXPECTED)
    headers = {"Authorization": f"Bearer {live.token}"}
    for operation in operations:
        if mode == "negative" and operation.path == "/health":
            continue  # nothing to get wrong: no parameter, no body
        @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        fuzz()
