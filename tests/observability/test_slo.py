"""SLO targets, the one model serving, autoscaling and the config share: defaults, the
settings-to-targets mapping, and the bounds every way of setting them obeys."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from observability.slo import DEFAULT_SLO, SloSettings, SloTargets


def test_the_default_is_two_seconds_to_first_token_and_200_ms_between_tokens() -> None:
    assert DEFAULT_SLO == SloTargets(ttft_p95_s=2.0, itl_p95_s=0.2, objective=0.99)
    assert SloTargets(ttft_p95_s=2.0, itl_p95_s=0.2).objective == 0.99


@pytest.mark.parametrize(("settings", "targets"), [
    (SloSettings(), DEFAULT_SLO),
    # 800 ms -> 0.8 s; the ITL left None is the default's 0.2 s
    (SloSettings(ttft_p95_ms=800, objective=0.995),
     SloTargets(ttft_p95_s=0.8, itl_p95_s=0.2, objective=0.995)),
    (SloSettings(itl_p95_ms=40), SloTargets(ttft_p95_s=2.0, itl_p95_s=0.04)),
])
def test_settings_left_none_take_the_default(settings: SloSettings,
                                             targets: SloTargets) -> None:
    assert settings.targets == targets
    # and back: every target set, in milliseconds
    assert SloSettings.of(settings.targets).targets == targets


def test_the_targets_in_force_in_milliseconds() -> None:
    assert SloSettings.of(DEFAULT_SLO) == SloSettings(ttft_p95_ms=2000, itl_p95_ms=200,
                                                      objective=0.99)


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"ttft_p95_ms": 0}, "ttft_p95_ms", "whole milliseconds in [1, 600000] or None, got 0"),
    ({"ttft_p95_ms": 600_001}, "ttft_p95_ms", "whole milliseconds in [1, 600000]"),
    ({"itl_p95_ms": 60_001}, "itl_p95_ms", "whole milliseconds in [1, 60000]"),
    ({"ttft_p95_ms": 1.5}, "ttft_p95_ms", "whole milliseconds"),
    ({"itl_p95_ms": True}, "itl_p95_ms", "got True"),  # a bool is not 1 ms
    ({"itl_p95_ms": "40"}, "itl_p95_ms", "got '40'"),
    ({"objective": 1.0}, "objective", "a ratio in [0.5, 0.99999]"),  # no error budget left
    ({"objective": 0.2}, "objective", "a ratio"),
    ({"objective": float("nan")}, "objective", "got nan"),
    ({"objective": "x" * 100}, "objective", "xxx..."),  # cut short, not 100 characters
    ({"ttft_ms": 5}, "ttft_ms", "Extra inputs"),
])
def test_settings_out_of_bounds_cannot_be_made(fields: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        SloSettings.model_validate(fields)
    (error,) = refused.value.errors()
    assert error["loc"] == (field,)
    assert words in error["msg"], error["msg"]


@pytest.mark.parametrize("fields", [
    {"ttft_p95_s": 0.0, "itl_p95_s": 0.1},
    {"ttft_p95_s": 1.0, "itl_p95_s": -0.1},
    {"ttft_p95_s": float("inf"), "itl_p95_s": 0.1},
    {"ttft_p95_s": 1.0, "itl_p95_s": 0.1, "objective": 1.0},
    {"ttft_p95_s": 1.0, "itl_p95_s": 0.1, "objective": 0.4},
    {"ttft_s": 1.0, "itl_p95_s": 0.1},
])
def test_targets_out_of_bounds_cannot_be_made(fields: dict) -> None:
    with pytest.raises(ValidationError):
        SloTargets.model_validate(fields)


def test_both_are_frozen_values() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_SLO.ttft_p95_s = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SloSettings().objective = 0.9  # type: ignore[misc]
    assert len({SloSettings(), SloSettings(ttft_p95_ms=None)}) == 1
