"""A batch's output and error files: one JSON object per line, whichever way a client splits
the text, whatever the model wrote."""

from __future__ import annotations

import json

from serving.batch.batch_store import EndedLine
from serving.batch.lifecycle import BatchStatus
from serving.batch.output import output_files

BATCH = "batch_" + "0" * 32
# Every character str.splitlines() breaks at, and non-ASCII text that stays as it is.
TRICKY = "a\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2028j\u2029k été 東京"


def test_each_line_is_one_json_object_however_the_text_is_split() -> None:
    ended = [EndedLine(1, "c1", 200, {"text": TRICKY}, "r1"),
             EndedLine(2, "c2", 400, {"error": {"message": TRICKY}}, "r2")]
    output, errors = output_files(BATCH, ended, [(3, "c3")], BatchStatus.CANCELLED)
    for data, count in ((output, 1), (errors, 2)):
        text = data.decode()
        assert len(text.splitlines()) == len(data.splitlines()) == count
        items = [json.loads(x) for x in text.splitlines()]
        assert all(isinstance(x, dict) for x in items)
    [answered] = [json.loads(x) for x in output.decode().splitlines()]
    assert answered["response"]["body"]["text"] == TRICKY  # the text itself unchanged
    assert "été 東京".encode() in output  # non-ASCII kept as UTF-8, not escaped
    codes = [json.loads(x)["error"] for x in errors.decode().splitlines()]
    assert codes[1]["code"] == "batch_cancelled"
