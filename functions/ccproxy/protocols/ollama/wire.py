"""Ollama's wire format as both halves read and write it: the request
bodies, and the shapes of tool calls and their arguments."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...jsonutil import loads_object

# Ollama streams NDJSON, whichever way the stream goes.
STREAM_MEDIA_TYPE = "application/x-ndjson"

# ---------------------------------------------------------------- wire models


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class WireFunction(WireModel):
    name: str
    arguments: dict[str, Any] | str | None = None


class WireCall(WireModel):
    id: str | None = None
    function: WireFunction


class WireMessage(WireModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[WireCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class WireOptions(WireModel):
    num_predict: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] | str | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class WireCommon(WireModel):
    model: str
    format: str | dict[str, Any] | None = None
    options: WireOptions | None = None
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    stream: bool | None = True


class WireChatRequest(WireCommon):
    messages: list[WireMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class WireGenerateRequest(WireCommon):
    prompt: str = ""
    system: str | None = None
    images: list[str] | None = None


class WireEmbedRequest(WireModel):
    model: str
    input: str | list[str]
    dimensions: int | None = None


# ---------------------------------------------------------------- tool calls


def wire_call(index: int, call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tool call as a message's `tool_calls` entry."""
    return {"id": call_id, "function": {"index": index, "name": name, "arguments": arguments}}


def arguments_of(value: dict[str, Any] | str | None) -> dict[str, Any]:
    """A call's arguments as an object, whether they came as one or as a
    JSON string."""
    return value if isinstance(value, dict) else loads_object(value or "")
