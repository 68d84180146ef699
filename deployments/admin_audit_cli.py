"""`aifactory audit`: the audit log of admin actions through the admin API, as a table for
people or exported to stdout as JSON lines or CSV (every page of it, oldest first)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from typing import Any

from aifactory_sdk import Client

from deployments.admin_args import positive_int, window
from deployments.admin_render import as_json, print_table, show, when

PAGE_SIZE = 1000  # the API's largest page
TABLE_LIMIT = 100  # what a table shows unless --limit says otherwise; exports take everything
CSV_COLUMNS = ("id", "at", "actor_tenant", "actor_key_prefix", "actor_scope", "source_address",
               "action", "target", "tenant", "before", "after")


def fetch(client: Client, filters: dict[str, Any],
          limit: int | None) -> tuple[list[dict], bool]:
    """Entries oldest first, page after page, at most `limit` (None: all); and whether more
    match than were fetched."""
    entries: list[dict] = []
    after_id = 0
    while True:
        want = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(entries))
        page = as_json(client.admin.audit(**filters, after_id=after_id, limit=want))
        entries += page["data"]
        if not page["has_more"] or (limit is not None and len(entries) >= limit):
            return entries, page["has_more"]
        after_id = page["last_id"]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _change(entry: dict) -> str:
    """E.g. '{"status":"active"} -> {"status":"suspended"}'; "-" for no state."""
    before, after = entry["before"], entry["after"]
    return f"{'-' if before is None else _json(before)} -> {'-' if after is None else _json(after)}"


AUDIT_COLUMNS: list[tuple[str, Callable[[dict], object]]] = [
    ("ID", lambda e: e["id"]), ("AT", lambda e: when(e["at"])),
    ("ACTOR", lambda e: f"{e['actor_tenant']}/{e['actor_key_prefix'] or '?'} "
                        f"({e['actor_scope']})"),
    ("FROM", lambda e: e["source_address"]), ("ACTION", lambda e: e["action"]),
    ("TARGET", lambda e: e["target"]), ("CHANGE", _change)]


def write_csv(entries: list[dict]) -> None:
    """before and after as compact JSON text; an empty cell is no value (null)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow(["" if entry[c] is None else _json(entry[c]) if c in ("before", "after")
                         else entry[c] for c in CSV_COLUMNS])


def audit(client: Client, args: argparse.Namespace) -> None:
    since, until = window(args)
    filters = {"since": since, "until": until, "tenant": args.tenant}
    limit = args.limit if args.limit is not None or args.format != "table" else TABLE_LIMIT
    entries, more = fetch(client, filters, limit)
    if args.format == "jsonl":
        for entry in entries:
            print(_json(entry))
    elif args.format == "csv":
        write_csv(entries)
    else:
        show(args.json, {"object": "list", "data": entries, "has_more": more},
             lambda out: print_table(AUDIT_COLUMNS, out["data"]))
        if more and not args.json:
            print(f"(the first {len(entries)}; more match: raise --limit or narrow --since)",
                  file=sys.stderr)


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="WHEN", help="e.g. 24h, 7d or an ISO 8601 time "
                                                        "(default: the beginning)")
    parser.add_argument("--until", metavar="WHEN", help="default: now")
    parser.add_argument("--tenant", help="only the entries about this tenant")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help=f"at most N entries (default: {TABLE_LIMIT} in a table, all when "
                             "exporting)")
    parser.add_argument("--format", choices=["table", "jsonl", "csv"], default="table",
                        help="jsonl or csv export every matching entry to stdout")
