"""A finished batch's output and error files, in OpenAI's batch output format: one JSON line
per request, `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}`, in the input's order. Answered lines with status 200 go to the output file, the
others to the error file, with the lines that never ran (a cancelled or expired batch's)
named there by their error code. Pure: the files' bytes from the lines."""

from __future__ import annotations

import json
from collections.abc import Iterable

from serving.batch.batch_store import EndedLine
from serving.batch.lifecycle import BatchStatus

NEVER_RAN = {BatchStatus.CANCELLED: ("batch_cancelled", "the batch was cancelled first"),
             BatchStatus.EXPIRED: ("batch_expired", "the batch's 24h window ended first")}


# Characters str.splitlines() breaks a line at that JSON leaves raw in a string (the control
# characters among them it escapes already): escaped, so that a client reading the file with
# `.text.splitlines()` gets one JSON object per line whatever the model wrote.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _line(batch_id: str, line: int, custom_id: str, response: dict | None,
          error: dict | None) -> bytes:
    item = {"id": f"batch_req_{batch_id.removeprefix('batch_')}_{line}",
            "custom_id": custom_id, "response": response, "error": error}
    text = json.dumps(item, separators=(",", ":"), ensure_ascii=False).translate(_LINE_BREAKS)
    return (text + "\n").encode()


def output_files(batch_id: str, ended: Iterable[EndedLine], never_ran: Iterable[tuple[int, str]],
                 status: BatchStatus) -> tuple[bytes, bytes]:
    """(output file, error file); either may be empty."""
    output, errors = bytearray(), bytearray()
    for x in ended:
        answer = {"status_code": x.status_code, "request_id": x.request_id, "body": x.answer}
        (output if x.status_code == 200 else errors).extend(
            _line(batch_id, x.line, x.custom_id, answer, None))
    code, message = NEVER_RAN.get(status, ("batch_failed", "the request did not run"))
    for line, custom_id in never_ran:
        errors.extend(_line(batch_id, line, custom_id, None,
                            {"code": code, "message": message}))
    return bytes(output), bytes(errors)
