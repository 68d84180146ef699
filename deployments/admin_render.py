"""How the admin commands print: a table for people, the API's JSON with --json. Every
function here takes the API's JSON (the SDK's result as `as_json` gives it) and prints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

QUOTA_FIELDS = ("requests_per_minute", "tokens_per_minute", "concurrent_requests",
                "tokens_per_month")


def as_json(result: BaseModel) -> dict[str, Any]:
    """An SDK result as the API sent it: its fields and any extra ones, none made up."""
    return result.model_dump(mode="json", exclude_unset=True)


def show(json_wanted: bool, out: dict[str, Any], render: Callable[[Any], None]) -> None:
    if json_wanted:
        print(json.dumps(out, indent=2))
    else:
        render(out)


def print_table(columns: Iterable[tuple[str, Callable[[Any], object]]],
                rows: Iterable[Any]) -> None:
    columns = list(columns)
    cells = [[header for header, _ in columns]]
    cells += [[_cell(value(row)) for _, value in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        padded = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(padded).rstrip())


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def when(value: str | None) -> str | None:
    """"2025-03-14T09:26:53.372969Z" shown as "2025-03-14 09:26:53Z"."""
    if value is None:
        return None
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")


TENANT_COLUMNS = [("NAME", lambda t: t["name"]), ("PRIORITY", lambda t: t["priority"]),
                  ("STATUS", lambda t: t["status"]), ("CREATED", lambda t: when(t["created_at"]))]
KEY_COLUMNS = [("ID", lambda k: k["id"]), ("TENANT", lambda k: k["tenant"]),
               ("PREFIX", lambda k: k["prefix"]), ("SCOPE", lambda k: k["scope"]),
               ("STATUS", lambda k: k["status"]), ("CREATED", lambda k: when(k["created_at"])),
               ("EXPIRES", lambda k: when(k.get("expires_at"))),
               ("REVOKED", lambda k: when(k.get("revoked_at")))]
ENDPOINT_COLUMNS = [("NAME", lambda e: e["name"]),
                    ("OWNER", lambda e: e.get("owner") or "(shared)"),
                    ("GRANTS", lambda e: e["grants"] if e["shared"] else None),
                    ("MODEL", lambda e: (e.get("deployment") or {}).get("model", "(config)")),
                    ("CREATED", lambda e: when(e["created_at"]))]


def _moment(seconds: int | None) -> str | None:
    """Unix seconds (as OpenAI's objects give times) shown as "2025-03-14 09:26:53Z"."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _lines(batch: dict) -> str:
    """E.g. "7/10 ok, 1 failed": lines answered 200 and not, of all the batch's lines."""
    counts = batch["request_counts"]
    failed = f", {counts['failed']} failed" if counts["failed"] else ""
    return f"{counts['completed']}/{counts['total']} ok{failed}"


BATCH_COLUMNS = [("ID", lambda b: b["id"]), ("TENANT", lambda b: b.get("tenant")),
                 ("STATUS", lambda b: b["status"]), ("ENDPOINT", lambda b: b["endpoint"]),
                 ("LINES", _lines), ("CREATED", lambda b: _moment(b["created_at"])),
                 ("KEY", lambda b: b.get("key_prefix"))]


def tenant_table(tenants: list[dict]) -> None:
    print_table(TENANT_COLUMNS, tenants)


def key_table(keys: list[dict]) -> None:
    print_table(KEY_COLUMNS, keys)


def endpoint_table(endpoints: list[dict]) -> None:
    print_table(ENDPOINT_COLUMNS, endpoints)


def batch_table(batches: list[dict]) -> None:
    print_table(BATCH_COLUMNS, batches)


def quota_table(quota: dict) -> None:
    where = f" on endpoint {quota['endpoint']}" if quota.get("endpoint") else ""
    print(f"quota of tenant {quota['tenant']}{where}")
    print_table([("LIMIT", lambda r: r[0]), ("VALUE", lambda r: r[1])],
                [(field, "unlimited" if quota.get(field) is None else quota[field])
                 for field in QUOTA_FIELDS])


def usage_table(usage: dict) -> None:
    print(f"usage of tenant {usage['tenant']} by {usage['by']}, "
          f"{when(usage['since'])} to {when(usage['until'])}")

    def outcome(name: str) -> Callable[[dict], int]:
        return lambda b: b["outcomes"].get(name, 0)

    print_table([
        ("START", lambda b: when(b["start"]) if "start" in b else "total"),
        ("REQUESTS", lambda b: b["requests"]), ("OK", outcome("ok")),
        ("ERROR", outcome("error")), ("REJECTED", outcome("rejected")),
        ("CANCELLED", outcome("client_cancelled")), ("PROMPT", lambda b: b["prompt_tokens"]),
        ("COMPLETION", lambda b: b["completion_tokens"]), ("TOTAL", lambda b: b["total_tokens"]),
    ], [*usage["buckets"], {**usage, "outcomes": _outcome_totals(usage["buckets"])}])


def _outcome_totals(buckets: list[dict]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for bucket in buckets:
        for name, n in bucket["outcomes"].items():
            totals[name] = totals.get(name, 0) + n
    return totals


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds * 1000:.0f} ms"


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{share * 100:.2f}%"


def _status(met: bool | None) -> str:
    return "no data" if met is None else "met" if met else "MISSED"


def sla_table(report: dict) -> None:
    print(f"SLA of tenant {report['tenant']}, {when(report['since'])} to "
          f"{when(report['until'])}")
    print_table([("SLI", lambda r: r[0]), ("REQUESTS", lambda r: r[1]["samples"]),
                 ("P50", lambda r: _ms(r[1].get("p50_s"))),
                 ("P95", lambda r: _ms(r[1].get("p95_s"))),
                 ("P99", lambda r: _ms(r[1].get("p99_s"))),
                 ("P95 TARGET", lambda r: _ms(r[1].get("target_p95_s"))),
                 ("STATUS", lambda r: _status(r[1].get("met")))],
                [("ttft", report["ttft"]), ("itl", report["itl"])])
    print()
    outcomes = report["outcomes"]
    print_table([("FIGURE", lambda r: r[0]), ("VALUE", lambda r: r[1])], [
        ("requests", report["requests"]),
        ("availability", _percent(report.get("availability"))),
        ("compliant", (f"{_percent(report.get('compliance')) or '-'} of {report['judged']} "
                       f"(objective {_percent(report['objective'])}: "
                       f"{_status(report.get('objective_met'))})")),
        ("errors", outcomes["error"]), ("rejected", report["rejections"]),
        ("cancelled", outcomes["client_cancelled"]),
        ("prompt tokens", report["prompt_tokens"]),
        ("completion tokens", report["completion_tokens"]),
        ("total tokens", report["total_tokens"]),
    ])
