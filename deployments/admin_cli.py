"""`aifactory` admin commands: tenants, keys, endpoints, grants, quotas, usage and the audit
log through the admin API, and `admin bootstrap`, which makes the first admin key straight in
the store."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from deployments import home as data
from serving.tenancy import (
    Forbidden,
    KeyScope,
    PriorityClass,
    Store,
    TenancyError,
    TenantStatus,
    Unauthenticated,
)

__all__ = ["ADMIN_KEY_ENV", "AdminClient", "ApiError", "ensure_admin_key", "main",
           "register_admin_commands"]

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/admin/v1"
ADMIN_KEY_ENV = "AIFACTORY_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"
TIMEOUT_S = 30.0
_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class CliError(Exception):
    """A mistake in the command line itself; exit status 2."""


class ApiError(Exception):
    """The admin API refused the request; `message` is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# The admin key: where the CLI and the platform find it


def read_key_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def write_key_file(path: Path, plaintext: str) -> None:
    """Write the key readable by its owner only (0600), replacing the file in one step so no
    reader ever sees it half written or with wider permissions."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode above applies only to a file os.open created
        with os.fdopen(fd, "w") as out:
            out.write(plaintext + "\n")
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _works_as_admin(store: Store, plaintext: str) -> bool:
    try:
        return store.authenticate(plaintext).scope == KeyScope.ADMIN
    except (Unauthenticated, Forbidden):
        return False


def ensure_admin_key(store: Store, home: Path, *,
                     environ: Mapping[str, str] | None = None) -> str | None:
    """The admin key this machine's CLI will use, made to work, for the platform's start-up.

    With AIFACTORY_ADMIN_KEY set, that exact key becomes an admin key of tenant `admin` (both
    made if missing); a revoked, expired, inference-scoped or malformed one raises Invalid.
    Otherwise the key in `home`/admin.key if it still works, else None: nobody can use the
    admin API yet, and `aifactory admin bootstrap` is the way in."""
    from serving.admin import ensure_admin_key_registered

    env = os.environ if environ is None else environ
    plaintext = env.get(ADMIN_KEY_ENV, "").strip()
    if plaintext:
        ensure_admin_key_registered(store, plaintext)
        return plaintext
    saved = read_key_file(Path(home) / ADMIN_KEY_FILE)
    return saved if saved is not None and _works_as_admin(store, saved) else None


# The HTTP client


class AdminClient:
    """The admin API over HTTP: JSON in, JSON (or CSV text) out, refusals as ApiError."""

    def __init__(self, base_url: str, admin_key: str, *, timeout: float = TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not (admin_key.isascii() and admin_key.isprintable()):
            raise CliError("the admin key holds characters an HTTP header cannot carry")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + API_PREFIX, timeout=timeout,
                                  headers={"Authorization": f"Bearer {admin_key}"},
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, *path: str | int, body: dict | None = None,
             params: dict | None = None) -> Any:
        """E.g. call("GET", "tenants", "acme", "keys") asks GET /admin/v1/tenants/acme/keys;
        each path part is escaped, so a name can never become a different path."""
        url = "/" + "/".join(_segment(str(part)) for part in path)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._http.request(method, url, json=body, params=params)
        if response.is_error:
            raise ApiError(response.status_code, _error_message(response))
        if response.headers.get("content-type", "").startswith("text/csv"):
            return response.text
        try:
            return response.json()
        except ValueError:  # something other than the admin API answered
            raise ApiError(502, f"the reply from {response.request.url} is not JSON; is "
                                f"{self.base_url} the platform?") from None


def _segment(part: str) -> str:
    escaped = quote(part, safe="")
    # "." and ".." would be resolved away by URL normalisation; escaped they stay a name.
    return escaped.replace(".", "%2E") if set(part) <= {"."} else escaped


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return f"HTTP {response.status_code} from {response.request.url}: {text}"


def _client(args: argparse.Namespace) -> AdminClient:
    url = args.url or (data.load_state() or {}).get("url") or DEFAULT_URL
    key = (args.admin_key or os.environ.get(ADMIN_KEY_ENV, "").strip()
           or read_key_file(data.home() / ADMIN_KEY_FILE))
    if not key:
        raise CliError(f"no admin key: pass --admin-key, set {ADMIN_KEY_ENV}, or run "
                       "`aifactory admin bootstrap` on the platform's host")
    return AdminClient(url, key)


def _api_command(action: Callable[[AdminClient, argparse.Namespace], None],
                 ) -> Callable[[argparse.Namespace], int]:
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
        except ApiError as exc:
            _fail(exc.message)
            return 2 if exc.status < 500 else 1
        except httpx.HTTPError as exc:
            where = client.base_url if client is not None else "the platform"
            _fail(f"cannot reach the admin API at {where}: {exc}")
            return 1
        finally:
            if client is not None:
                client.close()

    return run


def _fail(message: str) -> None:
    print(f"aifactory: {message}", file=sys.stderr)


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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# Output: a table for people, the API's JSON with --json


def _show(args: argparse.Namespace, out: Any, render: Callable[[Any], None]) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        render(out)


def print_table(columns: Iterable[tuple[str, Callable[[dict], object]]],
                rows: Iterable[dict]) -> None:
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


def _when(value: str | None) -> str | None:
    """"2025-03-14T09:26:53.372969Z" shown as "2025-03-14 09:26:53Z"."""
    if value is None:
        return None
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%SZ")


TENANT_COLUMNS = [("NAME", lambda t: t["name"]), ("PRIORITY", lambda t: t["priority"]),
                  ("STATUS", lambda t: t["status"]), ("CREATED", lambda t: _when(t["created_at"]))]
KEY_COLUMNS = [("ID", lambda k: k["id"]), ("TENANT", lambda k: k["tenant"]),
               ("PREFIX", lambda k: k["prefix"]), ("SCOPE", lambda k: k["scope"]),
               ("STATUS", lambda k: k["status"]), ("CREATED", lambda k: _when(k["created_at"])),
               ("EXPIRES", lambda k: _when(k["expires_at"])),
               ("REVOKED", lambda k: _when(k["revoked_at"]))]
ENDPOINT_COLUMNS = [("NAME", lambda e: e["name"]), ("OWNER", lambda e: e["owner"] or "(shared)"),
                    ("GRANTS", lambda e: e["grants"] if e["shared"] else None),
                    ("MODEL", lambda e: (e.get("deployment") or {}).get("model", "(config)")),
                    ("CREATED", lambda e: _when(e["created_at"]))]
SLO_FLAGS = {"--ttft-p95-ms": "ttft_p95_ms", "--itl-p95-ms": "itl_p95_ms",
             "--objective": "objective"}
QUOTA_FLAGS = {"--rpm": "requests_per_minute", "--tpm": "tokens_per_minute",
               "--concurrent": "concurrent_requests", "--monthly-tokens": "tokens_per_month"}


def _quota_table(quota: dict) -> None:
    where = f" on endpoint {quota['endpoint']}" if quota["endpoint"] else ""
    print(f"quota of tenant {quota['tenant']}{where}")
    print_table([("LIMIT", lambda r: r[0]), ("VALUE", lambda r: r[1])],
                [(field, "unlimited" if quota[field] is None else quota[field])
                 for field in QUOTA_FLAGS.values()])


def _usage_table(usage: dict) -> None:
    print(f"usage of tenant {usage['tenant']} by {usage['by']}, "
          f"{_when(usage['since'])} to {_when(usage['until'])}")

    def outcome(name: str) -> Callable[[dict], int]:
        return lambda b: b["outcomes"].get(name, 0)

    print_table([
        ("START", lambda b: _when(b["start"]) if "start" in b else "total"),
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


# The commands that talk to the admin API


def _slo_changes(args: argparse.Namespace) -> dict[str, float | None]:
    """The SLO flags given, e.g. --ttft-p95-ms 800 --objective default -> {"ttft_p95_ms": 800,
    "objective": None}; flags left out are not sent, so their targets keep their values."""
    return {field: getattr(args, field) for field in SLO_FLAGS.values() if hasattr(args, field)}


def tenant_create(client: AdminClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "priority": args.priority}
    body = {k: v for k, v in body.items() if v is not None}
    if slo := _slo_changes(args):
        body["slo"] = slo
    out = client.call("POST", "tenants", body=body)
    _show(args, out, lambda t: print_table(TENANT_COLUMNS, [t]))


def tenant_list(client: AdminClient, args: argparse.Namespace) -> None:
    _show(args, client.call("GET", "tenants"), lambda o: print_table(TENANT_COLUMNS, o["data"]))


def tenant_update(client: AdminClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {k: v for k, v in (("priority", args.priority),
                                              ("status", args.status)) if v}
    if slo := _slo_changes(args):
        body["slo"] = slo
    if not body:
        raise CliError("nothing to update: give --priority, --status or an SLO target")
    out = client.call("PATCH", "tenants", args.name, body=body)
    _show(args, out, lambda t: print_table(TENANT_COLUMNS, [t]))


def key_create(client: AdminClient, args: argparse.Namespace) -> None:
    expires = None if args.expires is None else parse_moment(
        args.expires, datetime.now(UTC), relative_to_past=False)
    out = client.call("POST", "tenants", args.tenant, "keys",
                      body={"scope": args.scope, "expires_at": _iso(expires)})

    def render(key: dict) -> None:
        print(f"key: {key['key']}")
        print("(shown once: it is not stored and cannot be shown again)")
        print_table(KEY_COLUMNS, [key])

    _show(args, out, render)


def key_list(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("GET", "tenants", args.tenant, "keys")
    _show(args, out, lambda o: print_table(KEY_COLUMNS, o["data"]))


def key_revoke(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("DELETE", "keys", args.id)
    _show(args, out, lambda k: print_table(KEY_COLUMNS, [k]))


def endpoint_create(client: AdminClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "owner": args.owner}
    if args.model is not None:  # deploy it now
        engine: dict[str, Any] = {"max_model_len": args.max_model_len}
        for item in args.engine_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--engine-arg {item!r}: expected KEY=VALUE")
            engine[key] = yaml.safe_load(value)  # 512 -> int, true -> bool, as in the config
        body["deployment"] = {"model": args.model, "replicas": args.replicas,
                              "accelerators_per_replica": args.accelerators, "engine": engine}
    out = client.call("POST", "endpoints", body=body)
    _show(args, out, lambda e: print_table(ENDPOINT_COLUMNS, [e]))


def endpoint_list(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("GET", "endpoints")
    _show(args, out, lambda o: print_table(ENDPOINT_COLUMNS, o["data"]))


def endpoint_delete(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("DELETE", "endpoints", args.name)
    _show(args, out, lambda e: print(f"deleted endpoint {e['name']}"))


def grant(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("PUT", "endpoints", args.endpoint, "grants", args.tenant)
    _show(args, out, lambda e: print_table(ENDPOINT_COLUMNS, [e]))


def revoke_grant(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("DELETE", "endpoints", args.endpoint, "grants", args.tenant)
    _show(args, out, lambda e: print_table(ENDPOINT_COLUMNS, [e]))


def _quota_path(args: argparse.Namespace) -> tuple[str, ...]:
    if args.endpoint is None:
        return ("tenants", args.tenant, "quota")
    return ("tenants", args.tenant, "endpoints", args.endpoint, "quota")


def quota_set(client: AdminClient, args: argparse.Namespace) -> None:
    changes = {field: getattr(args, field) for field in QUOTA_FLAGS.values()
               if hasattr(args, field)}
    if not changes:
        raise CliError(f"nothing to set: give one or more of {', '.join(QUOTA_FLAGS)}")
    _show(args, client.call("PUT", *_quota_path(args), body=changes), _quota_table)


def quota_show(client: AdminClient, args: argparse.Namespace) -> None:
    _show(args, client.call("GET", *_quota_path(args)), _quota_table)


def quota_clear(client: AdminClient, args: argparse.Namespace) -> None:
    out = client.call("DELETE", *_quota_path(args))
    _show(args, out, lambda q: print(f"cleared the quota of tenant {q['tenant']}"
                                     + (f" on endpoint {q['endpoint']}" if q["endpoint"] else "")))


def usage(client: AdminClient, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    until = now if args.until is None else parse_moment(args.until, now)
    since = parse_moment(args.since, now)
    window = {"since": _iso(since), "until": _iso(until)}
    if args.csv:
        sys.stdout.write(client.call("GET", "usage.csv", params={**window,
                                                                 "tenant": args.tenant}))
        return
    out = client.call("GET", "tenants", args.tenant, "usage", params={**window, "by": args.by})
    _show(args, out, _usage_table)


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds * 1000:.0f} ms"


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{share * 100:.2f}%"


def _status(met: bool | None) -> str:
    return "no data" if met is None else "met" if met else "MISSED"


def _sla_table(report: dict) -> None:
    print(f"SLA of tenant {report['tenant']}, {_when(report['since'])} to "
          f"{_when(report['until'])}")
    print_table([("SLI", lambda r: r[0]), ("REQUESTS", lambda r: r[1]["samples"]),
                 ("P50", lambda r: _ms(r[1]["p50_s"])), ("P95", lambda r: _ms(r[1]["p95_s"])),
                 ("P99", lambda r: _ms(r[1]["p99_s"])),
                 ("P95 TARGET", lambda r: _ms(r[1]["target_p95_s"])),
                 ("STATUS", lambda r: _status(r[1]["met"]))],
                [("ttft", report["ttft"]), ("itl", report["itl"])])
    print()
    outcomes = report["outcomes"]
    print_table([("FIGURE", lambda r: r[0]), ("VALUE", lambda r: r[1])], [
        ("requests", report["requests"]),
        ("availability", _percent(report["availability"])),
        ("compliant", (f"{_percent(report['compliance']) or '-'} of {report['judged']} "
                       f"(objective {_percent(report['objective'])}: "
                       f"{_status(report['objective_met'])})")),
        ("errors", outcomes["error"]), ("rejected", report["rejections"]),
        ("cancelled", outcomes["client_cancelled"]),
        ("prompt tokens", report["prompt_tokens"]),
        ("completion tokens", report["completion_tokens"]),
        ("total tokens", report["total_tokens"]),
    ])


def sla(client: AdminClient, args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    until = now if args.until is None else parse_moment(args.until, now)
    window = {"since": _iso(parse_moment(args.since, now)), "until": _iso(until)}
    out = client.call("GET", "tenants", args.tenant, "sla", params=window)
    if args.html is not None:
        from observability.sla_html import render_html

        try:
            Path(args.html).write_text(render_html(out))
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}") from None
    _show(args, out, _sla_table)
    if args.html is not None:
        print(f"wrote the HTML report to {args.html}", file=sys.stderr)


# `admin bootstrap`: the one command that opens the store itself, as no admin key exists yet.
# It imports the admin package (and FastAPI with it) itself: every other command needs HTTP only.


def cmd_admin_bootstrap(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from serving.admin import ADMIN_TENANT, ensure_admin_tenant
    from serving.tenancy import database_url_from_env, upgrade

    directory = data.home()
    key_file = directory / ADMIN_KEY_FILE
    database_url = database_url_from_env(directory)
    try:
        upgrade(database_url)
        store = Store(database_url)
    except (SQLAlchemyError, TenancyError) as exc:
        _fail(f"cannot open the tenancy database: {exc}")
        return 1
    try:
        previous = read_key_file(key_file)
        previous_works = previous is not None and _works_as_admin(store, previous)
        if previous_works and not args.force:
            _fail(f"{key_file} already holds a working admin key; --force makes a new one")
            return 2
        notes = []
        if ensure_admin_tenant(store).status != TenantStatus.ACTIVE:
            store.update_tenant(ADMIN_TENANT, status=TenantStatus.ACTIVE)
            notes.append(f"tenant {ADMIN_TENANT!r} was suspended; it is active again")
        if previous_works:
            old = store.authenticate(previous)
            old_id = next(k.id for k in store.list_keys(old.tenant) if k.prefix == old.key_prefix)
            notes.append(f"the previous key {old.key_prefix}... still works; `aifactory key "
                         f"revoke {old_id}` ends it")
        created = store.create_key(ADMIN_TENANT, scope=KeyScope.ADMIN)
        write_key_file(key_file, created.plaintext)
    except (SQLAlchemyError, TenancyError) as exc:
        _fail(f"bootstrap failed: {exc}")
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps({"key": created.plaintext, "id": created.key.id,
                          "tenant": ADMIN_TENANT, "prefix": created.key.prefix,
                          "path": str(key_file), "notes": notes}, indent=2))
        return 0
    print(f"admin key: {created.plaintext}")
    print(f"(shown once; saved to {key_file}, readable by you only)")
    for note in notes:
        print(note)
    return 0


# The parser


def _limit(text: str) -> int | None:
    """A quota limit: a whole number, or "none" to clear it (unlimited)."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor 'none'") from None


