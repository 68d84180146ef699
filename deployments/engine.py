"""The engine deployment: one Ray Serve replica hosting one vLLM engine for one endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from deployments.replica_logging import log_to_serve_replica_log
from serving.engine import EngineHost
from serving.engine.stats import EngineLoadRecorder

logger = logging.getLogger(__name__)

LOAD_REPORT_PERIOD_S = 1.0


class EngineDeployment:
    """Ray Serve replica class (wrapped with `serve.deployment` by the app builder).

    `generate` yields a head first (`{"status", "body"}` or `{"status": 200, "stream": True,
    "first": <first SSE event>}`), then the remaining SSE events as vLLM makes them. Carrying the
    first event in the head saves one hop before the first token."""

    async def __init__(self, name: str, model_path: str, engine_args: dict[str, Any],
                       autoscaler=None) -> None:
        """`autoscaler`: the partition controller's handle when this endpoint is autoscaled;
        the replica then reports its engine's load to it every LOAD_REPORT_PERIOD_S."""
        log_to_serve_replica_log()
        self.name = name
        recorder = EngineLoadRecorder() if autoscaler is not None else None
        loggers = [recorder.stat_logger_factory()] if recorder is not None else []
        self.host = await EngineHost.start(model_path, name, engine_args, stat_loggers=loggers)
        self._reporting = None
        if recorder is not None:
            from ray import serve

            replica = serve.get_replica_context().replica_id.unique_id
            self._reporting = asyncio.get_running_loop().create_task(
                self._report_load(autoscaler, recorder, replica))

    async def _report_load(self, autoscaler, recorder: EngineLoadRecorder, replica: str) -> None:
        while True:
            await asyncio.sleep(LOAD_REPORT_PERIOD_S)
            sample = recorder.drain()
            try:
                await autoscaler.report_engine.remote(self.name, replica, sample.to_dict())
            except Exception as exc:  # the controller restarts; serving goes on meanwhile
                logger.warning("autoscaler unreachable: %r", exc)

    async def generate(self, kind: str, body: dict[str, Any], request_id: str) -> AsyncIterator[Any]:
        reply = await self.host.handle(kind, body, request_id)
        if reply.stream is None:
            yield {"status": reply.status, "body": reply.body}
            return
        stream = reply.stream
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            yield {"status": reply.status, "stream": True, "first": None}
            return
        yield {"status": reply.status, "stream": True, "first": first}
        async for chunk in stream:
            yield chunk

    async def card(self) -> dict[str, Any]:
        return {"root": self.host.args.model, "max_model_len": self.host.max_model_len}

    async def load(self) -> dict[str, float]:
        return self.host.load()

    async def check_health(self) -> None:
        # Ray Serve calls this periodically; a dead engine core makes the replica unhealthy
        # and Serve replaces it.
        await asyncio.wait_for(self.host.check_health(), 10)

    def __del__(self) -> None:
        host = getattr(self, "host", None)
        if host is not None:
            host.shutdown()
