"""The official SDKs as clients of the proxy, behind one small interface.

Each driver speaks one client protocol through its official SDK and reports
what the SDK parsed as an `Outcome`, so the same test runs for every pair of
client and upstream protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anthropic
import ollama
import openai
from google import genai
from google.genai import types as gtypes

ACCESS_KEY = "ccp-test-access-key"

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Current time in a timezone",
    "parameters": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}
TOOLS = [WEATHER, TIME]
QUESTION = "What's the weather in Paris?"
TOOL_RESULT = "22C and sunny"


@dataclass
class Outcome:
    text: str = ""
    thinking: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    stop: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Every model name the answer (each chunk of a stream) reported.
    models: set[str] = field(default_factory=set)


@dataclass
class Failure:
    status: int | None
    message: str
    kind: str  # the SDK exception class name


class OpenAIDriver:
    protocol = "openai"

    def __init__(self, base_url: str) -> None:
        self.client = openai.OpenAI(base_url=base_url + "/v1", api_key=ACCESS_KEY, max_retries=0)

    def _tools(self):
        return [{"type": "function", "function": t} for t in TOOLS]

    def chat(self, model: str, *, stream: bool, tools: bool = False, thinking: bool = False, messages=None) -> Outcome:
        kwargs: dict[str, Any] = {"model": model, "messages": messages or [{"role": "user", "content": QUESTION}]}
        if tools:
            kwargs["tools"] = self._tools()
        if thinking:
            kwargs["reasoning_effort"] = "low"
        models: set[str] = set()
        if not stream:
            completion = self.client.chat.completions.create(**kwargs)
        else:
            with self.client.chat.completions.stream(**kwargs, stream_options={"include_usage": True}) as s:
                for event in s:
                    if event.type == "chunk":
                        models.add(event.chunk.model)
                completion = s.get_final_completion()
        models.add(completion.model)
        choice = completion.choices[0]
        message = choice.message
        calls = message.tool_calls or []
        import json

        return Outcome(
            text=message.content or "",
            thinking=getattr(message, "reasoning_content", None) or (message.model_extra or {}).get("reasoning_content") or "",
            calls=[(c.function.name, json.loads(c.function.arguments)) for c in calls],
            call_ids=[c.id for c in calls],
            stop=choice.finish_reason,
            input_tokens=completion.usage.prompt_tokens if completion.usage else None,
            output_tokens=completion.usage.completion_tokens if completion.usage else None,
            models=models,
        )

    def round_trip(self, model: str, call_id: str, *, stream: bool) -> Outcome:
        import json

        messages = [
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
        ]
        return self.chat(model, stream=stream, tools=True, messages=messages)

    def fail(self, model: str, *, stream: bool) -> Failure:
        try:
            if stream:
                for _ in self.client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": QUESTION}], stream=True
                ):
                    pass
            else:
                self.client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
        except openai.APIStatusError as exc:
            return Failure(exc.status_code, exc.message, type(exc).__name__)
        except openai.APIError as exc:
            return Failure(None, exc.message, type(exc).__name__)
        raise AssertionError("the SDK raised nothing")


class ClaudeDriver:
    protocol = "claude"

    def __init__(self, base_url: str) -> None:
        self.client = anthropic.Anthropic(base_url=base_url, api_key=ACCESS_KEY, max_retries=0)

    def _tools(self):
        return [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]

    def chat(self, model: str, *, stream: bool, tools: bool = False, thinking: bool = False, messages=None) -> Outcome:
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": 4096,
            "messages": messages or [{"role": "user", "content": QUESTION}],
        }
        if tools:
            kwargs["tools"] = self._tools()
        if thinking:
            kwargs["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if stream:
            with self.client.messages.stream(**kwargs) as s:
                for _ in s:
                    pass
                message = s.get_final_message()
        else:
            message = self.client.messages.create(**kwargs)
        outcome = Outcome(stop=message.stop_reason, models={message.model})
        for block in message.content:
            if block.type == "text":
                outcome.text += block.text
            elif block.type == "thinking":
                outcome.thinking += block.thinking
            elif block.type == "tool_use":
                outcome.calls.append((block.name, dict(block.input or {})))
                outcome.call_ids.append(block.id)
        usage = message.usage
        outcome.input_tokens = (usage.input_tokens or 0) + (usage.cache_read_input_tokens or 0) + (
            usage.cache_creation_input_tokens or 0
        )
        outcome.output_tokens = usage.output_tokens
        return outcome

    def round_trip(self, model: str, call_id: str, *, stream: bool) -> Outcome:
        messages = [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": TOOL_RESULT}]},
        ]
        return self.chat(model, stream=stream, tools=True, messages=messages)

    def fail(self, model: str, *, stream: bool) -> Failure:
        try:
            kwargs = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": QUESTION}]}
            if stream:
                with self.client.messages.stream(**kwargs) as s:
                    for _ in s:
                        pass
            else:
                self.client.messages.create(**kwargs)
        except anthropic.APIStatusError as exc:
            return Failure(exc.status_code, exc.message, type(exc).__name__)
        except anthropic.APIError as exc:
            return Failure(None, exc.message, type(exc).__name__)
        raise AssertionError("the SDK raised nothing")


class GeminiDriver:
    protocol = "gemini"

    def __init__(self, base_url: str, api_version: str = "v1beta") -> None:
        self.client = genai.Client(
            api_key=ACCESS_KEY, http_options=gtypes.HttpOptions(base_url=base_url, api_version=api_version)
        )

    def _config(self, tools: bool, thinking: bool) -> gtypes.GenerateContentConfig:
        config: dict[str, Any] = {"automatic_function_calling": {"disable": True}}
        if tools:
            config["tools"] = [gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**t) for t in TOOLS])]
        if thinking:
            config["thinking_config"] = gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
        return gtypes.GenerateContentConfig(**config)

    def chat(self, model: str, *, stream: bool, tools: bool = False, thinking: bool = False, contents=None) -> Outcome:
        contents = contents or [gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)])]
        config = self._config(tools, thinking)
        chunks = (
            list(self.client.models.generate_content_stream(model=model, contents=contents, config=config))
            if stream
            else [self.client.models.generate_content(model=model, contents=contents, config=config)]
        )
        outcome = Outcome()
        for chunk in chunks:
            if chunk.model_version:
                outcome.models.add(chunk.model_version)
            for candidate in chunk.candidates or []:
                for part in (candidate.content.parts if candidate.content else None) or []:
                    if part.function_call:
                        outcome.calls.append((part.function_call.name, dict(part.function_call.args or {})))
                        outcome.call_ids.append(part.function_call.id or "")
                    elif part.text and part.thought:
                        outcome.thinking += part.text
                    elif part.text:
                        outcome.text += part.text
                if candidate.finish_reason:
                    outcome.stop = candidate.finish_reason.value if hasattr(candidate.finish_reason, "value") else str(candidate.finish_reason)
            if chunk.usage_metadata:
                meta = chunk.usage_metadata
                outcome.input_tokens = meta.prompt_token_count
                outcome.output_tokens = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
        return outcome

    def round_trip(self, model: str, call_id: str, *, stream: bool) -> Outcome:
        contents = [
            gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)]),
            gtypes.Content(
                role="model",
                parts=[gtypes.Part(function_call=gtypes.FunctionCall(id=call_id or None, name="get_weather", args={"city": "Paris"}))],
            ),
            gtypes.Content(
                role="user",
                parts=[
                    gtypes.Part(
                        function_response=gtypes.FunctionResponse(
                            id=call_id or None, name="get_weather", response={"output": TOOL_RESULT}
                        )
                    )
                ],
            ),
        ]
        return self.chat(model, stream=stream, tools=True, contents=contents)

    def fail(self, model: str, *, stream: bool) -> Failure:
        from google.genai import errors

        try:
            self.chat(model, stream=stream)
        except errors.APIError as exc:
            return Failure(exc.code, exc.message or "", type(exc).__name__)
        raise AssertionError("the SDK raised nothing")


class OllamaDriver:
    protocol = "ollama"

    def __init__(self, base_url: str) -> None:
        self.client = ollama.Client(host=base_url, headers={"Authorization": f"Bearer {ACCESS_KEY}"})

    def _tools(self):
        return [{"type": "function", "function": t} for t in TOOLS]

    def chat(self, model: str, *, stream: bool, tools: bool = False, thinking: bool = False, messages=None) -> Outcome:
        kwargs: dict[str, Any] = {"model": model, "messages": messages or [{"role": "user", "content": QUESTION}]}
        if tools:
            kwargs["tools"] = self._tools()
        if thinking:
            kwargs["think"] = True
        responses = list(self.client.chat(**kwargs, stream=True)) if stream else [self.client.chat(**kwargs)]
        outcome = Outcome()
        for response in responses:
            message = response.message
            outcome.models.add(response.model)
            outcome.text += message.content or ""
            outcome.thinking += message.thinking or ""
            for call in message.tool_calls or []:
                outcome.calls.append((call.function.name, dict(call.function.arguments)))
                outcome.call_ids.append(getattr(call, "id", "") or "")
            if response.done:
                outcome.stop = response.done_reason
                outcome.input_tokens = response.prompt_eval_count
                outcome.output_tokens = response.eval_count
        return outcome

    def round_trip(self, model: str, call_id: str, *, stream: bool) -> Outcome:
        messages = [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": TOOL_RESULT, "tool_name": "get_weather"},
        ]
        return self.chat(model, stream=stream, tools=True, messages=messages)

    def fail(self, model: str, *, stream: bool) -> Failure:
        try:
            self.chat(model, stream=stream)
        except ollama.ResponseError as exc:
            return Failure(exc.status_code, exc.error, type(exc).__name__)
        raise AssertionError("the SDK raised nothing")


class ResponsesDriver:
    """The OpenAI Responses API through the openai SDK: `responses.create`
    whole, `responses.stream()` for streams (it checks the event order and
    assembles the final response), and raw `create(stream=True)` events for
    failures, which a Responses stream reports as events, not exceptions."""

    protocol = "responses"

    def __init__(self, base_url: str) -> None:
        self.client = openai.OpenAI(base_url=base_url + "/v1", api_key=ACCESS_KEY, max_retries=0)

    def _tools(self):
        # strict: False keeps each schema as written (left out, the API makes
        # every property required).
        return [{"type": "function", **t, "strict": False} for t in TOOLS]

    def chat(self, model: str, *, stream: bool, tools: bool = False, thinking: bool = False, messages=None) -> Outcome:
        kwargs: dict[str, Any] = {"model": model, "input": messages or [{"role": "user", "content": QUESTION}]}
        if tools:
            kwargs["tools"] = self._tools()
        if thinking:
            kwargs["reasoning"] = {"effort": "low", "summary": "auto"}
        models: set[str] = set()
        if not stream:
            response = self.client.responses.create(**kwargs)
        else:
            deltas = []
            with self.client.responses.stream(**kwargs) as s:
                for event in s:
                    if event.type in ("response.created", "response.in_progress", "response.completed"):
                        models.add(event.response.model)
                    elif event.type == "response.output_text.delta":
                        deltas.append(event.delta)
                response = s.get_final_response()
            assert "".join(deltas) == response.output_text, "the text deltas and response.completed disagree"
        models.add(response.model)
        return self._outcome(response, models)

    @staticmethod
    def _outcome(response, models: set[str]) -> Outcome:
        import json

        outcome = Outcome(text=response.output_text, stop=response.status, models=models)
        for item in response.output:
            if item.type == "reasoning":
                outcome.thinking += "".join(s.text for s in item.summary)
                outcome.thinking += "".join(c.text for c in item.content or [])
            elif item.type == "function_call":
                outcome.calls.append((item.name, json.loads(item.arguments)))
                outcome.call_ids.append(item.call_id)
            elif item.type == "custom_tool_call":
                outcome.calls.append((item.name, {"input": item.input}))
                outcome.call_ids.append(item.call_id)
        if response.usage is not None:
            outcome.input_tokens = response.usage.input_tokens
            outcome.output_tokens = response.usage.output_tokens
        return outcome

    def round_trip(self, model: str, call_id: str, *, stream: bool) -> Outcome:
        import json

        items = [
            {"role": "user", "content": QUESTION},
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            {"type": "function_call_output", "call_id": call_id, "output": TOOL_RESULT},
        ]
        return self.chat(model, stream=stream, tools=True, messages=items)

    def fail(self, model: str, *, stream: bool) -> Failure:
        try:
            if not stream:
                self.client.responses.create(model=model, input=QUESTION)
            else:
                for event in self.client.responses.create(model=model, input=QUESTION, stream=True):
                    if event.type == "error":
                        return Failure(None, event.message, type(event).__name__)
                    if event.type == "response.failed":
                        error = event.response.error
                        return Failure(None, error.message if error else "", type(event).__name__)
        except openai.APIStatusError as exc:
            return Failure(exc.status_code, exc.message, type(exc).__name__)
        except openai.APIError as exc:
            return Failure(None, exc.message, type(exc).__name__)
        raise AssertionError("the SDK raised nothing and the stream reported no error")


DRIVERS = {d.protocol: d for d in (OpenAIDriver, ClaudeDriver, GeminiDriver, OllamaDriver, ResponsesDriver)}
