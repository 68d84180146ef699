"""Whether a LoRA adapter folder may be registered on an endpoint: the path itself first (an
absolute folder, within the tenant's own root when the platform sets one), then the facts
of the folder and of the endpoint's base model checked by rules.check_adapter. Reads files
but writes nothing: the store is written only after every check passed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from serving.catalogue.facts import AdapterFacts, Problem, read_adapter_facts, read_model_facts
from serving.catalogue.rules import FOLDER, check_adapter
from serving.tenancy import Invalid

MAX_PATH = 4096  # PATH_MAX on Linux
# Past any real adapter (a rank-64 adapter of a 70B model is about 1.6 GB in a few files),
# low enough that a path like "/" is refused after a short walk instead of read whole.
MAX_FILES = 256
MAX_BYTES = 16 * 1024**3


class Refused(Invalid):
    """The folder cannot be served as asked; the message names every file and reason."""

    def __init__(self, path: str, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        # Numbered: a reason may hold "; " itself.
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(self.problems, 1))
        super().__init__("path", f"adapter folder {path} refused: {listed}")


def folder_path(path: object) -> str:
    """The path as stored: absolute and normalised ("/a/b/../c/" is "/a/c"). Refuses what no
    engine can open: a non-string, NUL or other control characters, a relative or overlong
    path. Says nothing about the filesystem."""
    if not isinstance(path, str) or not path:
        raise Invalid("path", "must be a non-empty string: the adapter folder's absolute path")
    if len(path) > MAX_PATH:
        raise Invalid("path", f"is {len(path)} characters long; at most {MAX_PATH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise Invalid("path", "holds a NUL or another control character")
    if not os.path.isabs(path):
        raise Invalid("path", f"must be absolute (on a filesystem every engine node sees), "
                              f"got {path[:64]!r}")
    return os.path.normpath(path)


def path_problems(path: str, root: str | None) -> list[Problem]:
    """Why `path` is not a folder to read: missing, not a directory, or (with a `root`, the
    folder a tenant may register from) anything in it resolving outside `root`, symlinks
    followed. Without a root, symlinks are allowed: a Hugging Face cache snapshot is one."""
    folder = Path(path)
    if root is not None and not Path(os.path.realpath(folder)).is_relative_to(
            Path(os.path.realpath(root))):
        # Before anything is read there: whether a path outside exists is not the tenant's
        # to learn.
        return [Problem(FOLDER, f"{path} is outside {root}, the folder adapters may be "
                                "registered from")]
    if not folder.exists():
        return [Problem(FOLDER, f"{path} does not exist")]
    if not folder.is_dir():
        return [Problem(FOLDER, f"{path} is not a directory")]
    entries = _bounded_entries(folder)
    if entries is None:
        return [Problem(FOLDER, f"{path} holds more than {MAX_FILES} files or "
                                f"{MAX_BYTES // 1024**3} GiB: not an adapter folder")]
    if root is None:
        return []
    inside = Path(os.path.realpath(root))
    escapes = [p for p in (folder, *entries)
               if not Path(os.path.realpath(p)).is_relative_to(inside)]
    if escapes:
        shown = "the folder" if escapes[0] == folder else escapes[0].relative_to(folder)
        return [Problem(FOLDER, f"{shown} resolves outside {root}, the folder adapters may be "
                                "registered from")]
    return []


def _bounded_entries(folder: Path) -> list[Path] | None:
    """Everything under `folder` (symlinked folders followed, as the digest follows them),
    or None as soon as it passes MAX_FILES entries or MAX_BYTES."""
    found: list[Path] = []
    size = 0
    for where, dirs, files in os.walk(folder, followlinks=True):
        for name in (*dirs, *files):
            entry = Path(where, name)
            found.append(entry)
            if entry.is_file():
                size += entry.stat().st_size
            if len(found) > MAX_FILES or size > MAX_BYTES:
                return None
    return found


def check_folder(path: str, base_root: str, max_lora_rank: int | None, *,
                 root: str | None = None, expected_digest: str | None = None) -> AdapterFacts:
    """The adapter folder's facts when it can be applied to the model folder `base_root` on
    an engine with `max_lora_rank` (None: LoRA not enabled there); else Refused, listing
    every problem. `path` must come through folder_path."""
    problems = path_problems(path, root)
    if problems:
        raise Refused(path, problems)
    adapter = read_adapter_facts(path)
    base = read_model_facts(base_root, digest=False)
    problems = check_adapter(adapter, base, max_lora_rank, expected_digest)
    if problems:
        raise Refused(path, problems)
    return adapter
