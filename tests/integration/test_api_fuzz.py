"""Fuzz every operation of the API from its own OpenAPI schema (schemathesis): whatever
the generated request, the answer is never a server error and matches the documented
status codes. Runs against the real Redis and broker, with a model loaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from stream_harness import create_topics, new_name, shared_model_dir

from devstack import DevStack
from recsys_core.dataset import Dataset
from serving.app import create_app
from serving.settings import ServingSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(devstack: DevStack, ml100k: Dataset,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    model_dir: Path = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    name = new_name("fuzz")
    s = ServingSettings(kafka_bootstrap=devstack.kafka_bootstrap, redis_url=devstack.redis_url,
                        model_dir=model_dir, key_prefix=name, topic_prefix=f"{name}.")
    create_topics(s)
    application = create_app(s)
    application.state.service.holder.refresh()  # schemathesis calls skip the lifespan
    yield application
    application.state.service.sender.close()


def test_no_server_errors_and_only_documented_statuses(app: Any) -> None:
    # the server-sent-events stream never ends by design: not a request/response operation
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex="updates$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance])

        fuzz()
