"""A batch's status, OpenAI's machine, as a pure function of what is known about it:

    validating -> in_progress -> finalizing -> completed
        \\-> failed     |  \\-> cancelling -> cancelled (after finalizing what finished)
                        \\-> expired (its window passed; what finished is kept)

`finalizing`, `cancelling` and an expiring batch write the output and error files of the
lines that ended; a line in flight is waited for, never dropped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL



TERMINAL = frozenset({BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED,
                      BatchStatus.CANCELLED})
CANCELLABLE = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS,
                         BatchStatus.FINALIZING})


@dataclass(frozen=True)
class Progress:
    """What the store knows of a batch's lines at one moment."""

    queued: int  # not yet sent (or sent by a worker that died: its lease ran out)
    running: int  # sent, answer not yet recorded
    ended: int  # answered or failed, recorded


@dataclass(frozen=True)
class Step:
    """Where the batch goes next; `write_files` when the output and error files are to be
    written before `then` is entered (with the files known)."""

    status: BatchStatus
    write_files: bool = False


def next_step(status: BatchStatus, progress: Progress, now: datetime, expires_at: datetime,
              ) -> Step | None:
    """The batch's next status, or None when it stays as it is. E.g. in_progress with no line
    queued or running -> finalizing; cancelling once nothing runs -> cancelled, its files
    written; in_progress past its window once nothing runs -> expired, its files written."""
    idle = progress.running == 0
    if status is BatchStatus.IN_PROGRESS:
        if now >= expires_at:
            return Step(BatchStatus.EXPIRED, write_files=True) if idle else None
        if idle and progress.queued == 0:
            return Step(BatchStatus.FINALIZING)
        return None
    if status is BatchStatus.FINALIZING:
        return Step(BatchStatus.COMPLETED, write_files=True)
    if status is BatchStatus.CANCELLING and idle:
        return Step(BatchStatus.CANCELLED, write_files=True)
    return None


def may_send(status: BatchStatus, now: datetime, expires_at: datetime) -> bool:
    """Whether a queued line may be sent to an engine now."""
    return status is BatchStatus.IN_PROGRESS and now < expires_at


def cannot_cancel(status: BatchStatus) -> str:
    """Why a cancel request is refused: the batch has finished."""
    return f"a batch that is {status.value} cannot be cancelled"


def after_cancel(status: BatchStatus) -> BatchStatus | None:
    """What a cancel request makes of a batch; None when it can no longer be cancelled (a
    finished one), which the API answers with a 400 as OpenAI does."""
    if status is BatchStatus.VALIDATING:
        return BatchStatus.CANCELLED  # nothing ran: nothing to wait for or write
    if status in CANCELLABLE:
        return BatchStatus.CANCELLING
    if status is BatchStatus.CANCELLING:
        return BatchStatus.CANCELLING  # asked twice: the same answer
    return None
