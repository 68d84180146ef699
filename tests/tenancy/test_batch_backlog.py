"""The batch backlog per model the partition autoscaler lends replicas to, on the real store
(SQLite and PostgreSQL): lines still to be sent and lines in the engines, per model, over
unfinished batches only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving.batch import batch_store as batches
from serving.batch.batch_input import BatchLine
from serving.batch.batch_store import ModelBacklog
from serving.batch.lifecycle import BatchStatus

LEASE = timedelta(seconds=30)


@pytest.fixture
def tenants(store):
    store.create_tenant("acme")
    store.create_tenant("globex")


def make(store, model: str | None, n: int, tenant: str = "acme") -> batches.Batch:
    body = {"prompt": "p"} if model is None else {"model": model, "prompt": "p"}
    return batches.create(store, tenant=tenant, key_prefix="afk_abcdefgh",
                          endpoint="/v1/completions", input_file_id="file-x",
                          lines=[BatchLine(i, f"req-{i}", body) for i in range(1, n + 1)],
                          errors=[])


def test_no_batch_no_backlog(store, tenants):
    assert batches.backlog_by_model(store) == {}


def test_backlog_counts_queued_and_running_lines_per_model(store, tenants):
    chat, embed = make(store, "chat", 5), make(store, "embed", 3)
    make(store, "chat", 2, tenant="globex")
    [first, _] = batches.claim(store, "gw-1", chat, 2, LEASE)
    assert batches.record(store, "gw-1", chat.id, first.line, 200, {"id": "c"}, "r1")
    batches.claim(store, "gw-2", embed, 3, LEASE)
    # chat: 3 + 2 queued over both tenants' batches, line 2 running, line 1 ended (gone).
    assert batches.backlog_by_model(store) == {"chat": ModelBacklog(queued=5, running=1),
                                               "embed": ModelBacklog(queued=0, running=3)}


def test_lines_that_will_not_run_are_no_backlog_but_those_in_engines_are(store, tenants,
                                                                         clock):
    cancelled = make(store, "chat", 4)
    batches.claim(store, "gw-1", cancelled, 1, LEASE)
    assert batches.cancel(store, "acme", cancelled.id).status is BatchStatus.CANCELLING
    # A cancelling batch sends nothing more, but waits for the line it has in an engine.
    assert batches.backlog_by_model(store) == {"chat": ModelBacklog(queued=0, running=1)}

    make(store, None, 2)  # no model: answered 400 by the route step, no endpoint's work
    clock.advance(seconds=31)  # gw-1 died: its line's lease ran out, nothing is in an engine
    assert batches.backlog_by_model(store) == {}

    make(store, "chat", 2)
    clock.advance(hours=24)  # past its window: expired with what finished, nothing more runs
    assert batches.backlog_by_model(store) == {}


def test_a_line_taken_over_or_deferred_is_queued_again(store, tenants, clock):
    batch = make(store, "chat", 3)
    batches.claim(store, "gw-1", batch, 2, LEASE)
    assert batches.defer(store, "gw-1", batch.id, 1, clock() + timedelta(seconds=5))
    # line 1 waits out its tenant's rate limit (queued), line 2 runs, line 3 was never sent
    assert batches.backlog_by_model(store) == {"chat": ModelBacklog(queued=2, running=1)}
    clock.advance(seconds=31)  # gw-1's lease on line 2 ran out: it will be sent again
    assert batches.backlog_by_model(store) == {"chat": ModelBacklog(queued=3, running=0)}
