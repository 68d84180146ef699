"""The Files API's pure rules: the decision to refuse an upload, the JSONL check a batch file
gets while it streams in, a list request's pagination, ids, filenames and purposes."""

from __future__ import annotations

import json

import pytest

from serving.batch.files.jsonl import JsonlCheck
from serving.batch.files.rules import (
    MULTIPART_SLACK_BYTES,
    BadParam,
    FileLimitOverrides,
    FileLimits,
    FileUsage,
    ListQuery,
    declared_too_large,
    display_filename,
    expiry_problem,
    is_file_id,
    list_query,
    new_file_id,
    purpose_problem,
    refuse_upload,
)

MiB = 1024 * 1024
LIMITS = FileLimits(max_file_bytes=10 * MiB, max_files=3, max_total_bytes=25 * MiB)


@pytest.mark.parametrize(("files", "used", "size", "expected"), [
    (0, 0, 10 * MiB, None),  # exactly the per-file limit
    (0, 0, 10 * MiB + 1, (413, "file_too_large", "10485760 bytes per file")),
    (2, 15 * MiB, 10 * MiB, None),  # 15 + 10 = 25: exactly the total
    (2, 20 * MiB, 6 * MiB, (429, "insufficient_quota", "26214400 bytes")),  # 20 + 6 > 25
    (3, 1 * MiB, 0, (429, "insufficient_quota", "its limit is 3")),  # 3 + 1 > 3, unread
    (3, 1 * MiB, 11 * MiB, (413, "file_too_large", "per file")),  # too large says so first
    (0, 25 * MiB, 1, (429, "insufficient_quota", "26214400 bytes")),  # the total is full
])
def test_an_upload_is_refused_past_a_limit(files, used, size, expected):
    refused = refuse_upload(LIMITS, FileUsage(files, used), size)
    if expected is None:
        assert refused is None
        return
    status, code, said = expected
    assert (refused.status, refused.code, refused.param) == (status, code, "file")
    assert said in refused.message


def test_a_tenants_own_limits_override_the_platforms_one_by_one():
    own = FileLimitOverrides(max_files=7)
    assert own.over(LIMITS) == FileLimits(max_file_bytes=10 * MiB, max_files=7,
                                          max_total_bytes=25 * MiB)
    assert FileLimitOverrides().over(LIMITS) == LIMITS
    with pytest.raises(ValueError):
        FileLimitOverrides(max_files=0)


@pytest.mark.parametrize(("declared", "too_large"), [
    (None, False), ("", False), ("abc", False), ("²", False), ("-5", False),
    (str(10 * MiB + MULTIPART_SLACK_BYTES), False),  # room for the form's own bytes
    (str(10 * MiB + MULTIPART_SLACK_BYTES + 1), True),
    ("9" * 20, True), ("9" * 21, False),  # past 20 digits is not a length at all
])
def test_a_declared_length_alone_can_rule_an_upload_out(declared, too_large):
    assert declared_too_large(LIMITS, declared) is too_large


# -- the JSONL check: whole, and fed a byte at a time ----------------------------------------


def check(data: bytes, piece: int | None = None, max_line: int | None = None) -> str | None:
    lines = JsonlCheck() if max_line is None else JsonlCheck(max_line)
    step = piece or max(len(data), 1)
    for i in range(0, len(data), step):
        lines.feed(data[i:i + step])
    return lines.problem()


@pytest.mark.parametrize(("data", "problem"), [
    (b'{"a": 1}\n{"b": 2}\n', None),
    (b'{"a": 1}\r\n{"b": 2}', None),  # CRLF, no last newline
    (b'{"a": 1}\n\n\n', None),  # blank lines may end it
    ('{"text": "żółć ✓"}\n'.encode(), None),
    (b"", "the file has no lines"),
    (b"\n \n", "the file has no lines"),
    (b'{"a": 1}\n\n{"b": 2}\n', "line 2 is blank"),
    (b'{"a": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
    (b'{"a": 1}\n{"b": \n', "line 2 is not valid JSON"),
    (b'{"a": "\xff"}\n', "line 1 is not UTF-8 text"),
    (b'{"a": "\xc3"}\n', "line 1 is not UTF-8 text"),  # a sequence cut short
    (b"\xef\xbb\xbf{}\n", "line 1 is not valid JSON"),  # a byte order mark
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "line 1 is not valid JSON"),
    (b"PK\x03\x04\x00\x00binary", "line 1 is not"),
])
@pytest.mark.parametrize("piece", [None, 1, 7])
def test_a_batch_file_is_utf8_jsonl_with_an_object_per_line(data, problem, piece):
    found = check(data, piece)
    assert (found is None) if problem is None else (found or "").startswith(problem), found