def _slo_value(kind: type[int | float]) -> Callable[[str], int | float | None]:
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


def _api_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", help="platform base URL (default: the running platform's, "
                                       f"else {DEFAULT_URL})")
    options.add_argument("--admin-key", help=f"admin key (default: ${ADMIN_KEY_ENV}, else "
                                             f"$AIFACTORY_HOME/{ADMIN_KEY_FILE})")
    options.add_argument("--json", action="store_true", help="print the API's JSON")
    return options


def register_admin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the admin commands to the `aifactory` parser; each sets `func(args) -> exit code`."""
    api = [_api_options()]

    def command(parent: argparse._SubParsersAction, name: str,
                action: Callable[[AdminClient, argparse.Namespace], None],
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
        parser.add_argument("--ttft-p95-ms", dest="ttft_p95_ms", type=_slo_value(int),
                            metavar="MS", default=argparse.SUPPRESS,
                            help="p95 time-to-first-token target ('default': 2000)")
        parser.add_argument("--itl-p95-ms", dest="itl_p95_ms", type=_slo_value(int),
                            metavar="MS", default=argparse.SUPPRESS,
                            help="p95 inter-token latency target ('default': 200)")
        parser.add_argument("--objective", type=_slo_value(float), metavar="RATIO",
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
                                        "every node, or builtin:demo (without: register only)")
    create.add_argument("--max-model-len", type=int, default=None,
                        help="context length (needed with --model)")
    create.add_argument("--replicas", type=int, default=1)
    create.add_argument("--accelerators", type=float, default=1.0,
                        help="accelerators (CPU slots on the CPU) per replica")
    create.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a vLLM engine argument, as under `engine:` in the config")
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
                parser.add_argument(flag, dest=field, type=_limit, metavar="N",
                                    default=argparse.SUPPRESS, help=f"{field} ('none' clears)")

    parser = command(subparsers, "usage", usage, "a tenant's usage per hour or day")
    parser.add_argument("tenant")
    parser.add_argument("--since", default="24h", metavar="WHEN",
                        help="e.g. 24h, 7d or an ISO 8601 time (default: 24h)")
    parser.add_argument("--until", metavar="WHEN", help="default: now")
    parser.add_argument("--by", choices=["hour", "day"], default="hour")
    parser.add_argument("--csv", action="store_true",
                        help="print the ledger records as CSV instead")

    parser = command(subparsers, "sla", sla, "a tenant's SLA report: latency percentiles "
                                            "against its targets, availability, tokens")
    parser.add_argument("tenant")
    parser.add_argument("--since", default="24h", metavar="WHEN",
                        help="e.g. 24h, 30d or an ISO 8601 time (default: 24h)")
    parser.add_argument("--until", metavar="WHEN", help="default: now")
    parser.add_argument("--html", metavar="FILE",
                        help="also write the report as a self-contained HTML file with charts")

    # Imported here: that module builds on this one's client and helpers.
    from deployments.admin_audit_cli import add_audit_arguments, audit

    add_audit_arguments(command(subparsers, "audit", audit, "the audit log of admin actions: "
                                                            "who changed what, when, from where"))

    admin = subparsers.add_parser("admin", help="platform administration")
    bootstrap = admin.add_subparsers(dest="action", required=True).add_parser(
        "bootstrap", help=f"make an admin key into $AIFACTORY_HOME/{ADMIN_KEY_FILE}")
    bootstrap.add_argument("--force", action="store_true",
                           help="make a new key even if the key file holds a working one")
    bootstrap.add_argument("--json", action="store_true")
    bootstrap.set_defaults(func=cmd_admin_bootstrap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aifactory", description=__doc__)
    register_admin_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
