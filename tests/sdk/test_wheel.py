"""The SDK as an application installs it: its wheel, built from sdk/, in a fresh virtual
environment that has nothing of the platform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk"

PROBE = """
import importlib.metadata as md, importlib.util, json
import aifactory_sdk
client = aifactory_sdk.Client(api_key="afk_probe", base_url="http://127.0.0.1:1")
try:
    client.with_options(max_retries=0, timeout=2).models.list()
except aifactory_sdk.APIConnectionError as exc:
    refused = type(exc).__name__
print(json.dumps({
    "version": aifactory_sdk.__version__,
    "requires": md.requires("aifactory-sdk"),
    "importable": {m: importlib.util.find_spec(m) is not None
                   for m in ("ray", "vllm", "torch", "serving", "deployments", "fastapi")},
    "refused": refused,
}))
"""


def _run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_installs_and_works_where_the_platform_is_absent(tmp_path: Path) -> None:
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", SDK,
         cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("aifactory_sdk-*.whl")
    _run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    python = tmp_path / "venv" / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)

    found = json.loads(_run(python, "-c", PROBE, cwd=tmp_path))
    assert found["version"] == "0.1.0"
    runtime = sorted(r.split(">")[0].split("<")[0].strip() for r in found["requires"]
                     if "extra ==" not in r)
    assert runtime == ["httpx", "pydantic"]
    assert found["importable"] == {"ray": False, "vllm": False, "torch": False,
                                   "serving": False, "deployments": False, "fastapi": False}
    assert found["refused"] == "APIConnectionError"  # it runs, not only imports
