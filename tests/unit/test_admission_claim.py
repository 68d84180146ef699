"""What a request claims from its quotas before the engine counts: bounded by what the engine
would run, whatever the body asks (fuzzing sent max_tokens 2**64, which overflowed the
Redis counters into a 503)."""

from __future__ import annotations

import pytest

from serving.gateway.access import MAX_CHOICES, MAX_CLAIM_TOKENS, requested_max_tokens


@pytest.mark.parametrize("body,context,prompt,claim", [
    ({}, 512, 12, 500),                                  # what the context leaves
    ({"max_tokens": 7}, 512, 12, 7),
    ({"max_completion_tokens": 5, "max_tokens": 9}, 512, 12, 5),
    ({"max_tokens": 10**12}, 512, 12, 512),              # never beyond the context
    ({"max_tokens": 2**64}, 0, 12, MAX_CLAIM_TOKENS),    # context unknown: a hard ceiling
    ({"max_tokens": 4, "n": 3}, 512, 12, 12),            # every choice generates
    ({"max_tokens": 4, "n": 10**9}, 512, 12, 4 * MAX_CHOICES),
    ({"max_tokens": True, "n": "3"}, 512, 12, 500),      # mistyped: the engine refuses them
    ({"max_tokens": -1, "n": 0}, 512, 12, 500),
])
def test_claim(body, context, prompt, claim):
    assert requested_max_tokens(body, context, prompt) == claim
