"""Inference results in OpenAI's shapes: chat, completions, models, embeddings, Responses."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from aifactory_sdk.types._result import Result

# Inference


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | None = None


class ChatChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(Result):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    delta: ChatDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One streamed event; the last one (no choices) carries the usage."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    text: str
    finish_reason: str | None = None


class Completion(Result):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunk(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = None


class ModelList(Result):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelCard(Model, Result):
    """One model, as `models.retrieve` answers."""


class Embedding(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str  # a base64 string when asked with encoding_format="base64"


class EmbeddingList(Result):
    object: Literal["list"] = "list"
    model: str | None = None
    data: list[Embedding]
    usage: Usage


# The Responses API


class ResponseUsage(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ResponseObject(Result):
    """A model response (OpenAI's `Response`): `output` holds its items (messages, tool
    calls, reasoning) as the platform sends them; `output_text` joins the message text."""

    id: str
    object: Literal["response"] = "response"
    created_at: float
    model: str
    status: str | None = None
    output: list[dict[str, Any]]
    previous_response_id: str | None = None
    usage: ResponseUsage | None = None

    @property
    def output_text(self) -> str:
        return "".join(part.get("text", "") for item in self.output
                       if item.get("type") == "message"
                       for part in item.get("content") or []
                       if part.get("type") == "output_text")


class ResponseStreamEvent(BaseModel):
    """One event of a streamed response, by `type`: e.g. `response.output_text.delta`
    carries `delta`; the closing one (`response.completed`, `.incomplete` or `.failed`)
    carries the whole `response` with its usage."""

    CLOSING_TYPES: ClassVar[frozenset[str]] = frozenset(
        {"response.completed", "response.incomplete", "response.failed"})
    model_config = ConfigDict(extra="allow")
    type: str
    sequence_number: int | None = None
    delta: str | None = None
    response: ResponseObject | None = None

    @property
    def closes(self) -> bool:
        return self.type in self.CLOSING_TYPES

    @property
    def usage(self) -> Usage | None:
        """The closing event's token counts, in chat's terms."""
        counted = None if self.response is None else self.response.usage
        if counted is None:
            return None
        return Usage(prompt_tokens=counted.input_tokens,
                     completion_tokens=counted.output_tokens,
                     total_tokens=counted.total_tokens)


class DeletedResponse(Result):
    id: str
    object: Literal["response"] = "response"
    deleted: bool
