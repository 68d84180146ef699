"""The platform's data directory ($AIFACTORY_HOME, default ~/.aifactory) and what lives there."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


LINK_SECRET_ENV = "AIFACTORY_LINK_SECRET"
LINK_SECRET_FILE = "link.secret"


def home() -> Path:
    path = Path(os.environ.get("AIFACTORY_HOME") or Path.home() / ".aifactory").expanduser()
    # Keys, the store and spooled usage live here: the platform's user only.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def link_secret() -> str:
    """The secret gateway and engine replicas prove to each other on every engine link
    (hex): $AIFACTORY_LINK_SECRET, else made once and kept in the data directory (0600), so
    that redeploying keeps it and leaves running engines alone."""
    given = os.environ.get(LINK_SECRET_ENV, "").strip()
    if given:
        try:
            if len(bytes.fromhex(given)) >= 16:
                return given
        except ValueError:
            pass
        raise ValueError(f"{LINK_SECRET_ENV} must be at least 32 hex digits")
    path = home() / LINK_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path.read_text().strip()


def demo_model_dir() -> Path:
    return home() / "models" / "demo"


def _state_file() -> Path:
    return home() / "platform.json"


def save_state(state: dict[str, Any]) -> None:
    _state_file().write_text(json.dumps(state, indent=2))


def load_state() -> dict[str, Any] | None:
    try:
        return json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None


def clear_state() -> None:
    _state_file().unlink(missing_ok=True)
