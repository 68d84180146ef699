"""`aifactory` admin commands: tenants, keys, endpoints, grants, quotas, usage, SLA, the
audit log and batch jobs, each one call of the SDK's admin resources (`aifactory_sdk`), the platform's one
client. Only `admin bootstrap` (deployments.admin_key) opens the store itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aifactory_sdk import AIFactoryError, APIConnectionError, APIStatusError, Client

from deployments import admin_render as render
from deployments import home as data
from deployments.admin_args import (
    CliError,
    parse_moment,
    positive_int,
    quota_limit,
    slo_value,
    window,
)
from deployments.admin_key import (
    ADMIN_KEY_ENV,
    ADMIN_KEY_FILE,
    add_bootstrap_command,
    configured_admin_key,
)
from serving.tenancy import KeyScope, PriorityClass, TenantStatus

__all__ = ["main", "register_admin_commands"]

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
SLO_FLAGS = {"--ttft-p95-ms": "ttft_p95_ms", "--itl-p95-ms": "itl_p95_ms",
             "--objective": "objective"}
QUOTA_FLAGS = dict(zip(("--rpm", "--tpm", "--concurrent", "--monthly-tokens"),
                       render.QUOTA_FIELDS, strict=True))

Action = Callable[[Client, argparse.Namespace], None]


def _client(args: argparse.Namespace) -> Client:
    url = args.url or (data.load_state() or {}).get("url") or DEFAULT_URL
    key = args.admin_key or configured_admin_key()
    if not key:
        raise CliError(f"no admin key: pass --admin-key, set {ADMIN_KEY_ENV}, or run "
                       "`aifactory admin bootstrap` on the platform's host")
    if not (key.isascii() and key.isprintable()):
        raise CliError("the admin key holds characters an HTTP header cannot carry")
    # One attempt: an admin command changes something once, and its operator sees the outcome.
    return Client(api_key=key, base_url=url, timeout=TIMEOUT_S, max_retries=0)


def _api_command(action: Action) -> Callable[[argparse.Namespace], int]:
    """An action as a command: 0 when done, 2 when the request was refused (4xx) or the
    command line is wrong, 1 when the platform could not be reached or failed (5xx)."""

    def run(args: argparse.Namespace) -> int:
        client = None
        try:
            client = _client(args)
            action(client, args)
            return 0
        except CliError as exc:
            _fail(str(exc))
            return 2
        except APIStatusError as exc:
            _fail(_refusal(exc, client))
            return 2 if exc.status < 500 else 1
        except APIConnectionError as exc:
            where = client.base_url if client is not None else "the platform"
            _fail(f"cannot reach the admin API at {where}: {exc.message}")
            return 1
        except AIFactoryError as exc:  # something other than the platform answered
            _fail(f"{exc}; is {client.base_url if client else 'the URL'} the platform?")
            return 1
        finally:
            if client is not None:
                client.close()

    return run


def _refusal(error: APIStatusError, client: Client | None) -> str:
    """The API's own words; an answer that is not the API's error says where it came from."""
    if isinstance(error.body, dict) and isinstance(error.body.get("error"), dict):
        return error.message
    where = client.base_url if client is not None else "the platform"
    return f"HTTP {error.status} from {where}: {error.message[:200]}"


def _fail(message: str) -> None:
    print(f"aifactory: {message}", file=sys.stderr)


# The commands: one SDK call each, then the result as a table or as JSON


def _print(args: argparse.Namespace, result: Any, table: Callable[[Any], None]) -> None:
    render.show(args.json, render.as_json(result), table)


def _one(table: Callable[[list], None]) -> Callable[[dict], None]:
    return lambda item: table([item])


def _listed(table: Callable[[list], None]) -> Callable[[dict], None]:
    return lambda page: table(page["data"])


def _slo_changes(args: argparse.Namespace) -> dict[str, float | None]:
    """The SLO flags given, e.g. --ttft-p95-ms 800 --objective default -> {"ttft_p95_ms": 800,
    "objective": None}; flags left out are not sent, so their targets keep their values."""
    return {field: getattr(args, field) for field in SLO_FLAGS.values() if hasattr(args, field)}


def tenant_create(client: Client, args: argparse.Namespace) -> None:
    given = {"priority": args.priority} if args.priority else {}
    _print(args, client.admin.tenants.create(args.name, slo=_slo_changes(args) or None,
                                             **given), _one(render.tenant_table))


def tenant_list(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.tenants.list(), _listed(render.tenant_table))


def tenant_update(client: Client, args: argparse.Namespace) -> None:
    slo = _slo_changes(args)
    if not (args.priority or args.status or slo):
        raise CliError("nothing to update: give --priority, --status or an SLO target")
    _print(args, client.admin.tenants.update(args.name, priority=args.priority,
                                             status=args.status, slo=slo or None),
           _one(render.tenant_table))


def key_create(client: Client, args: argparse.Namespace) -> None:
    expires = None if args.expires is None else parse_moment(
        args.expires, datetime.now(UTC), relative_to_past=False)

    def table(key: dict) -> None:
        print(f"key: {key['key']}")
        print("(shown once: it is not stored and cannot be shown again)")
        render.key_table([key])

    _print(args, client.admin.keys.create(args.tenant, scope=args.scope, expires_at=expires),
           table)


def key_list(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.keys.list(args.tenant), _listed(render.key_table))


def key_revoke(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.keys.revoke(args.id), _one(render.key_table))


def _engine_args(items: list[str]) -> dict[str, Any]:
    engine: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--engine-arg {item!r}: expected KEY=VALUE")
        engine[key] = yaml.safe_load(value)  # 512 -> int, true -> bool, as in the config
    return engine


def endpoint_create(client: Client, args: argparse.Namespace) -> None:
    deployment = None
    if args.model is None and _autoscaling(args):
        raise CliError("autoscaling needs --model: an endpoint registered only is not "
                       "deployed, so there is nothing to size")
    if args.model is not None:  # deploy it now
        deployment = {"model": args.model, "replicas": args.replicas,
                      "engine": {"max_model_len": args.max_model_len,
                                 **_engine_args(args.engine_arg)}}
        if args.accelerators is not None:  # else 1, or a catalogue entry's proposal
            deployment["accelerators_per_replica"] = args.accelerators
        autoscaling = _autoscaling(args)
        if autoscaling:
            deployment["autoscaling"] = autoscaling
    _print(args, client.admin.endpoints.create(args.name, owner=args.owner,
                                               deployment=deployment),
           _one(render.endpoint_table))


# --flag -> the autoscaling field it sets
AUTOSCALING_FLAGS = {"min_replicas": "min_replicas", "max_replicas": "max_replicas",
                     "guaranteed": "guaranteed_replicas", "priority": "priority",
                     "target_ongoing": "target_ongoing_per_replica",
                     "idle_to_zero": "idle_to_zero_s"}


def _autoscaling(args: argparse.Namespace) -> dict[str, Any]:
    """The autoscaling fields the command line gave (none given: {})."""
    fields = {field: getattr(args, flag) for flag, field in AUTOSCALING_FLAGS.items()
              if hasattr(args, flag)}
    slo = {field: getattr(args, field) for field in ("ttft_p95_ms", "itl_p95_ms")
           if hasattr(args, field)}
    return {**fields, **({"slo": slo} if slo else {})}


def endpoint_autoscale(client: Client, args: argparse.Namespace) -> None:
    changes = _autoscaling(args)
    if not changes:
        raise CliError("nothing to change: give at least one of --max-replicas, "
                       "--min-replicas, --guaranteed, --priority, --target-ongoing, "
                       "--idle-to-zero, --ttft-p95-ms, --itl-p95-ms")
    _print(args, client.admin.endpoints.update_autoscaling(args.name, **changes),
           _one(render.endpoint_table))


def _idle_to_zero(text: str) -> float | None:
    if text == "never":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither seconds nor `never`") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be above 0")
    return value


def add_autoscaling_flags(parser: argparse.ArgumentParser) -> None:
    """The autoscaling block's fields; left out, not sent (the platform's default, or on a
    change the value the endpoint has)."""
    flag = parser.add_argument_group("autoscaling (sized by the partition controller)")
    for name, kind, text in (
            ("--max-replicas", positive_int,
             "grow to at most this many, borrowing idle capacity beyond its guarantee"),
            ("--min-replicas", int, "never fewer (must be guaranteed; default 0)"),
            ("--guaranteed", int, "replicas reserved for it: what admission counts"),
            ("--priority", int, "higher is lent to first and reclaimed from last"),
            ("--target-ongoing", float, "requests one replica carries within its SLO"),
            ("--idle-to-zero", _idle_to_zero,
             "seconds without demand before going down to --min-replicas, or `never`"),
            ("--ttft-p95-ms", int, "time to first token its replicas keep (p95)"),
            ("--itl-p95-ms", int, "inter-token latency its replicas keep (p95)")):
        flag.add_argument(name, type=kind, default=argparse.SUPPRESS, help=text)


def endpoint_list(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.endpoints.list(), _listed(render.endpoint_table))


def endpoint_delete(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.endpoints.delete(args.name),
           lambda gone: print(f"deleted endpoint {args.name}"))


def grant(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.endpoints.grant(args.endpoint, args.tenant),
           _one(render.endpoint_table))


def revoke_grant(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.endpoints.revoke_grant(args.endpoint, args.tenant),
           _one(render.endpoint_table))


def quota_set(client: Client, args: argparse.Namespace) -> None:
    changes = {field: getattr(args, field) for field in QUOTA_FLAGS.values()
               if hasattr(args, field)}
    if not changes:
        raise CliError(f"nothing to set: give one or more of {', '.join(QUOTA_FLAGS)}")
    _print(args, client.admin.quotas.set(args.tenant, endpoint=args.endpoint, **changes),
           render.quota_table)


def quota_show(client: Client, args: argparse.Namespace) -> None:
    _print(args, client.admin.quotas.retrieve(args.tenant, endpoint=args.endpoint),
           render.quota_table)


def quota_clear(client: Client, args: argparse.Namespace) -> None:
    where = "" if args.endpoint is None else f" on endpoint {args.endpoint}"
    _print(args, client.admin.quotas.clear(args.tenant, endpoint=args.endpoint),
           lambda gone: print(f"cleared the quota of tenant {args.tenant}{where}"))


def usage(client: Client, args: argparse.Namespace) -> None:
    since, until = window(args)
    until = until or datetime.now(UTC)
    if args.csv:
        sys.stdout.write(client.admin.usage_csv(since=since, until=until, tenant=args.tenant))
        return
    _print(args, client.admin.usage(args.tenant, since=since, until=until, by=args.by),
           render.usage_table)


def sla(client: Client, args: argparse.Namespace) -> None:
    since, until = window(args)
    report = render.as_json(client.admin.sla(args.tenant, since=since,
                                             until=until or datetime.now(UTC)))
    if args.html is not None:
        from observability.sla_html import render_html

        try:
            Path(args.html).write_text(render_html(report))
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}") from None
    render.show(args.json, report, render.sla_table)
    if args.html is not None:
        print(f"wrote the HTML report to {args.html}", file=sys.stderr)


# The parser


def _api_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", help="platform base URL (default: the running platform's, "
                                       f"else {DEFAULT_URL})")
    options.add_argument("--admin-key", help=f"admin key (default: ${ADMIN_KEY_ENV}, else "
                                             f"$AIFACTORY_HOME/{ADMIN_KEY_FILE})")
    options.add_argument("--json", action="store_true", help="print the API's JSON")
    return options


def _add_window(parser: argparse.ArgumentParser, span: str) -> None:
    parser.add_argument("--since", default=span, metavar="WHEN",
                        help=f"e.g. 24h, 30d or an ISO 8601 time (default: {span})")
    parser.add_argument("--until", metavar="WHEN", help="default: now")


def register_admin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the admin commands to the `aifactory` parser; each sets `func(args) -> exit code`."""
    api = [_api_options()]

    def command(parent: argparse._SubParsersAction, name: str, action: Action,
                help_text: str) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, parents=api, help=help_text)
        parser.set_defaults(func=_api_command(action))
        return parser

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        return subparsers.add_parser(name, help=help_text).add_subparsers(dest="action",
                                                                          required=True)

    priorities = [p.value for p in PriorityClass]
    tenant = group("tenant", "create, list and update tenants")
    create = command(tenant, "create", tenant_create, "create a tenant")
    create.add_argument("name")
    create.add_argument("--priority", choices=priorities, help="default: standard")
    command(tenant, "list", tenant_list, "list tenants")
    update = command(tenant, "update", tenant_update, "change a tenant's priority or status")
    update.add_argument("name")
    update.add_argument("--priority", choices=priorities)
    update.add_argument("--status", choices=[s.value for s in TenantStatus])
    for parser in (create, update):
        parser.add_argument("--ttft-p95-ms", dest="ttft_p95_ms", type=slo_value(int),
                            metavar="MS", default=argparse.SUPPRESS,
                            help="p95 time-to-first-token target ('default': 2000)")
        parser.add_argument("--itl-p95-ms", dest="itl_p95_ms", type=slo_value(int),
                            metavar="MS", default=argparse.SUPPRESS,
                            help="p95 inter-token latency target ('default': 200)")
        parser.add_argument("--objective", type=slo_value(float), metavar="RATIO",
                            default=argparse.SUPPRESS,
                            help="share of requests that must meet both, e.g. 0.99 (default)")

    key = group("key", "create, list and revoke API keys")
    create = command(key, "create", key_create, "create a key; it is printed once")
    create.add_argument("tenant")
    create.add_argument("--scope", choices=[s.value for s in KeyScope],
                        default=KeyScope.INFERENCE.value)
    create.add_argument("--expires", metavar="WHEN", help="ISO 8601 time or e.g. 90d from now")
    command(key, "list", key_list, "list a tenant's keys (never the keys themselves)").add_argument(
        "tenant")
    command(key, "revoke", key_revoke, "revoke a key by its id").add_argument("id", type=int)

    endpoint = group("endpoint", "create, list and delete endpoints")
    create = command(endpoint, "create", endpoint_create, "create an endpoint")
    create.add_argument("name")
    create.add_argument("--owner", metavar="TENANT", help="owning tenant (default: shared)")
    create.add_argument("--model", help="deploy it now with this model: a model folder on "
                                        "every node, builtin:demo, or catalogue:NAME (a "
                                        "registered model; without: register only)")
    create.add_argument("--max-model-len", type=int, default=None,
                        help="context length (needed with --model)")
    create.add_argument("--replicas", type=int, default=1)
    create.add_argument("--accelerators", type=float, default=None,
                        help="accelerators (CPU slots on the CPU) per replica (default: 1, "
                             "or for catalogue:NAME the catalogue's proposal)")
    create.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a vLLM engine argument, as under `engine:` in the config")
    add_autoscaling_flags(create)
    autoscale = command(endpoint, "autoscale", endpoint_autoscale,
                        "change an autoscaled endpoint's bounds, guarantee, priority or SLO")
    autoscale.add_argument("name")
    add_autoscaling_flags(autoscale)
    command(endpoint, "list", endpoint_list, "list endpoints")
    command(endpoint, "delete", endpoint_delete, "delete an endpoint").add_argument("name")

    for name, action, help_text in (
            ("grant", grant, "let a tenant use a shared endpoint"),
            ("revoke-grant", revoke_grant, "take a shared endpoint away from a tenant")):
        parser = command(subparsers, name, action, help_text)
        parser.add_argument("endpoint")
        parser.add_argument("tenant")

    quota = group("quota", "set, show and clear quotas")
    for name, action, help_text in (("set", quota_set, "set limits; others keep their value"),
                                    ("show", quota_show, "show a quota"),
                                    ("clear", quota_clear, "remove a quota (unlimited)")):
        parser = command(quota, name, action, help_text)
        parser.add_argument("tenant")
        parser.add_argument("--endpoint", help="the tenant's quota on this endpoint")
        if name == "set":
            for flag, field in QUOTA_FLAGS.items():
                parser.add_argument(flag, dest=field, type=quota_limit, metavar="N",
                                    default=argparse.SUPPRESS, help=f"{field} ('none' clears)")

    parser = command(subparsers, "usage", usage, "a tenant's usage per hour or day")
    parser.add_argument("tenant")
    _add_window(parser, "24h")
    parser.add_argument("--by", choices=["hour", "day"], default="hour")
    parser.add_argument("--csv", action="store_true",
                        help="print the ledger records as CSV instead")

    parser = command(subparsers, "sla", sla, "a tenant's SLA report: latency percentiles "
                                            "against its targets, availability, tokens")
    parser.add_argument("tenant")
    _add_window(parser, "24h")
    parser.add_argument("--html", metavar="FILE",
                        help="also write the report as a self-contained HTML file with charts")

    # Imported here: those modules build on this one's helpers.
    from deployments.admin_adapter_cli import add_adapter_commands
    from deployments.admin_audit_cli import add_audit_arguments, audit
    from deployments.admin_batch_cli import add_batch_commands
    from deployments.admin_model_cli import add_model_commands

    add_batch_commands(group("batch", "list and cancel the batch jobs of every tenant"),
                       command)
    add_adapter_commands(group("adapter", "register, list, show and delete tenants' LoRA "
                                          "adapters"), command)
    add_model_commands(group("model", "register, list, show and delete models in the "
                                      "catalogue"), command)

    add_audit_arguments(command(subparsers, "audit", audit, "the audit log of admin actions: "
                                                            "who changed what, when, from where"))
    add_bootstrap_command(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    register_admin_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
