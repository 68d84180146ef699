"""A stream's token counts as the engine made them, event by event. The engine is asked for
vLLM's continuous usage stats (each event carries its choice's running counts), so a stream
that ends early — its client gone, its engine broken — is billed the tokens the engine
produced up to its last relayed event, not an estimate. The running counts are cut from the
events again unless the client asked for them. Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

_USAGE = ',"usage":'
_CHOICE_INDEX = '"choices":[{"index":'
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class StreamWants:
    """What the client asked of a stream: the final usage event (`include_usage`), the
    running counts in every event (`continuous_usage_stats`), token ids."""

    usage: bool = False
    running: bool = False
    choices_per_prompt: int = 1
    token_ids: bool = False  # vLLM's `return_token_ids`


def stream_wants(options: dict[str, Any], n: Any, token_ids: Any = None) -> StreamWants:
    return StreamWants(usage=options.get("include_usage") is True,
                       running=options.get("continuous_usage_stats") is True,
                       choices_per_prompt=n if isinstance(n, int) and n > 0 else 1,
                       token_ids=token_ids is True)


@dataclass
class RunningUsage:
    """The last running counts seen for each choice of one stream."""

    wants: StreamWants
    by_choice: dict[int, tuple[int, int]] = field(default_factory=dict)

    def take(self, event: str) -> str:
        """Note the event's running counts; the event as the client should see it."""
        at = event.rfind(_USAGE)
        if at < 0:
            return event
        try:
            usage, end = _DECODER.raw_decode(event, at + len(_USAGE))
            index = self._choice_index(event)
            self.by_choice[index] = (int(usage["prompt_tokens"]),
                                     int(usage["completion_tokens"]))
        except (ValueError, KeyError, TypeError):
            return event  # not vLLM's shape: forwarded untouched, counted as an event
        return event if self.wants.running else event[:at] + event[end:]

    @staticmethod
    def _choice_index(event: str) -> int:
        at = event.find(_CHOICE_INDEX)
        if at < 0:
            raise ValueError("no choice index")
        index, _ = _DECODER.raw_decode(event, at + len(_CHOICE_INDEX))
        if not isinstance(index, int):
            raise ValueError("choice index is not an integer")
        return index

    def totals(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens so far; None before any running count. A prompt's
        tokens count once however many choices it has, as in vLLM's final usage."""
        if not self.by_choice:
            return None
        prompts: dict[int, int] = {}
        for index, (prompt, _) in self.by_choice.items():
            prompts[index // self.wants.choices_per_prompt] = prompt
        completion = sum(done for _, done in self.by_choice.values())
        return sum(prompts.values()), completion
