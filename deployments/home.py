"""The platform's data directory ($AIFACTORY_HOME, default ~/.aifactory) and what lives there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def home() -> Path:
    path = Path(os.environ.get("AIFACTORY_HOME") or Path.home() / ".aifactory").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