def test_a_line_longer_than_a_request_is_refused_without_keeping_it():
    assert check(b'{"a": "' + b"x" * 100 + b'"}\n', max_line=50).startswith(
        "line 1 is longer than 50 bytes")
    # Without a newline, found while the bytes still arrive.
    lines = JsonlCheck(50)
    lines.feed(b'{"a": 1}\n' + b"x" * 60)
    assert lines.problem().startswith("line 2 is longer than 50 bytes")
    assert len(lines._partial) <= 60


def test_the_check_counts_the_objects():
    lines = JsonlCheck()
    lines.feed(b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(5)))
    assert lines.problem() is None and lines.lines == 5


# -- listing ---------------------------------------------------------------------------------

FID = "file-" + "0" * 12 + "a" * 20


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ListQuery(None, 10_000, "desc", None)),
    ({"limit": ["1"], "order": ["asc"]}, ListQuery(None, 1, "asc", None)),
    ({"after": [FID], "purpose": ["batch_output"]}, ListQuery(FID, 10_000, "desc",
                                                              "batch_output")),
    ({"unknown": ["x"]}, ListQuery()),  # ignored, as OpenAI does
    ({"limit": ["0"]}, "limit"), ({"limit": ["10001"]}, "limit"), ({"limit": ["-1"]}, "limit"),
    ({"limit": ["1.5"]}, "limit"), ({"limit": ["²"]}, "limit"), ({"limit": ["9" * 99]}, "limit"),
    ({"limit": ["5", "6"]}, "limit"),
    ({"order": ["up"]}, "order"), ({"order": ["ASC"]}, "order"),
    ({"after": ["file-abc"]}, "after"), ({"after": [".."]}, "after"),
    ({"after": [FID + "0"]}, "after"), ({"after": ["x" * 100_000]}, "after"),
    ({"purpose": ["secrets"]}, "purpose"),
])
def test_list_parameters_are_openais_and_bounded(params, expected):
    got = list_query(params)
    if isinstance(expected, str):
        assert isinstance(got, BadParam) and got.param == expected and len(got.message) < 200
    else:
        assert got == expected


# -- ids, names, purposes, expiry ------------------------------------------------------------


def test_ids_sort_by_creation_and_name_nothing_else():
    early = new_file_id(1_000, "f" * 20)
    later = new_file_id(1_001, "0" * 20)
    assert early < later and is_file_id(early) and is_file_id(later)
    assert early == "file-0000000003e8" + "f" * 20
    for bad in ("file-../../etc/passwd", "../file", "file-" + "A" * 32, FID + "\n", FID[:-1],
                None, 42):
        assert not is_file_id(bad)
    with pytest.raises(ValueError):
        new_file_id(-1, "0" * 20)


@pytest.mark.parametrize(("raw", "shown"), [
    ("input.jsonl", "input.jsonl"),
    ("../../etc/passwd", "../../etc/passwd"),  # shown as given: never a path
    ("a\x00b\nc\x1b[31m\x7f", "a\ufffdb\ufffdc\ufffd[31m\ufffd"),
    ("ż" * 300, "ż" * 255),
])
def test_a_filename_is_shown_as_given_but_for_control_characters_and_length(raw, shown):
    assert display_filename(raw) == shown


def test_only_batch_files_are_taken():
    assert purpose_problem("batch") is None
    assert "not served by this platform" in purpose_problem("fine-tune")
    assert "must be 'batch'" in purpose_problem("x" * 10_000)
    assert len(purpose_problem("x" * 10_000)) < 200


@pytest.mark.parametrize(("anchor", "seconds", "param"), [
    (None, None, None), ("created_at", "3600", None), ("created_at", "2592000", None),
    ("created_at", "3599", "expires_after[seconds]"), ("created_at", None,
                                                       "expires_after[seconds]"),
    ("created_at", "1e9", "expires_after[seconds]"), ("updated_at", "3600",
                                                      "expires_after[anchor]"),
    (None, "3600", "expires_after[anchor]"),
])
def test_expiry_is_openais(anchor, seconds, param):
    problem = expiry_problem(anchor, seconds)
    assert (None if problem is None else problem[1]) == param
