"""deployments/slurm/aifactory.sbatch: valid bash, and on a 3-node allocation it starts a Ray
head on the first node, waits for it, starts workers on the other two (commands Ray's own CLI
accepts), waits for all three, then runs `aifactory up --address` against the head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ray.scripts.scripts import start as ray_start

SCRIPT = Path(__file__).parents[2] / "deployments" / "slurm" / "aifactory.sbatch"

# Slurm's `scontrol show hostnames` for a one-range list like gpu[01-03], where no Slurm is.
FAKE_SCONTROL = f"""#!{sys.executable}
import re, sys
assert sys.argv[1:3] == ["show", "hostnames"], sys.argv
prefix, first, last = re.fullmatch(r"(.+)\\[(\\d+)-(\\d+)\\]", sys.argv[3]).groups()
for i in range(int(first), int(last) + 1):
    print(f"{{prefix}}{{i:0{{len(first)}}d}}")
"""


def test_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def _dry_run(bin_dir: Path, **slurm: str) -> list[list[str]]:
    """The commands the script runs for gpu[01-03] with 4 GPUs and 32 CPUs per node."""
    outside_slurm = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env = {**outside_slurm, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DRY_RUN": "1",
           "SLURM_JOB_NODELIST": "gpu[01-03]", "SLURM_GPUS_ON_NODE": "4",
           "SLURM_CPUS_ON_NODE": "32", "AIFACTORY_CONFIG": "/shared/platform.yaml",
           "AIFACTORY_RUN": "apptainer exec --nv /shared/aifactory.sif", **slurm}
    result = subprocess.run(["bash", str(SCRIPT)], check=False, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [_words(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bin")
    (path / "scontrol").write_text(FAKE_SCONTROL)
    (path / "scontrol").chmod(0o755)
    return path


@pytest.fixture(scope="module")
def dry_run(bin_dir) -> list[list[str]]:
    return _dry_run(bin_dir)


def _words(line: str) -> list[str]:
    """A printed command split into words as bash splits it (it quotes with $'...'); a
    trailing `&` is kept as the last word."""
    background = line.endswith(" &")
    split = subprocess.run(
        ["bash", "-c", 'eval "words=($1)"; printf "%s\\0" "${words[@]}"', "_",
         line.removesuffix(" &")], check=True, capture_output=True, text=True)
    return split.stdout.split("\0")[:-1] + (["&"] if background else [])


def _ray_start_args(command: list[str]) -> list[str]:
    """What follows `ray start` in an srun line, minus the background `&`."""
    i = command.index("ray")
    assert command[i + 1] == "start"
    return [a for a in command[i + 2:] if a != "&"]


def _srun_options(command: list[str]) -> list[str]:
    assert command[0] == "srun"
    return command[1:command.index("apptainer")]


def test_head_on_first_node_workers_on_the_others(dry_run):
    head, wait_head, workers, wait_all, up = dry_run
    assert "--nodelist=gpu01" in _srun_options(head) and head[-1] == "&"
    head_args = ray_start.make_context("ray start", _ray_start_args(head)).params
    assert head_args["head"] and head_args["port"] == 6390 and head_args["block"]
    assert json.loads(head_args["resources"]) == {"gateway_node": 1, "engine_node": 4}
    assert (head_args["num_cpus"], head_args["num_gpus"]) == (32, 4)

    assert {"--nodelist=gpu02,gpu03", "--nodes=2", "--ntasks-per-node=1"} <= set(
        _srun_options(workers)) and workers[-1] == "&"
    worker_args = ray_start.make_context("ray start", _ray_start_args(workers)).params
    assert not worker_args["head"] and worker_args["address"] == "gpu01:6390"
    assert json.loads(worker_args["resources"]) == {"engine_node": 4}
    assert worker_args["num_gpus"] == 4 and worker_args["block"]

    for wait in (wait_head, wait_all):
        assert wait[:5] == ["apptainer", "exec", "--nv", "/shared/aifactory.sif", "python"]
    assert wait_head[-3:] == ["gpu01:6390", "1", "600"]  # the head, before the workers start
    assert wait_all[-3:] == ["gpu01:6390", "3", "600"]   # all nodes, before deploying
    assert up[4:] == ["aifactory", "up", "--address", "gpu01:6390",
                      "--config", "/shared/platform.yaml"]


def test_node_wait_script_is_valid_python(dry_run):
    _, wait, *_ = dry_run
    compile(wait[wait.index("-c") + 1], "wait_for_nodes", "exec")


def test_head_is_the_node_running_the_script(bin_dir):
    # Slurm runs the batch script on the allocation's first node as a rule, not always.
    head, _, workers, _, up = _dry_run(bin_dir, SLURMD_NODENAME="gpu02")
    assert "--nodelist=gpu02" in _srun_options(head)
    assert "--nodelist=gpu01,gpu03" in _srun_options(workers)
    assert ray_start.make_context("ray start", _ray_start_args(workers)).params[
        "address"] == "gpu02:6390"
    assert up[-3] == "gpu02:6390"
