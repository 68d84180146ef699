"""The CPU engine's compiled model loads from vLLM's compile cache on its next start
(serving.engine.cpu_compile_cache). Measured on the demo model (scratch probe, not a test):
a second start's KV-cache and warm-up phase went from 65 s (compiling again) to 6 s, with the
same greedy tokens."""

from __future__ import annotations

from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import torch

from serving.engine import cpu_compile_cache


def test_vllm_still_finalises_what_it_loads():
    """The call that failed on the CPU is still there; when vLLM stops making it, the
    plugin has nothing left to do and can go."""
    # Read, not imported: importing vLLM's compilation package in this process loads
    # torch's inductor, which this test process has no other use for.
    source = Path(find_spec("vllm.compilation.decorators").origin).read_text()
    source = source[source.index("def _try_load_aot_compiled_fn("):]
    source = source[:source.index("\ndef ", 1)]
    assert "torch.compiler.load_compiled_function(" in source
    assert "compiled_fn.finalize_loading(" in source


def test_a_loaded_plain_function_gets_a_finalize_that_does_nothing(monkeypatch):
    def plain_compiled(*args):
        return sum(args)

    class Artifact:
        def __call__(self, *args):
            return 0

        def finalize_loading(self, vllm_config):
            self.finalized = vllm_config

    artifact = Artifact()
    loaded = iter([SimpleNamespace(_artifacts=SimpleNamespace(compiled_fn=plain_compiled)),
                   SimpleNamespace(_artifacts=SimpleNamespace(compiled_fn=artifact)),
                   SimpleNamespace()])
    monkeypatch.setattr(torch.compiler, "load_compiled_function",
                        lambda f, f_globals=None: next(loaded))
    cpu_compile_cache.load_cpu_compiled_models()
    patched = torch.compiler.load_compiled_function
    cpu_compile_cache.load_cpu_compiled_models()  # a second load of the plugins: no re-wrap
    assert torch.compiler.load_compiled_function is patched

    first = patched(None, f_globals={})
    assert first._artifacts.compiled_fn.finalize_loading("config") is None
    assert first._artifacts.compiled_fn(1, 2) == 3  # the function itself is untouched
    second = patched(None)
    second._artifacts.compiled_fn.finalize_loading("config")
    assert artifact.finalized == "config"  # an artifact's own finalising is kept
    assert patched(None) is not None  # something without artifacts passes through


def test_the_plugin_is_registered_for_every_vllm_process():
    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["aifactory_cpu_compile_cache"] == (
        "serving.engine.cpu_compile_cache:load_cpu_compiled_models")
