"""The admin key: where the CLI and the platform find it (AIFACTORY_ADMIN_KEY, else
$AIFACTORY_HOME/admin.key), how it is written (0600, in one step), and `aifactory admin
bootstrap`, the one command that opens the store itself, as no admin key exists yet."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from deployments import home as data
from serving.tenancy import (
    Forbidden,
    KeyScope,
    Store,
    TenancyError,
    TenantStatus,
    Unauthenticated,
)

ADMIN_KEY_ENV = "AIFACTORY_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"


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


def configured_admin_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The key this machine's operator uses: AIFACTORY_ADMIN_KEY, else the key file."""
    env = os.environ if environ is None else environ
    return (env.get(ADMIN_KEY_ENV, "").strip()
            or read_key_file(data.home() / ADMIN_KEY_FILE))


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


def _fail(message: str) -> None:
    print(f"aifactory: {message}", file=sys.stderr)


def cmd_admin_bootstrap(args: argparse.Namespace) -> int:
    """Make an admin key straight in the store and save it to the key file. It imports the
    admin package (and FastAPI with it) itself: every other admin command needs the SDK
    only."""
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


def add_bootstrap_command(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser("admin", help="platform administration")
    bootstrap = admin.add_subparsers(dest="action", required=True).add_parser(
        "bootstrap", help=f"make an admin key into $AIFACTORY_HOME/{ADMIN_KEY_FILE}")
    bootstrap.add_argument("--force", action="store_true",
                           help="make a new key even if the key file holds a working one")
    bootstrap.add_argument("--json", action="store_true")
    bootstrap.set_defaults(func=cmd_admin_bootstrap)
