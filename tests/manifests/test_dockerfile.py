"""The image KubeRay and Slurm run: it holds every package the project installs, and the
tools KubeRay's probes call."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_image_copies_every_installed_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert packages <= copied, f"the Dockerfile misses {sorted(packages - copied)}"


def test_image_has_wget_for_kuberay_probes():
    # KubeRay's default readiness and liveness probes run `wget` inside the Ray containers.
    install = re.search(r"apt-get install [^&]*", (ROOT / "Dockerfile").read_text()).group(0)
    assert "wget" in install.split()
