"""With greedy sampling the platform returns what plain `vllm serve` returns for the same
request; this also proves the demo model loads under plain `vllm serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import ENDPOINTS

PROMPTS = ["The licence", "Permission is hereby granted", "Copyright (C)"]
CHATS = [[{"role": "user", "content": "What does the GPL require?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bare_vllm(platform):
    port = _free_port()
    model = str(platform["home"] / "models" / "demo")
    log = open(platform["home"] / "bare-vllm.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--served-model-name", "demo", "--port", str(port), "--max-model-len", "512",
         "--dtype", "bfloat16", "--kv-cache-memory-bytes", str(128 * 1024**2),
         "--enforce-eager"],  # as platform.yaml: the same kernels give the same tokens
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"vllm serve exited; see {log.name}"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not start"
            time.sleep(1)
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.parametrize("model", ENDPOINTS)
def test_greedy_completions_match_vllm_serve(client, bare_vllm, model):
    for prompt in PROMPTS:
        ours = client.completions.create(model=model, prompt=prompt, max_tokens=16,
                                         temperature=0, logprobs=1)
        theirs = bare_vllm.completions.create(model="demo", prompt=prompt, max_tokens=16,
                                              temperature=0, logprobs=1)
        assert ours.choices[0].logprobs.tokens == theirs.choices[0].logprobs.tokens
        assert ours.choices[0].text == theirs.choices[0].text
        assert ours.usage == theirs.usage


@pytest.mark.parametrize("model", ENDPOINTS)
def test_greedy_chat_matches_vllm_serve(client, bare_vllm, model):
    for messages in CHATS:
        ours = client.chat.completions.create(model=model, messages=messages, max_tokens=16,
                                              temperature=0)
        theirs = bare_vllm.chat.completions.create(model="demo", messages=messages,
                                                   max_tokens=16, temperature=0)
        assert ours.choices[0].message.content == theirs.choices[0].message.content
        assert ours.usage == theirs.usage
