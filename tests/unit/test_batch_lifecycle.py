"""OpenAI's batch status machine as a pure function of the lines' progress and the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from serving.batch.lifecycle import BatchStatus as S
from serving.batch.lifecycle import Progress, Step, after_cancel, may_send, next_step

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
LATER = NOW + timedelta(hours=24)


@pytest.mark.parametrize(("status", "progress", "now", "step"), [
    (S.IN_PROGRESS, Progress(queued=3, running=2, ended=5), NOW, None),
    (S.IN_PROGRESS, Progress(queued=0, running=1, ended=9), NOW, None),  # waits for the last
    (S.IN_PROGRESS, Progress(queued=0, running=0, ended=10), NOW, Step(S.FINALIZING)),
    (S.FINALIZING, Progress(0, 0, 10), NOW, Step(S.COMPLETED, write_files=True)),
    # past its window: no new line is sent, the running ones end, then it expires
    (S.IN_PROGRESS, Progress(queued=4, running=1, ended=5), LATER, None),
    (S.IN_PROGRESS, Progress(queued=4, running=0, ended=6), LATER,
     Step(S.EXPIRED, write_files=True)),
    (S.CANCELLING, Progress(queued=4, running=2, ended=4), NOW, None),
    (S.CANCELLING, Progress(queued=4, running=0, ended=6), NOW,
     Step(S.CANCELLED, write_files=True)),
    (S.COMPLETED, Progress(0, 0, 10), LATER, None),
    (S.FAILED, Progress(0, 0, 0), LATER, None),
])
def test_next_step(status, progress, now, step) -> None:
    assert next_step(status, progress, now, LATER) == step


def test_only_a_batch_in_progress_inside_its_window_sends_lines() -> None:
    assert may_send(S.IN_PROGRESS, NOW, LATER)
    assert not may_send(S.IN_PROGRESS, LATER, LATER)
    assert not any(may_send(s, NOW, LATER) for s in S if s is not S.IN_PROGRESS)


@pytest.mark.parametrize(("status", "after"), [
    (S.VALIDATING, S.CANCELLED), (S.IN_PROGRESS, S.CANCELLING), (S.FINALIZING, S.CANCELLING),
    (S.CANCELLING, S.CANCELLING), (S.COMPLETED, None), (S.FAILED, None), (S.EXPIRED, None),
    (S.CANCELLED, None),
])
def test_cancel(status, after) -> None:
    assert after_cancel(status) == after
    assert status.is_terminal == (status in (S.COMPLETED, S.FAILED, S.EXPIRED, S.CANCELLED))
