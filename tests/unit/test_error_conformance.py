"""Every error body the gateway can build, for every status it knows, and every engine error
it re-shapes, validates against OpenAI's published ErrorResponse (the pinned schemas). The
end-to-end conformance test sends a request for each status it can provoke."""

from __future__ import annotations

import pytest

from serving.gateway import errors
from tests.conformance.openai_spec import violations


@pytest.mark.parametrize("status", sorted(errors._TYPES))
@pytest.mark.parametrize(("param", "code"), [(None, None), ("model", "model_not_found")])
def test_each_status_builds_a_conforming_error(status, param, code):
    assert violations("ErrorResponse", errors.error_body(status, "why", param=param,
                                                         code=code)) == []


@pytest.mark.parametrize("engine_error", [
    {"error": {"message": "bad", "type": "BadRequestError", "param": "n", "code": 400}},
    {"error": {"message": "boom", "type": "InternalServerError", "code": 500}},
    {"error": {"code": 9999, "param": 3}}, {"error": "a string"}, {}, [],
])
def test_engine_errors_are_reshaped_into_conforming_ones(engine_error):
    status, body = errors.from_engine_error(engine_error)
    assert 400 <= status <= 599 and violations("ErrorResponse", body) == []


def test_a_mid_stream_error_event_conforms():
    import json

    event = errors.sse_error_event(503, "the engine failed mid-stream")
    assert violations("ErrorResponse", json.loads(event[len("data: "):])) == []
