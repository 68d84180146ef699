"""The platform config: valid files load, invalid ones are refused naming the field and why."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployments.config import ConfigError, default_config, load_config, parse_config
from deployments.app import engine_args, engine_resources
from serving.engine.host import vllm_cli_args

ENDPOINT = {"name": "a", "model": "/models/a"}


def test_default_config_is_the_colocated_demo_and_its_embedding_twin():
    cfg = default_config(port=9000)
    assert cfg.server.port == 9000
    [demo, embed] = cfg.endpoints
    assert (demo.name, demo.model, demo.colocated) == ("demo", "builtin:demo", True)
    assert (embed.name, embed.model, embed.colocated) == ("demo-embed", "builtin:demo", False)
    assert embed.engine.extra_args == {"runner": "pooling", "convert": "embed"}


@pytest.mark.parametrize(
    "data,where,why",
    [
        ({"endpoints": []}, "endpoints", "at least 1"),
        ({"endpoints": [{**ENDPOINT, "replicas": -1}]}, "endpoints.0.replicas", "greater than or equal to 0"),
        ({"endpoints": [{**ENDPOINT, "name": "Bad Name"}]}, "endpoints.0.name", "pattern"),
        ({"endpoints": [{**ENDPOINT, "engine": {"dtype": "int3"}}]}, "endpoints.0.engine.dtype", "bfloat16"),
        ({"endpoints": [{**ENDPOINT, "engine": {"max_model_len": 0}}]}, "endpoints.0.engine.max_model_len", "greater than 0"),
        ({"endpoints": [{**ENDPOINT, "engnie": {}}]}, "endpoints.0.engnie", "Extra inputs"),
        ({"server": {"port": 70000}, "endpoints": [ENDPOINT]}, "server.port", "less than or equal"),
        ({"partition": {"count": 2}, "endpoints": [{**ENDPOINT, "replicas": 3}]}, "(top level)", "partition.count is 2"),
        ({"endpoints": [ENDPOINT, ENDPOINT]}, "(top level)", "repeated: a"),
        ({"endpoints": [{**ENDPOINT, "colocated": True}, {**ENDPOINT, "name": "b", "colocated": True}]},
         "(top level)", "at most one endpoint"),
        ({"endpoints": [{**ENDPOINT, "accelerators_per_replica": 1, "engine": {"tensor_parallel_size": 2}}]},
         "endpoints.0", "tensor_parallel_size"),
        ({"endpoints": [{**ENDPOINT, "engine": {"extra_args": {"--bad flag": 1}}}]},
         "endpoints.0.engine.extra_args", "not a vLLM flag name"),
        ({"tenants": [{"name": "t", "slo": {"objective": 1}}], "endpoints": [ENDPOINT]},
         "tenants.0.slo.objective", "a ratio in [0.5, 0.99999]"),
        ({"tenants": [{"name": "t", "slo": {"ttft_p95_ms": 0}}], "endpoints": [ENDPOINT]},
         "tenants.0.slo.ttft_p95_ms", "whole milliseconds in [1, 600000]"),
        ({"tenants": [{"name": "t", "slo": {"ttft_ms": 5}}], "endpoints": [ENDPOINT]},
         "tenants.0.slo.ttft_ms", "Extra inputs"),
    ],
)
def test_invalid_config_names_field_and_reason(data, where, why):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.yaml")
    message = str(info.value)
    assert f"{where}:" in message and why in message, message


def test_load_config_refuses_bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("endpoints: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_cli_up_refuses_invalid_config_before_starting_anything(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("endpoints:\n  - name: a\n    model: /m\n    replicas: lots\n")
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "up", "--config", str(path)],
                            capture_output=True, text=True, env={"AIFACTORY_HOME": str(tmp_path),
                                                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "endpoints.0.replicas" in result.stderr and "valid integer" in result.stderr


def test_cli_up_refuses_missing_model_folder(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"endpoints:\n  - name: a\n    model: {tmp_path}/nothing\n")
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "up", "--config", str(path)],
                            capture_output=True, text=True, env={"AIFACTORY_HOME": str(tmp_path),
                                                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "endpoints.0.model" in result.stderr and "no config.json" in result.stderr


def test_cli_up_refuses_engine_flags_vllm_does_not_know(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    path = tmp_path / "cfg.yaml"
    path.write_text(f"endpoints:\n  - name: a\n    model: {model}\n"
                    f"    engine:\n      extra_args:\n        no_such_flag: 3\n")
    result = subprocess.run([sys.executable, "-m", "deployments.cli", "up", "--config", str(path)],
                            capture_output=True, text=True, env={"AIFACTORY_HOME": str(tmp_path),
                                                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "endpoints.0.engine: vLLM refuses these arguments" in result.stderr
    assert "--no-such-flag" in result.stderr


def test_engine_settings_become_vllm_flags():
    cfg = parse_config({"endpoints": [{**ENDPOINT, "engine": {
        "max_model_len": 512, "dtype": "bfloat16", "enforce_eager": True,
        "extra_args": {"enable_prefix_caching": False, "max_num_batched_tokens": 1024}}}]})
    args = engine_args(cfg.endpoints[0], cfg.partition)
    argv = vllm_cli_args("/models/a", "a", args)
    assert argv[:4] == ["--model", "/models/a", "--served-model-name", "a"]
    assert "--max-model-len" in argv and argv[argv.index("--max-model-len") + 1] == "512"
    assert "--enforce-eager" in argv and "--no-enable-prefix-caching" in argv
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "1024"
    # vLLM's priority scheduler by default (batch lines after interactive requests)...
    assert argv[argv.index("--scheduling-policy") + 1] == "priority"
    fcfs = parse_config({"endpoints": [{**ENDPOINT, "engine": {
        "extra_args": {"scheduling_policy": "fcfs"}}}]})
    assert engine_args(fcfs.endpoints[0], fcfs.partition)["scheduling_policy"] == "fcfs"


def test_engine_resources_cpu_gpu_and_tensor_parallel():
    cpu = parse_config({"endpoints": [{**ENDPOINT, "accelerators_per_replica": 2}]})
    assert engine_resources(cpu.endpoints[0], cpu.partition) == {"ray_actor_options": {"num_cpus": 2}}
    gpu = parse_config({"partition": {"accelerator": "gpu", "count": 4},
                        "endpoints": [{**ENDPOINT, "accelerators_per_replica": 0.5}]})
    assert engine_resources(gpu.endpoints[0], gpu.partition)["ray_actor_options"]["num_gpus"] == 0.5
    tp = parse_config({"partition": {"accelerator": "gpu", "count": 4},
                       "endpoints": [{**ENDPOINT, "accelerators_per_replica": 2,
                                      "engine": {"tensor_parallel_size": 2}}]})
    res = engine_resources(tp.endpoints[0], tp.partition)
    assert res["placement_group_bundles"] == [{"CPU": 1}, {"GPU": 1}, {"GPU": 1}]
    assert engine_args(tp.endpoints[0], tp.partition)["distributed_executor_backend"] == "ray"


@pytest.mark.parametrize("fields, bound", [
    # what the replicas take at once, plus the queue: 8 x 3 + 10
    ({"replicas": 3}, 8 * 3 + 10),
    # colocated: each gateway replica bounds its own engine, 8 + 10
    ({"replicas": 2, "colocated": True}, 8 + 10),
    # autoscaled: the replicas it may grow to, 8 x 5 + 10
    ({"replicas": 1, "engine": {"max_model_len": 512}, "autoscaling": {"max_replicas": 5}},
     8 * 5 + 10),
])
def test_max_in_flight_is_the_replicas_slots_and_the_queue(fields, bound):
    config = parse_config({"partition": {"count": 8}, "server": {"ingress": "haproxy"},
                           "endpoints": [{**ENDPOINT, "max_ongoing_requests": 8,
                                          "max_queued_requests": 10, **fields}]})
    assert config.endpoints[0].max_in_flight == bound
    assert config.endpoints[0].slots == bound - 10


def _autoscaled(name: str, **autoscaling) -> dict:
    return {"name": name, "model": "m", "engine": {"max_model_len": 512},
            "autoscaling": {"max_replicas": 2, **autoscaling}}


def test_autoscaled_partition_is_what_fixed_endpoints_leave():
    config = parse_config({
        "partition": {"count": 6, "autoscaler": {"tuning": {"upscale_window_s": 3}}},
        "endpoints": [
            {"name": "fixed", "model": "m", "replicas": 2, "accelerators_per_replica": 1.5},
            _autoscaled("a", guaranteed_replicas=1, priority=5,
                        slo={"ttft_p95_ms": 500, "itl_p95_ms": 50}),
            {**_autoscaled("b"), "replicas": 0},
        ],
    })
    partition = config.autoscaled_partition()
    assert partition.capacity == 6 - 2 * 1.5
    assert [e.name for e in partition.endpoints] == ["a", "b"]
    a = partition.endpoint("a")
    assert (a.guaranteed_replicas, a.priority, a.max_replicas) == (1, 5, 2)
    assert (a.slo.ttft_p95_s, a.slo.itl_p95_s) == (0.5, 0.05)
    assert partition.tuning.upscale_window_s == 3
    assert parse_config({"endpoints": [{"name": "x", "model": "m"}]}).autoscaled_partition() is None


@pytest.mark.parametrize(("endpoints", "count", "why"), [
    ([_autoscaled("a", guaranteed_replicas=2), _autoscaled("b", guaranteed_replicas=1)], 2,
     "guarantees add up to 3 accelerators, more than the capacity 2"),
    ([{**_autoscaled("a"), "colocated": True}], 4, "colocated with the gateway and cannot be"),
    ([{**_autoscaled("a"), "engine": {}}], 4, "set engine.max_model_len"),
    ([{**_autoscaled("a"), "replicas": 3}], 4, "outside autoscaling.min_replicas..max_replicas"),
    ([{"name": "f", "model": "m", "replicas": 2}, _autoscaled("a")], 2,
     "none are left for the autoscaled endpoints"),
])
def test_autoscaling_config_refusals(endpoints, count, why):
    with pytest.raises(ConfigError, match=why.replace(".", r"\.")):
        parse_config({"partition": {"count": count}, "endpoints": endpoints})


def test_unknown_policy_tuning_is_refused():
    with pytest.raises(ConfigError, match="upscale_windows"):
        parse_config({"partition": {"autoscaler": {"tuning": {"upscale_windows": 1}}},
                      "endpoints": [{"name": "x", "model": "m"}]})
