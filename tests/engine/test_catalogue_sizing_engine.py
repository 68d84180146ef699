"""The sizing estimate (serving/catalogue/sizing.py) against the real CPU engine: the KV cache
vLLM fits in a given number of bytes, and the weights its layers hold, for the demo model.
About a minute: one engine start, in a subprocess (catalogue_engine_probe.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from serving.catalogue.facts import read_model_facts
from serving.catalogue.sizing import estimate_memory

KV_CACHE_BYTES = 64 * 1024**2
PROBE = Path(__file__).with_name("catalogue_engine_probe.py")


def test_the_estimate_is_what_the_cpu_engine_allots(tmp_path):
    from deployments.demo_model import write_demo_model

    model = write_demo_model(tmp_path / "demo")
    result = subprocess.run([sys.executable, str(PROBE), str(model), str(KV_CACHE_BYTES)],
                            check=False, capture_output=True, text=True, timeout=300)
    lines = [x for x in result.stdout.splitlines() if x.startswith("PROBE ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    engine = json.loads(lines[-1].removeprefix("PROBE "))

    estimate = estimate_memory(read_model_facts(model), context_length=2048, concurrency=1)
    # 64 MiB / 512 bytes per token = 131,072 tokens (1,024 blocks of 128).
    assert engine["kv_cache_tokens"] == KV_CACHE_BYTES // estimate.kv_bytes_per_token
    assert engine["weights_bytes"] == estimate.weights_bytes  # 853,248
