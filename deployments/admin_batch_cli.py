"""`aifactory batch`: every tenant's batch jobs through the admin API, listed newest first
(by tenant, by status) and cancelled, each one call of the SDK's admin resources."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from aifactory_sdk import Client

from deployments.admin_args import positive_int
from deployments.admin_render import as_json, batch_table, show

PAGE_SIZE = 100  # the API's largest page
TABLE_LIMIT = 100
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired",
            "cancelling", "cancelled")


def fetch(client: Client, *, tenant: str | None, status: str | None,
          limit: int) -> tuple[list[dict], bool]:
    """Batches newest first, page after page, at most `limit`; and whether more match."""
    found: list[dict] = []
    after = None
    while True:
        page = as_json(client.admin.batches.list(tenant=tenant, status=status, after=after,
                                                 limit=min(PAGE_SIZE, limit - len(found))))
        found += page["data"]
        if not page["has_more"] or len(found) >= limit:
            return found, page["has_more"]
        after = page["last_id"]


def batch_list(client: Client, args: argparse.Namespace) -> None:
    batches, more = fetch(client, tenant=args.tenant, status=args.status, limit=args.limit)
    show(args.json, {"object": "list", "data": batches, "has_more": more},
         lambda out: batch_table(out["data"]))
    if more and not args.json:
        print(f"(the newest {len(batches)}; more match: raise --limit or filter by --tenant "
              "or --status)", file=sys.stderr)


def batch_cancel(client: Client, args: argparse.Namespace) -> None:
    def table(batch: dict) -> None:
        batch_table([batch])
        if batch["status"] == "cancelling":
            print("(lines already running finish; the rest end batch_cancelled)",
                  file=sys.stderr)

    show(args.json, as_json(client.admin.batches.cancel(args.batch_id)), table)


def add_batch_commands(batch: argparse._SubParsersAction,
                       command: Callable[..., argparse.ArgumentParser]) -> None:
    """`batch list` and `batch cancel` under the `batch` group; `command(group, name, action,
    help)` makes an admin command (admin_cli's)."""
    listing = command(batch, "list", batch_list, "list batch jobs, newest first")
    listing.add_argument("--tenant", help="only this tenant's batches")
    listing.add_argument("--status", choices=STATUSES, help="only batches in this status")
    listing.add_argument("--limit", type=positive_int, default=TABLE_LIMIT, metavar="N",
                         help=f"at most N batches (default: {TABLE_LIMIT})")
    command(batch, "cancel", batch_cancel, "cancel a batch job of any tenant: its running "
                                           "lines finish, the rest are not sent").add_argument(
        "batch_id")
