"""`aifactory adapter`: tenants' LoRA adapters through the admin API (register a folder for a
tenant on an endpoint, list, show, delete), each one call of the SDK's `admin.adapters`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from aifactory_sdk import Client

from deployments.admin_render import as_json, print_table, show
from deployments.config import DEFAULT_TENANT


def _created(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _targets(adapter: dict) -> str:
    targets = adapter["target_modules"]
    return targets if isinstance(targets, str) else ",".join(targets)


ADAPTER_COLUMNS = [("NAME", lambda a: a["name"]), ("TENANT", lambda a: a["tenant"]),
                   ("ENDPOINT", lambda a: a["endpoint"]), ("RANK", lambda a: a["rank"]),
                   ("TARGETS", _targets), ("CREATED", lambda a: _created(a["created_at"])),
                   ("PATH", lambda a: a["path"])]


def adapter_details(adapter: dict) -> None:
    for label, value in (("name", adapter["name"]), ("tenant", adapter["tenant"]),
                         ("endpoint", adapter["endpoint"]), ("path", adapter["path"]),
                         ("digest", adapter["digest"]), ("rank", adapter["rank"]),
                         ("target modules", _targets(adapter)),
                         ("base model", adapter.get("base_model")),
                         ("created", _created(adapter["created_at"]))):
        print(f"{label + ':':<16}{'-' if value is None else value}")


def adapter_register(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.adapters.register(
        args.name, endpoint=args.endpoint, path=args.path, tenant=args.tenant)),
         adapter_details)


def adapter_list(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.adapters.list(tenant=args.tenant,
                                                       endpoint=args.endpoint)),
         lambda page: print_table(ADAPTER_COLUMNS, page["data"]))


def adapter_show(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.adapters.retrieve(args.name)), adapter_details)


def adapter_delete(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.adapters.delete(args.name)),
         lambda gone: print(f"deleted adapter {gone['id']} (its folder stays)"))


def add_adapter_commands(adapter: argparse._SubParsersAction,
                         command: Callable[..., argparse.ArgumentParser]) -> None:
    """register, list, show and delete under the `adapter` group; `command(group, name,
    action, help)` makes an admin command (admin_cli's)."""
    register = command(adapter, "register", adapter_register,
                       "register a LoRA adapter folder for a tenant, after checking it fits "
                       "the endpoint's model and max_lora_rank")
    register.add_argument("name", help="the model id the tenant's requests name")
    register.add_argument("--endpoint", required=True,
                          help="the base endpoint whose engine applies it (LoRA enabled)")
    register.add_argument("--path", required=True,
                          help="the adapter folder, absolute, on a filesystem every node sees")
    register.add_argument("--tenant", default=DEFAULT_TENANT,
                          help=f"the tenant it belongs to (default: {DEFAULT_TENANT}, the "
                               "embedded platform's)")
    listing = command(adapter, "list", adapter_list, "list adapters by name")
    listing.add_argument("--tenant", help="only this tenant's adapters")
    listing.add_argument("--endpoint", help="only those on this endpoint")
    command(adapter, "show", adapter_show, "an adapter's folder, digest, rank and "
                                           "targets").add_argument("name")
    command(adapter, "delete", adapter_delete, "delete an adapter; requests naming it answer "
                                               "404 (its folder stays)").add_argument("name")
