"""A batch's input file checked before any token is spent: every problem is a line error
(OpenAI's BatchError), and a file with any yields no lines."""

from __future__ import annotations

import json

import pytest

from serving.batch.batch_input import MAX_ERRORS_LISTED, check_input


def line(custom_id="r1", url="/v1/chat/completions", model="demo", **extra) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def no_problem(body):
    return None


def check(text: str, models=("demo",), body_problem=no_problem):
    return check_input(text, "/v1/chat/completions", set(models), body_problem)


def test_good_lines_are_numbered_from_one_and_keep_their_bodies() -> None:
    checked = check("\n".join([line("a"), line("b", max_tokens=3)]) + "\n\n")
    assert checked.errors == () and [(x.line, x.custom_id) for x in checked.lines] == [
        (1, "a"), (2, "b")]
    assert checked.lines[1].body["max_tokens"] == 3


@pytest.mark.parametrize(("row", "code", "param"), [
    ("{not json", "invalid_json_line", None),
    ("[1, 2]", "invalid_request", None),
    (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "demo"}, "extra": 1}), "invalid_request", "extra"),
    (line(custom_id=""), "invalid_custom_id", "custom_id"),
    (line(custom_id="x" * 513), "invalid_custom_id", "custom_id"),
    (line().replace('"POST"', '"GET"'), "invalid_method", "method"),
    (line(url="/v1/completions"), "mismatched_url", "url"),
    (line(model="globex-private"), "model_not_found", "body.model"),
    (line(model="m" * 10_000), "model_not_found", "body.model"),
    (line(stream=True), "invalid_request", "body.stream"),
    (json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
                 "body": "text"}), "invalid_request", "body"),
])
def test_each_bad_line_is_named_with_its_number(row: str, code: str, param: str | None) -> None:
    checked = check("\n".join([line("ok"), row]))
    assert checked.lines == ()
    [error] = checked.errors
    assert (error.code, error.line, error.param) == (code, 2, param)
    assert set(error.as_json()) == {"code", "message", "param", "line"}


def test_a_duplicate_custom_id_fails_the_batch() -> None:
    checked = check("\n".join([line("a"), line("b"), line("a")]))
    assert [(e.code, e.line) for e in checked.errors] == [("duplicate_custom_id", 3)]


def test_the_gateways_own_body_check_applies_to_each_line() -> None:
    def too_nested(body):
        return ("request body is nested too deeply", "messages") if "deep" in body else None

    checked = check("\n".join([line("a"), line("b", deep=1)]), body_problem=too_nested)
    [error] = checked.errors
    assert (error.line, error.param) == (2, "body.messages")


def test_an_empty_file_and_a_flood_of_errors() -> None:
    assert [e.code for e in check("\n \n").errors] == ["empty_file"]
    flood = check("\n".join("{" for _ in range(MAX_ERRORS_LISTED * 3)))
    assert len(flood.errors) == MAX_ERRORS_LISTED and flood.errors_found == MAX_ERRORS_LISTED * 3


def test_nesting_that_breaks_the_parser_is_a_line_error() -> None:
    checked = check("[" * 100_000)
    assert [e.code for e in checked.errors] == ["invalid_json_line"]
