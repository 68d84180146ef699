"""Registering a model's checks, at the edge: the folder given is a real absolute folder, its
facts pass rules.check_model, and its tokenizer loads as the engine would load it. Nothing
is stored here; every refusal names the file and the reason, all of them at once."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.catalogue.facts import (
    TOKENIZER,
    TOKENIZER_CONFIG,
    ModelFacts,
    Problem,
    read_model_facts,
)
from serving.catalogue.rules import FOLDER, check_model
from serving.tenancy import Invalid

MAX_PATH = 1024
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class ModelRefused(Invalid):
    """The folder cannot be served; `problems` lists every reason, each naming its file."""

    def __init__(self, source: str, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("path", f"{source} cannot be registered: "
                                 + "; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class ModelChecks:
    """What the checks need from the running platform: the architectures the installed vLLM
    serves (asked once, lazily: importing vLLM takes seconds) and the tokenizer loader."""

    architectures: Callable[[], frozenset[str]]
    tokenizer_problem: Callable[[ModelFacts], Problem | None]


def source_folder(path: object) -> Path:
    """The folder an operator named: absolute, an existing directory, resolved through
    symlinks so that the entry names the files whose digest it records."""
    if not isinstance(path, str) or not path:
        raise Invalid("path", "must be a non-empty string")
    if "\0" in path or not path.isprintable():
        raise Invalid("path", "holds control characters")
    if len(path) > MAX_PATH:
        raise Invalid("path", f"is longer than {MAX_PATH} characters")
    if not os.path.isabs(path):
        raise Invalid("path", f"must be absolute (a folder every node sees), got {path[:80]!r}")
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise Invalid("path", f"{path} {what} on the gateway's node")
    resolved = folder.resolve()
    if len(str(resolved)) > MAX_PATH:
        raise Invalid("path", f"resolves to a path longer than {MAX_PATH} characters")
    return resolved


def expected_digest(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DIGEST.fullmatch(value.lower()):
        raise Invalid("digest", "must be sha256: and 64 hex digits, as `model show` prints")
    return value.lower()


def version(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise Invalid("version", f"must match {VERSION.pattern}")
    return value


def inspect(folder: Path, checks: ModelChecks, digest: str | None) -> tuple[ModelFacts, str]:
    """The folder's facts and the architecture vLLM will serve it as; ModelRefused with
    every problem when it cannot be served. The tokenizer is loaded only when the files
    passed: a folder with a missing shard is not worth a tokenizer load."""
    facts = read_model_facts(folder)
    supported = checks.architectures()
    problems = check_model(facts, supported, digest)
    if not problems:
        problem = checks.tokenizer_problem(facts)
        problems = [] if problem is None else [problem]
    if problems:
        raise ModelRefused(str(folder), problems)
    return facts, next(a for a in facts.architectures if a in supported)


def load_tokenizer_problem(facts: ModelFacts) -> Problem | None:
    """Loads the tokenizer as vLLM's engine does (transformers' AutoTokenizer, this folder
    only, no remote code); a failure names the tokenizer file it came from. Slow (a second
    or more): call it in a worker thread."""
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(facts.path, local_files_only=True,
                                      trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the reason
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        return Problem(_tokenizer_file(facts), f"the tokenizer does not load ({reason})")
    return None


def _tokenizer_file(facts: ModelFacts) -> str:
    for name in (TOKENIZER, TOKENIZER_CONFIG, *facts.tokenizer_files):
        if name in facts.files:
            return name
    return FOLDER


@functools.cache
def _installed_architectures() -> frozenset[str]:
    from serving.catalogue.vllm_support import supported_architectures

    return supported_architectures()


def installed_checks() -> ModelChecks:
    """The checks against this process's vLLM (imported on the first registration)."""
    return ModelChecks(_installed_architectures, load_tokenizer_problem)
