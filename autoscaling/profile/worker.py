"""The measuring process: builds one vLLM engine and times it, then writes raw samples as JSON.

Run by autoscaling.profile.run in a fresh interpreter (`python -m autoscaling.profile.worker
PLAN OUT`), so that starting a process is a real phase of the cold start. Its first line
reads the clock before anything heavy is imported. It writes wall-clock timestamps
(time.time(), comparable with the parent's and with vLLM's log lines) for the phases it
sees, and the raw per-repeat samples; fitting is the parent's job (autoscaling.profile.fit).

What is timed (all through AsyncLLM, the engine the platform hosts):
- prefill: one request alone with a prompt of L random token ids and max_tokens=1, from
  submission to its first token. Every prompt is fresh random ids, so prefix caching never
  hits.
- decode: B requests submitted together (short prompts, ignore_eos, the same max_tokens);
  each request's step time is (last token - first token) / (tokens - 1), which stays right
  when the front end hands over several tokens at once. The batch is B throughout, since the
  requests start and end together.
"""

import time

STARTED = time.time()

import asyncio
import json
import os
import random
import sys
import uuid

DECODE_PROMPT_TOKENS = 8


def _prompt(rng: random.Random, length: int, vocab: int):
    from vllm.inputs import TokensPrompt

    # Ids below 16 are left out: the demo tokenizer's specials sit there, and an end-of-
    # sequence id in a prompt is legal but untypical.
    return TokensPrompt(prompt_token_ids=[rng.randrange(16, vocab) for _ in range(length)])


async def _stream(engine, prompt, params) -> list[tuple[float, int]]:
    """(perf_counter, tokens so far) for every output of one request."""
    marks: list[tuple[float, int]] = []
    tokens = 0
    async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
        tokens += len(out.outputs[0].token_ids)
        marks.append((time.perf_counter(), tokens))
    return marks


async def _measure(plan: dict, result: dict) -> None:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    phases = result["phases"]
    phases["imported"] = time.time()
    try:
        engine_args = AsyncEngineArgs(model=plan["model"], **plan["engine_args"])
    except TypeError as exc:  # an unknown keyword: name it, as vLLM's parser would
        raise SystemExit(f"engine args: {exc}") from None
    vllm_config = engine_args.create_engine_config(usage_context=UsageContext.ENGINE_CONTEXT)
    phases["configured"] = time.time()
    engine = AsyncLLM.from_vllm_config(vllm_config=vllm_config,
                                       usage_context=UsageContext.ENGINE_CONTEXT)
    phases["engine_ready"] = time.time()
    try:
        cache = engine.vllm_config.cache_config
        result["kv_cache"] = {"blocks": cache.num_gpu_blocks, "block_size": cache.block_size}
        result["max_num_seqs"] = engine.vllm_config.scheduler_config.max_num_seqs
        result["max_model_len"] = engine.model_config.max_model_len
        longest = max(max(plan["prompt_lengths"]) + 1,
                      DECODE_PROMPT_TOKENS + plan["decode_tokens"])
        if longest > result["max_model_len"]:
            raise SystemExit(f"a measuring request of {longest} tokens does not fit the engine's "
                             f"max_model_len {result['max_model_len']}: give shorter "
                             "--prompt-lengths or --decode-tokens")
        vocab = engine.model_config.get_vocab_size()
        rng = random.Random(plan["seed"])

        def params(max_tokens: int) -> SamplingParams:
            return SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                                  output_kind=RequestOutputKind.DELTA)

        # max_tokens=1: the request ends with its first token.
        await _stream(engine, _prompt(rng, DECODE_PROMPT_TOKENS, vocab), params(1))
        phases["first_token"] = time.time()
        # A few untimed requests of every shape to come, so no lazy set-up is timed below.
        for length in plan["prompt_lengths"]:
            await _stream(engine, _prompt(rng, length, vocab), params(1))
        await asyncio.gather(*(_stream(engine, _prompt(rng, DECODE_PROMPT_TOKENS, vocab),
                                       params(4)) for _ in range(max(plan["batch_sizes"]))))

        prefill = result["prefill"]
        for _ in range(plan["repeats"]):
            for length in plan["prompt_lengths"]:
                sent = time.perf_counter()
                marks = await _stream(engine, _prompt(rng, length, vocab), params(1))
                prefill.setdefault(str(length), []).append(marks[0][0] - sent)

        decode = result["decode"]
        tokens = plan["decode_tokens"]
        for _ in range(plan["repeats"]):
            for batch in plan["batch_sizes"]:
                runs = await asyncio.gather(*(
                    _stream(engine, _prompt(rng, DECODE_PROMPT_TOKENS, vocab), params(tokens))
                    for _ in range(batch)))
                steps = sorted((marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])
                               for marks in runs if marks[-1][1] > marks[0][1])
                decode.setdefault(str(batch), []).append(steps[len(steps) // 2])
    finally:
        engine.shutdown()


def main(argv: list[str]) -> int:
    plan_path, out_path = argv
    with open(plan_path, encoding="utf-8") as f:
        plan = json.load(f)
    result: dict = {"phases": {"started": STARTED}, "prefill": {}, "decode": {}}
    asyncio.run(_measure(plan, result))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    # The engine is shut down; leave without the interpreter's teardown, in which vLLM's
    # AsyncLLM.__del__ would shut it down again with its modules half gone.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
