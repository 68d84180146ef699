"""`aifactory model`: the model catalogue through the admin API (register a checkpoint
folder, list, show with its sizing, delete), each one call of the SDK's `admin.models`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from aifactory_sdk import Client

from deployments.admin_args import positive_int
from deployments.admin_render import as_json, print_table, show, when

MODEL_COLUMNS = [("NAME", lambda m: m["name"]), ("OWNER", lambda m: m.get("owner")),
                 ("ARCHITECTURE", lambda m: m["architecture"]),
                 ("PARAMETERS", lambda m: f"{m['parameter_count']:,}"),
                 ("DTYPE", lambda m: m.get("dtype")),
                 ("CONTEXT", lambda m: m.get("context_length")),
                 ("VERSION", lambda m: m.get("version")),
                 ("CREATED", lambda m: when(m["created_at"]))]
PROPOSAL_COLUMNS = [("ACCELERATOR", lambda p: p["accelerator"]),
                    ("FITS", lambda p: "yes" if p["fits"] else "no"),
                    ("PER_REPLICA", lambda p: f"{p['accelerators_per_replica']:g}"),
                    ("TP", lambda p: p["tensor_parallel_size"]),
                    ("COPIES/DEVICE", lambda p: p["copies_per_device"]),
                    ("NEED/DEVICE", lambda p: _size(p["need_bytes_per_device"])),
                    ("USABLE/DEVICE", lambda p: _size(p["usable_bytes_per_device"]))]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def model_details(model: dict) -> None:
    """The entry's facts, then what a replica needs and where it fits."""
    for label, value in (("name", model["name"]), ("owner", model.get("owner") or
                                                   "(platform-wide)"),
                         ("source", model["source"]), ("version", model.get("version")),
                         ("digest", model["digest"]), ("architecture", model["architecture"]),
                         ("parameters", f"{model['parameter_count']:,}"),
                         ("dtype", model.get("dtype")),
                         ("context length", model.get("context_length")),
                         ("tokenizer", "yes" if model["has_tokenizer"] else "no"),
                         ("chat template", "yes" if model["has_chat_template"] else "no"),
                         ("created", when(model["created_at"]))):
        print(f"{label + ':':<16}{'-' if value is None else value}")
    sizing = model.get("sizing")
    if not sizing:
        return
    print(f"\nsizing for {sizing['concurrency']} sequence(s) of "
          f"{sizing.get('context_length') or '?'} tokens:")
    if sizing.get("error"):
        print(f"  no estimate: {sizing['error']}")
        return
    memory = sizing["memory"]
    print(f"  weights {_size(memory['weights_bytes'])} + KV cache "
          f"{_size(memory['kv_cache_bytes'])} ({memory['kv_bytes_per_token']} bytes x "
          f"{memory['tokens']:,} tokens) = {_size(memory['total_bytes'])} per replica\n")
    print_table(PROPOSAL_COLUMNS, sizing["proposals"])
    for proposal in sizing["proposals"]:
        print(f"  {proposal['accelerator']}: {proposal['reason']}")


def model_register(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.models.register(
        args.name, path=args.path, owner=args.tenant, version=args.version,
        digest=args.digest)), model_details)


def model_list(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.models.list(owner=args.tenant)),
         lambda page: print_table(MODEL_COLUMNS, page["data"]))


def model_show(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.models.retrieve(
        args.name, max_model_len=args.max_model_len, concurrency=args.concurrency)),
         model_details)


def model_delete(client: Client, args: argparse.Namespace) -> None:
    show(args.json, as_json(client.admin.models.delete(args.name)),
         lambda gone: print(f"deleted catalogue model {args.name} (its folder stays)"))


def add_model_commands(model: argparse._SubParsersAction,
                       command: Callable[..., argparse.ArgumentParser]) -> None:
    """register, list, show and delete under the `model` group; `command(group, name,
    action, help)` makes an admin command (admin_cli's)."""
    register = command(model, "register", model_register,
                       "register a checkpoint folder after checking it loads; prints its "
                       "facts and sizing")
    register.add_argument("name", help="the name endpoints use: --model catalogue:NAME")
    register.add_argument("--path", required=True,
                          help="the folder, absolute, on a filesystem every node sees")
    register.add_argument("--tenant", help="the owning tenant (default: platform-wide)")
    register.add_argument("--version", help="e.g. v3 or 2025-03-14")
    register.add_argument("--digest", help="refuse unless the content digest is this "
                                           "(sha256:..., as `model show` prints)")
    listing = command(model, "list", model_list, "list registered models")
    listing.add_argument("--tenant", help="only this tenant's models")
    details = command(model, "show", model_show, "a model's facts and what a replica needs "
                                                 "on the partition's accelerators")
    details.add_argument("name")
    details.add_argument("--max-model-len", type=positive_int, metavar="TOKENS",
                         help="context length to size for (default: the model's)")
    details.add_argument("--concurrency", type=positive_int, metavar="N",
                         help="sequences held at once at that length (default: 8)")
    command(model, "delete", model_delete, "remove a model from the catalogue (refused "
                                           "while an endpoint uses it)").add_argument("name")
