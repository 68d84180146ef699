"""The admin commands' own arguments: times ("24h", "7d", ISO 8601), quota limits ("none"
clears) and SLO targets ("default" restores), and the mistake a command line can make."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(Exception):
    """A mistake in the command line itself; exit status 2."""


# Times: "24h", "7d" or ISO 8601 (UTC when no zone is given)


def parse_moment(text: str, now: datetime, *, relative_to_past: bool = True) -> datetime:
    """E.g. "24h" at now=2025-03-14T09:00Z is 2025-03-13T09:00Z (or 2025-03-15T09:00Z when
    relative times point to the future, as key expiries do)."""
    relative = _RELATIVE.fullmatch(text.strip())
    try:
        if relative:
            delta = timedelta(**{_UNITS[relative[2]]: int(relative[1])})
            return now - delta if relative_to_past else now + delta
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError):
        raise CliError(f"{text!r} is not a time: give e.g. 24h, 7d, 2025-03-14 or "
                       "2025-03-14T09:00:00Z") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """--since and --until as times (None where not given)."""
    now = datetime.now(UTC)
    return (None if args.since is None else parse_moment(args.since, now),
            None if args.until is None else parse_moment(args.until, now))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (a --limit, a --concurrency)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def quota_limit(text: str) -> int | None:
    """A quota limit: a whole number, or "none" to clear it (unlimited)."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor 'none'") from None


def slo_value(kind: type[int | float]) -> Callable[[str], int | float | None]:
    """An SLO target: a number, or "default" to restore the platform's."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> int | float | None:
        if text.strip().lower() == "default":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a {noun} nor 'default'") from None

    return parse
