"""The OpenAI Responses API codec: Codex's requests decoded, answers and
streams checked by the openai SDK's own models and stream accumulator, an
upstream's event stream split anywhere, and signatures of other vendors
carried through a Responses client and back."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from ccproxy.errors import ProxyError
from ccproxy.protocols import CODECS
from ccproxy.protocols.base import ClientContext
from ccproxy.protocols.common import CUSTOM_INPUT
from ccproxy.protocols.responses import ResponsesCodec
from ccproxy.protocols.responses.wire import MARK, pack_reasoning, unpack_reasoning
from ccproxy.unified import (
    Accumulator,
    Finish,
    Message,
    RedactedThinking,
    Request,
    Response,
    SearchResult,
    ServerToolRun,
    ServerToolUse,
    Start,
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ThinkingSignature,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolResult,
    Usage,
    UsageUpdate,
)
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseItemList, ResponseStreamEvent
from pydantic import TypeAdapter

codec = CODECS["responses"]
CTX = ClientContext()

# ---------------------------------------------------------------- a request as Codex sends it

APPLY_PATCH_GRAMMAR = r"""start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""

SHELL_TOOL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command and returns its output.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
            "workdir": {"type": "string", "description": "The working directory to execute the command in"},
            "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
}
UPDATE_PLAN_TOOL = {
    "type": "function",
    "name": "update_plan",
    "description": "Updates the task plan.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {
            "explanation": {"type": "string"},
            "plan": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"step": {"type": "string"}, "status": {"type": "string"}},
                    "required": ["step", "status"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["plan"],
        "additionalProperties": False,
    },
}
APPLY_PATCH_TOOL = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH_GRAMMAR},
}
PATCH = "*** Begin Patch\n*** Update File: app.py\n@@\n-print('hi')\n+print('hello')\n*** End Patch\n"

CODEX_REQUEST = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex, based on GPT-5. You are running as a coding agent in the Codex CLI.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions instructions>sandbox: workspace-write"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context><cwd>/repo</cwd></environment_context>"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Make app.py say hello."}]},
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "**Inspecting app.py**"}],
            "content": None,
            "encrypted_content": "gAAAAABo-opaque-reasoning==",
        },
        {
            "type": "function_call",
            "name": "shell",
            "arguments": '{"command":["bash","-lc","cat app.py"],"workdir":"/repo"}',
            "call_id": "call_K1",
        },
        {"type": "function_call_output", "call_id": "call_K1", "output": "print('hi')\n"},
        {
            "type": "custom_tool_call",
            "status": "completed",
            "call_id": "call_P2",
            "name": "apply_patch",
            "input": PATCH,
        },
        {
            "type": "custom_tool_call_output",
            "call_id": "call_P2",
            "output": "Success. Updated the following files:\nM app.py\n",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Done: app.py says hello."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now run it."}]},
    ],
    "tools": [SHELL_TOOL, UPDATE_PLAN_TOOL, APPLY_PATCH_TOOL, {"type": "web_search"}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a1b2-session",
}


def test_a_codex_request_decodes_into_the_unified_form():
    request = codec.decode_request(CODEX_REQUEST, CTX)
    assert request.model == "gpt-5-codex"
    assert request.system.startswith("You are Codex")
    assert [m.role for m in request.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert request.messages[0].content == [Text(text="<permissions instructions>sandbox: workspace-write")]
    assert [p.text for p in request.messages[1].content] == [
        "<environment_context><cwd>/repo</cwd></environment_context>",
        "Make app.py say hello.",
    ]
    thinking, shell = request.messages[2].content
    assert isinstance(thinking, Thinking) and thinking.origin == "responses"
    assert thinking.text == "**Inspecting app.py**"
    assert unpack_reasoning(thinking.signature) == (None, "gAAAAABo-opaque-reasoning==")
    assert shell == ToolCall(
        id="call_K1", name="shell", arguments={"command": ["bash", "-lc", "cat app.py"], "workdir": "/repo"}
    )
    (result,) = request.messages[3].content
    assert result == ToolResult(id="call_K1", name="shell", content=[Text(text="print('hi')\n")])
    (patch,) = request.messages[4].content
    assert patch == ToolCall(id="call_P2", name="apply_patch", arguments={CUSTOM_INPUT: PATCH})
    assert request.messages[5].content[0].name == "apply_patch"
    assert request.messages[6].content == [Text(text="Done: app.py says hello.")]

    assert [(t.name, t.kind) for t in request.tools] == [
        ("shell", "function"),
        ("update_plan", "function"),
        ("apply_patch", "custom"),
    ]
    assert request.tools[2].format == APPLY_PATCH_TOOL["format"]
    assert request.tools[0].parameters == SHELL_TOOL["parameters"]
    assert [(t.kind, t.name, t.wire) for t in request.server_tools] == [("web_search", "web_search", {})]
    assert request.tool_choice.mode == "auto" and request.parallel_tool_calls is False
    assert request.reasoning.enabled and request.reasoning.effort == "medium" and request.reasoning.include_thoughts
    assert request.stream and request.store is False and request.continues is None
    facts = request.client_state["responses"]
    assert facts["include"] == ["reasoning.encrypted_content"]
    assert facts["prompt_cache_key"] == "0199a1b2-session"
    assert facts["builtin"] == [{"type": "web_search"}]


def test_the_plain_forms_of_a_request():
    request = codec.decode_request(
        {
            "model": "m",
            "input": "hello",
            "previous_response_id": "resp_1",
            "max_output_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.5,
            "tool_choice": {"type": "custom", "name": "apply_patch"},
            "tools": [APPLY_PATCH_TOOL],
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "none"},
        },
        CTX,
    )
    assert request.messages == [Message(role="user", content=[Text(text="hello")])]
    assert request.continues == "resp_1" and request.store is True and not request.stream
    assert (request.max_tokens, request.temperature, request.top_p) == (300, 0.2, 0.5)
    assert request.tool_choice.mode == "tool" and request.tool_choice.name == "apply_patch"
    assert request.response_format.type == "json_schema" and request.response_format.strict
    assert request.reasoning.enabled is False and not request.reasoning.include_thoughts


def test_images_and_files_in_the_input():
    request = codec.decode_request(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png"},
                        {
                            "type": "input_file",
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                        },
                        {"type": "input_file", "filename": "notes.txt", "file_data": "data:text/plain;base64,aGk="},
                        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
                    ],
                },
                {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [
                        {"type": "input_text", "text": "a picture:"},
                        {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/"},
                    ],
                },
            ],
        },
        CTX,
    )
    inline, remote, pdf, text, by_url = request.messages[0].content
    assert (inline.media_type, inline.data, remote.url) == ("image/png", "iVBORw0KGgo=", "https://example.com/cat.png")
    assert (pdf.media_type, pdf.data, pdf.title) == ("application/pdf", "JVBERi0=", "a.pdf")
    assert (text.media_type, text.text) == ("text/plain", "hi")
    assert by_url.url == "https://example.com/b.pdf"
    (result,) = request.messages[2].content
    assert result.name == "look" and [p.type for p in result.content] == ["text", "image"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input.0.call_id"),
        ({"model": "m", "input": [{"role": "robot", "content": "hi"}]}, "input.0.role"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            "input.0.content.0.file_id",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input.0.content.0.file_id",
        ),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input.0.content.0.type"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0"),
        ({"model": "m", "input": [{"type": "computer_call_output", "call_id": "c"}]}, "input.0.type"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"model": "m", "input": "hi", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ],
)
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(ProxyError) as caught:
        codec.decode_request(body, CTX)
    assert caught.value.status == 400
    assert field in caught.value.message and caught.value.param.startswith(field.split(".")[0])


# ---------------------------------------------------------------- whole answers, checked by the SDK


def client_request(**extra) -> Request:
    body = {
        "model": "client-alias",
        "input": "go",
        "tools": [SHELL_TOOL, APPLY_PATCH_TOOL],
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "high", "summary": "auto"},
        **extra,
    }
    return codec.decode_request(body, CTX)


def sdk_response(body: dict) -> SDKResponse:
    return SDKResponse.model_validate(body)


def test_a_text_answer_is_a_valid_response():
    request = client_request()
    request.answer_id = "resp_kept_by_the_proxy"
    answer = Response(
        content=[Text(text="Hello "), Text(text="there")],
        usage=Usage(input_tokens=10, output_tokens=4, cache_read_tokens=6),
    )
    body = codec.encode_response(answer, request)
    parsed = sdk_response(body)
    assert parsed.id == "resp_kept_by_the_proxy" and parsed.model == "client-alias"
    assert parsed.status == "completed" and parsed.output_text == "Hello there"
    assert parsed.usage.input_tokens == 10 and parsed.usage.input_tokens_details.cached_tokens == 6
    assert parsed.usage.total_tokens == 14
    assert [t.type for t in parsed.tools] == ["function", "custom"]
    assert parsed.tools[1].format.type == "grammar"


def test_calls_answer_as_function_and_custom_tool_calls():
    request = client_request()
    answer = Response(
        content=[
            ToolCall(id="call_1", name="shell", arguments={"command": ["ls"]}),
            ToolCall(id="call_2", name="apply_patch", arguments={CUSTOM_INPUT: PATCH}),
        ],
        stop_reason="tool_use",
    )
    parsed = sdk_response(codec.encode_response(answer, request))
    function, custom = parsed.output
    assert function.type == "function_call" and function.call_id == "call_1" and function.id.startswith("fc_")
    assert json.loads(function.arguments) == {"command": ["ls"]}
    assert custom.type == "custom_tool_call" and custom.call_id == "call_2" and custom.input == PATCH


def test_reasoning_shows_its_summary_and_carries_its_signature():
    request = client_request()
    answer = Response(content=[Thinking(text="Let me think.", signature="c2ln", origin="claude"), Text(text="42")])
    parsed = sdk_response(codec.encode_response(answer, request))
    reasoning, message = parsed.output
    assert reasoning.summary[0].text == "Let me think."
    assert reasoning.encrypted_content.startswith(MARK)
    assert message.content[0].text == "42"

    quiet = client_request(include=[], reasoning={"effort": "high"})
    parsed = sdk_response(codec.encode_response(answer, quiet))
    assert [item.type for item in parsed.output] == ["message"]


def test_a_responses_upstreams_reasoning_goes_back_as_it_came():
    request = client_request()
    signature = pack_reasoning("rs_upstream", "gAAAA-encrypted")
    answer = Response(content=[Thinking(text="plan", signature=signature, origin="responses"), Text(text="ok")])
    (reasoning, _) = sdk_response(codec.encode_response(answer, request)).output
    assert reasoning.id == "rs_upstream" and reasoning.encrypted_content == "gAAAA-encrypted"


@pytest.mark.parametrize(
    "stop,status,reason",
    [
        ("max_tokens", "incomplete", "max_output_tokens"),
        ("context_window", "incomplete", "max_output_tokens"),
        ("refusal", "incomplete", "content_filter"),
        ("end_turn", "completed", None),
        ("stop_sequence", "completed", None),
    ],
)
def test_stop_reasons_become_statuses(stop, status, reason):
    answer = Response(content=[Text(text="partial")], stop_reason=stop)
    parsed = sdk_response(codec.encode_response(answer, client_request()))
    assert parsed.status == status
    assert (parsed.incomplete_details.reason if parsed.incomplete_details else None) == reason


def test_a_web_search_is_a_call_item_and_its_sources_are_cited():
    use = ServerToolUse(
        id="srv_1",
        name="web_search",
        input={"query": "weather"},
        results=[SearchResult(url="https://w.example", title="W")],
    )
    answer = Response(content=[use, Text(text="Sunny.")])
    parsed = sdk_response(codec.encode_response(answer, client_request()))
    search, message = parsed.output
    assert search.type == "web_search_call" and search.action.query == "weather"
    (citation,) = message.content[0].annotations
    assert (citation.url, citation.title, citation.end_index) == ("https://w.example", "W", len("Sunny."))


def test_errors_and_counts_in_the_openai_shape():
    error = codec.encode_error(ProxyError(429, "slow down", code="rate_limit_exceeded"))
    assert error == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    }
    assert codec.encode_count_response(12) == {"object": "response.input_tokens", "input_tokens": 12}
    count = codec.decode_count_request({"model": "m", "input": "hi", "stream": True}, CTX)
    assert not count.stream and count.messages[0].content == [Text(text="hi")]


# ---------------------------------------------------------------- streams, read by the SDK


def encode_stream(events: list, request: Request) -> bytes:
    encoder = codec.stream_encoder(request)
    return b"".join(encoder.feed(e) for e in events) + encoder.close()


EVENT = TypeAdapter(ResponseStreamEvent)


def sdk_events(body: bytes) -> list:
    """Each SSE record validated as the SDK's stream event, its name the
    event's type, numbered from 0."""
    events = []
    for record in body.decode().split("\n\n"):
        if not record:
            continue
        name_line, data_line = record.split("\n")
        data = json.loads(data_line[len("data: ") :])
        assert name_line == "event: " + data["type"]
        events.append(EVENT.validate_python(data))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def sdk_stream(body: bytes, tools: list | None = None):
    """The bytes as the openai SDK's stream helper reads them from the
    wire: its SSE decoder, its event models and its accumulator, which
    checks the events' order. Returns the events and the final response (or
    the error the helper raised)."""
    client = openai.OpenAI(
        api_key="k",
        base_url="http://ccproxy.test/v1",
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(
                lambda _: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
            )
        ),
    )
    with client.responses.stream(model="client-alias", input="go", tools=tools or []) as stream:
        events = list(stream)
        try:
            return events, stream.get_final_response()
        except RuntimeError as error:
            return events, error


THINK_AND_CALL = [
    Start(id="upstream-id", model="upstream-model"),
    ThinkingDelta("Let me "),
    ThinkingDelta("look."),
    ThinkingSignature("c2ln", "claude"),
    TextDelta("Checking "),
    TextDelta("the file."),
    ToolCallStart(0, "call_1", "shell"),
    ToolCallDelta(0, '{"command":'),
    ToolCallDelta(0, '["cat","app.py"]}'),
    ToolCallEnd(0),
    ToolCallStart(1, "call_2", "apply_patch"),
    ToolCallDelta(1, '{"input":"*** Begin'),
    ToolCallDelta(1, ' Patch\\n*** End Patch\\n"}'),
    ToolCallEnd(1),
    Finish("tool_use"),
    UsageUpdate(Usage(input_tokens=21, output_tokens=9, cache_read_tokens=5, reasoning_tokens=3)),
]

STREAMS = {
    "text": [
        Start(),
        TextDelta("Grüße aus 東京 ☀️"),
        Finish("end_turn"),
        UsageUpdate(Usage(input_tokens=3, output_tokens=2)),
    ],
    "think_and_call": THINK_AND_CALL,
    "unsigned_thinking": [Start(), ThinkingDelta("hmm"), TextDelta("ok"), Finish("end_turn")],
    "gemini_call_signature": [
        Start(),
        ToolCallStart(0, "call_g", "shell", signature="Z2VtaW5p", origin="gemini"),
        ToolCallDelta(0, '{"command":["ls"]}'),
        ToolCallEnd(0),
        Finish("tool_use"),
    ],
    "parallel_calls": [
        Start(),
        ToolCallStart(0, "call_a", "shell"),
        ToolCallStart(1, "call_b", "shell"),
        ToolCallDelta(0, '{"command":["a"]}'),
        ToolCallDelta(1, '{"command":["b"]}'),
        Finish("tool_use"),
        ToolCallEnd(0),
        ToolCallEnd(1),
    ],
    "redacted": [Start(), RedactedThinking("opaque", "claude"), TextDelta("hi"), Finish("end_turn")],
    "signed_text": [
        Start(),
        TextDelta("one "),
        ThinkingSignature("c2ln", "gemini"),
        TextDelta("message"),
        Finish("end_turn"),
    ],
    "search": [
        Start(),
        ServerToolRun(
            ServerToolUse(
                id="s1", name="web_search", input={"query": "q"}, results=[SearchResult(url="https://a.example")]
            )
        ),
        TextDelta("Found it."),
        Finish("end_turn"),
    ],
    "max_tokens": [
        Start(),
        TextDelta("cut sh"),
        Finish("max_tokens"),
        UsageUpdate(Usage(input_tokens=3, output_tokens=16)),
    ],
    "empty": [Start(), Finish("end_turn")],
    "no_start": [TextDelta("straight in"), Finish("end_turn")],
}


@pytest.mark.parametrize("name", STREAMS)
def test_every_stream_is_read_whole_by_the_sdk(name):
    request = client_request()
    body = encode_stream(STREAMS[name], request)
    events = sdk_events(body)
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert sorted(added) == sorted(done) and len(set(added)) == len(added)
    streamed, final = sdk_stream(body, [SHELL_TOOL, APPLY_PATCH_TOOL])
    assert [e.type for e in streamed] == [e.type for e in events]
    if name == "max_tokens":
        assert isinstance(final, RuntimeError) and events[-1].type == "response.incomplete"
        assert events[-1].response.incomplete_details.reason == "max_output_tokens"
        assert events[-1].response.output[0].status == "incomplete"
        return
    assert final.status == "completed" and final.model == "client-alias"
    assert [item.id for item in final.output] == done


def test_the_streamed_answer_holds_what_was_said():
    request = client_request()
    body = encode_stream(THINK_AND_CALL, request)
    _, final = sdk_stream(body, [SHELL_TOOL, APPLY_PATCH_TOOL])
    reasoning, message, shell, patch = final.output
    assert reasoning.summary[0].text == "Let me look." and reasoning.encrypted_content.startswith(MARK)
    assert message.content[0].text == "Checking the file."
    assert shell.type == "function_call" and json.loads(shell.arguments) == {"command": ["cat", "app.py"]}
    assert patch.type == "custom_tool_call" and patch.input == "*** Begin Patch\n*** End Patch\n"
    assert final.usage.input_tokens == 21 and final.usage.output_tokens_details.reasoning_tokens == 3
    events = sdk_events(body)
    custom = [e for e in events if e.type.startswith("response.custom_tool_call_input")]
    assert [e.type for e in custom] == ["response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"]
    assert custom[0].delta == patch.input


def test_thinking_is_not_shown_without_a_summary_but_its_signature_still_travels():
    request = client_request(reasoning={"effort": "high"})
    events = sdk_events(encode_stream(THINK_AND_CALL, request))
    assert not any(e.type.startswith("response.reasoning_summary") for e in events)
    reasoning = events[-1].response.output[0]
    assert reasoning.summary == [] and reasoning.encrypted_content.startswith(MARK)
    assert json.loads(reasoning.encrypted_content[len(MARK) :])["t"] == "Let me look."


def test_a_signature_that_comes_inside_text_follows_the_message():
    events = sdk_events(encode_stream(STREAMS["signed_text"], client_request()))
    message, reasoning = events[-1].response.output
    assert message.content[0].text == "one message"
    assert reasoning.type == "reasoning" and json.loads(reasoning.encrypted_content[len(MARK) :])["o"] == "gemini"


def test_an_error_ends_the_stream_as_a_failed_response():
    request = client_request()
    error = ProxyError(429, "Rate limit reached", kind="rate_limit", code="rate_limit_exceeded", retry_after=2.5)
    body = encode_stream([Start(), TextDelta("partial"), StreamError(error)], request)
    events = sdk_events(body)
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error.code == "rate_limit_exceeded"
    assert "try again in 2.5s" in failed.response.error.message
    assert b"response.completed" not in body
    streamed, final = sdk_stream(body)
    assert streamed[-1].type == "response.failed" and isinstance(final, RuntimeError)


def test_an_error_before_anything_still_opens_the_response():
    body = encode_stream([StreamError(ProxyError(503, "upstream fell over"))], client_request())
    assert [e.type for e in sdk_events(body)] == ["response.created", "response.in_progress", "response.failed"]
    assert json.loads(body.decode().split("data: ")[-1])["response"]["error"]["code"] == "server_error"


# ---------------------------------------------------------------- signatures of other vendors, there and back


def replayed(output: list[dict]) -> Request:
    """A Responses client's next request: the answer's items sent back."""
    return codec.decode_request(
        {
            "model": "m",
            "input": [{"role": "user", "content": "q"}, *output, {"role": "user", "content": "more"}],
            "tools": [SHELL_TOOL],
        },
        CTX,
    )


@pytest.mark.parametrize("summary", ["auto", None])
def test_a_claude_signature_survives_a_round_trip(summary):
    reasoning = {"effort": "high", "summary": summary} if summary else {"effort": "high"}
    request = client_request(reasoning=reasoning)
    thinking = Thinking(text="Careful now.", signature="claude-sig==", origin="claude")
    call = ToolCall(id="toolu_1", name="shell", arguments={"command": ["ls"]})
    whole = codec.encode_response(Response(content=[thinking, call], stop_reason="tool_use"), request)
    assert replayed(whole["output"]).messages[1].content == [thinking, call]

    streamed = encode_stream(
        [
            Start(),
            ThinkingDelta("Careful "),
            ThinkingDelta("now."),
            ThinkingSignature("claude-sig==", "claude"),
            ToolCallStart(0, "toolu_1", "shell"),
            ToolCallDelta(0, '{"command":["ls"]}'),
            ToolCallEnd(0),
            Finish("tool_use"),
        ],
        request,
    )
    output = json.loads(streamed.decode().split("data: ")[-1])["response"]["output"]
    assert replayed(output).messages[1].content == [thinking, call]


def test_redacted_thinking_and_gemini_call_signatures_survive_a_round_trip():
    request = client_request()
    redacted = Thinking(signature="opaque", redacted=True, origin="claude")
    call = ToolCall(id="call_g", name="shell", arguments={}, signature="Z2VtaW5p", origin="gemini")
    whole = codec.encode_response(Response(content=[redacted, call]), request)
    assert replayed(whole["output"]).messages[1].content == [redacted, call]


# ---------------------------------------------------------------- the upstream half: requests


def test_a_request_for_a_responses_upstream():
    request = codec.decode_request(CODEX_REQUEST, CTX)
    # Thinking from another vendor in history is not sent to this upstream.
    request.messages[2].content.insert(0, Thinking(text="x", signature="claude-sig", origin="claude"))
    body = codec.encode_request(request, "gpt-5")
    assert body["model"] == "gpt-5" and body["store"] is False and body["stream"] is True
    assert body["instructions"] == CODEX_REQUEST["instructions"]
    assert body["tools"] == [
        {**SHELL_TOOL},
        {**UPDATE_PLAN_TOOL},
        APPLY_PATCH_TOOL,
        {"type": "web_search"},
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content", "web_search_call.action.sources"]
    assert body["prompt_cache_key"] == "0199a1b2-session"
    assert "temperature" not in body
    kinds = [item.get("type") for item in body["input"]]
    assert kinds == [
        "message",
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "message",
        "message",
    ]
    system, user, reasoning, call, output, patch, patch_output, said, last = body["input"]
    assert system["role"] == "system" and user["role"] == "user" and len(user["content"]) == 2
    assert reasoning == {
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "**Inspecting app.py**"}],
        "encrypted_content": "gAAAAABo-opaque-reasoning==",
    }
    assert call == {
        "type": "function_call",
        "call_id": "call_K1",
        "name": "shell",
        "arguments": CODEX_REQUEST["input"][4]["arguments"],
    }
    assert output == {"type": "function_call_output", "call_id": "call_K1", "output": "print('hi')\n"}
    assert patch == {"type": "custom_tool_call", "call_id": "call_P2", "name": "apply_patch", "input": PATCH}
    assert patch_output["type"] == "custom_tool_call_output" and patch_output["call_id"] == "call_P2"
    assert said == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Done: app.py says hello."}],
    }
    assert all("id" not in item for item in body["input"])


def test_a_request_from_another_protocol_for_a_responses_upstream():
    from ccproxy.unified import Document, Image, Reasoning, ServerTool

    request = Request(
        model="alias",
        system="Be brief.",
        messages=[
            Message(
                role="user",
                content=[
                    Text(text="look"),
                    Image(media_type="image/png", data="iVBO"),
                    Document(data="JVBE", title="a.pdf"),
                    Document(media_type="text/plain", text="notes", title="n.txt"),
                ],
            ),
            Message(role="assistant", content=[ToolCall(id="toolu_1", name="f", arguments={"x": 1})]),
            Message(role="user", content=[ToolResult(id="toolu_1", content=[Text(text="bad")], is_error=True)]),
        ],
        tools=[Tool(name="f", parameters={"type": "object", "properties": {"x": {"type": "integer"}}})],
        server_tools=[ServerTool(kind="web_search", name="web_search", options={"allowed_domains": ["a.example"]})],
        reasoning=Reasoning(enabled=True, budget_tokens=20000),
        max_tokens=5,
        temperature=0.3,
        stop=["END"],
    )
    body = codec.encode_request(request, "o4-mini")
    assert body["max_output_tokens"] == 16  # the API's least
    assert body["reasoning"] == {"effort": "high", "summary": "auto"} and "temperature" not in body
    assert body["tools"][0] == {
        "type": "function",
        "name": "f",
        "description": None,
        "parameters": request.tools[0].parameters,
        "strict": False,
    }
    assert body["tools"][1] == {"type": "web_search", "filters": {"allowed_domains": ["a.example"]}}
    user = body["input"][0]["content"]
    assert [p["type"] for p in user] == ["input_text", "input_image", "input_file", "input_text"]
    assert user[1]["image_url"] == "data:image/png;base64,iVBO"
    assert user[2]["file_data"] == "data:application/pdf;base64,JVBE"
    assert body["input"][2] == {"type": "function_call_output", "call_id": "toolu_1", "output": "Error: bad"}
    assert codec.left_out(request) == ["stop sequences"]
    count = codec.encode_count_request(request, "o4-mini")
    assert set(count) <= {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "text",
    }
    assert codec.count_path("o4-mini") == "/responses/input_tokens"
    assert codec.upstream_path("o4-mini", True) == "/responses"
    assert codec.auth_headers("sk-1") == {"authorization": "Bearer sk-1"}


# ---------------------------------------------------------------- the upstream half: answers


UPSTREAM_RESPONSE = {
    "id": "resp_up",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-5-2025-08-07",
    "output": [
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}],
            "encrypted_content": "enc-1",
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Sure.", "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
            "status": "completed",
        },
        {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": PATCH},
    ],
    "usage": {
        "input_tokens": 30,
        "input_tokens_details": {"cached_tokens": 10},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 37,
    },
}


def test_a_whole_upstream_answer_decodes():
    response = codec.decode_response(UPSTREAM_RESPONSE)
    thinking, text, shell, patch = response.content
    assert thinking.text == "a\n\nb" and thinking.origin == "responses"
    assert unpack_reasoning(thinking.signature) == ("rs_1", "enc-1")
    assert text == Text(text="Sure.")
    assert (shell.id, shell.name, shell.arguments) == ("call_1", "shell", {"command": ["ls"]})
    assert (patch.id, patch.arguments) == ("call_2", {CUSTOM_INPUT: PATCH})
    assert response.stop_reason == "tool_use"
    usage = response.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens, usage.reasoning_tokens) == (30, 10, 7, 4)


@pytest.mark.parametrize(
    "change,stop",
    [
        ({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}, "max_tokens"),
        ({"status": "incomplete", "incomplete_details": {"reason": "content_filter"}}, "refusal"),
        ({"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "No."}]}]}, "refusal"),
        ({"output": [{"type": "message", "content": [{"type": "output_text", "text": "x"}]}]}, "end_turn"),
    ],
)
def test_upstream_stop_reasons(change, stop):
    assert codec.decode_response({**UPSTREAM_RESPONSE, **change}).stop_reason == stop


def test_upstream_errors_and_model_names():
    error = codec.decode_error(
        429,
        b'{"error":{"message":"Slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}',
        {"retry-after": "3"},
    )
    assert (error.status, error.message, error.code, error.retry_after) == (
        429,
        "Slow down",
        "rate_limit_exceeded",
        3.0,
    )
    with pytest.raises(ProxyError) as caught:
        codec.decode_response(
            {**UPSTREAM_RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "oops"}}
        )
    assert caught.value.message == "oops"
    record = {"type": "response.created", "response": {"id": "r", "model": "gpt-5"}, "sequence_number": 0}
    codec.rename_model(record, "alias")
    assert record["response"]["model"] == "alias"
    whole = dict(UPSTREAM_RESPONSE)
    codec.rename_model(whole, "alias")
    assert whole["model"] == "alias"


def sse(*records: dict) -> bytes:
    return b"".join(
        f"event: {r['type']}\ndata: {json.dumps({**r, 'sequence_number': i}, ensure_ascii=False)}\n\n".encode()
        for i, r in enumerate(records)
    )


RESPONSE_SHELL = {"id": "resp_up", "object": "response", "model": "gpt-5", "output": []}
TEXT = "Grüße aus 東京 ☀️"
UPSTREAM_STREAM = sse(
    {"type": "response.created", "response": {**RESPONSE_SHELL, "status": "in_progress"}},
    {"type": "response.in_progress", "response": {**RESPONSE_SHELL, "status": "in_progress"}},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"id": "rs_1", "type": "reasoning", "summary": []},
    },
    {
        "type": "response.reasoning_summary_part.added",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    },
    {
        "type": "response.reasoning_summary_text.delta",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "delta": "hm",
    },
    {
        "type": "response.reasoning_summary_text.delta",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "delta": "m",
    },
    {
        "type": "response.reasoning_summary_text.done",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "text": "hmm",
    },
    {
        "type": "response.reasoning_summary_part.done",
        "item_id": "rs_1",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": "hmm"},
    },
    {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "hmm"}],
            "encrypted_content": "enc",
        },
    },
    {
        "type": "response.output_item.added",
        "output_index": 1,
        "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []},
    },
    {
        "type": "response.content_part.added",
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "delta": TEXT[:6],
        "logprobs": [],
    },
    {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "delta": TEXT[6:],
        "logprobs": [],
    },
    {
        "type": "response.output_text.done",
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "text": TEXT,
        "logprobs": [],
    },
    {
        "type": "response.content_part.done",
        "item_id": "msg_1",
        "output_index": 1,
        "content_index": 0,
        "part": {"type": "output_text", "text": TEXT, "annotations": []},
    },
    {
        "type": "response.output_item.done",
        "output_index": 1,
        "item": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
        },
    },
    {
        "type": "response.output_item.added",
        "output_index": 2,
        "item": {
            "id": "fc_1",
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": "call_1",
            "name": "get_weather",
        },
    },
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": '{"city":'},
    {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": '"Paris"}'},
    {
        "type": "response.function_call_arguments.done",
        "item_id": "fc_1",
        "output_index": 2,
        "arguments": '{"city":"Paris"}',
    },
    {
        "type": "response.output_item.done",
        "output_index": 2,
        "item": {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city":"Paris"}',
            "call_id": "call_1",
            "name": "get_weather",
        },
    },
    {
        "type": "response.output_item.added",
        "output_index": 3,
        "item": {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": ""},
    },
    {"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "output_index": 3, "delta": PATCH[:10]},
    {"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "output_index": 3, "delta": PATCH[10:]},
    {"type": "response.custom_tool_call_input.done", "item_id": "ctc_1", "output_index": 3, "input": PATCH},
    {
        "type": "response.output_item.done",
        "output_index": 3,
        "item": {"id": "ctc_1", "type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": PATCH},
    },
    {
        "type": "response.completed",
        "response": {
            **RESPONSE_SHELL,
            "status": "completed",
            "usage": {
                "input_tokens": 21,
                "input_tokens_details": {"cached_tokens": 5},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 3},
                "total_tokens": 30,
            },
        },
    },
)

EXPECTED_EVENTS = [
    Start(id="resp_up", model="gpt-5"),
    ThinkingDelta("hmm"),
    ThinkingSignature(pack_reasoning("rs_1", "enc"), "responses"),
    TextDelta(TEXT),
    ToolCallStart(0, "call_1", "get_weather", origin="responses"),
    ToolCallDelta(0, '{"city":"Paris"}'),
    ToolCallEnd(0),
    ToolCallStart(1, "call_2", "apply_patch", origin="responses"),
    ToolCallDelta(1, json.dumps({CUSTOM_INPUT: PATCH}, separators=(",", ":"), ensure_ascii=False)),
    ToolCallEnd(1),
    UsageUpdate(Usage(input_tokens=21, output_tokens=9, cache_read_tokens=5, reasoning_tokens=3)),
    Finish("tool_use"),
]


def decode(pieces: list[bytes]) -> list:
    decoder = codec.stream_decoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def joined(events: list) -> list:
    """Deltas in a row joined, so that different splits compare equal."""
    out: list = []
    for event in events:
        if out and type(event) is type(out[-1]) and type(event) in (TextDelta, ThinkingDelta):
            out[-1] = type(event)(out[-1].text + event.text)
        elif out and type(event) is ToolCallDelta is type(out[-1]) and event.index == out[-1].index:
            out[-1] = ToolCallDelta(event.index, out[-1].arguments + event.arguments)
        else:
            out.append(event)
    return out


def test_an_upstream_stream_split_anywhere_gives_the_same_events():
    assert joined(decode([UPSTREAM_STREAM])) == EXPECTED_EVENTS
    for cut in range(1, len(UPSTREAM_STREAM)):
        assert joined(decode([UPSTREAM_STREAM[:cut], UPSTREAM_STREAM[cut:]])) == EXPECTED_EVENTS, f"cut at byte {cut}"


def test_an_upstream_stream_byte_at_a_time_accumulates_the_answer():
    accumulated = Accumulator()
    for event in decode([UPSTREAM_STREAM[i : i + 1] for i in range(len(UPSTREAM_STREAM))]):
        accumulated.add(event)
    response = accumulated.response
    assert [p.type for p in response.content] == ["thinking", "text", "tool_call", "tool_call"]
    assert response.content[3].arguments == {CUSTOM_INPUT: PATCH}
    assert response.stop_reason == "tool_use" and response.usage.input_tokens == 21


def test_the_upstream_stream_relayed_to_a_responses_client_is_valid():
    request = client_request(tools=[{**SHELL_TOOL, "name": "get_weather"}, APPLY_PATCH_TOOL])
    body = encode_stream(decode([UPSTREAM_STREAM]), request)
    _, final = sdk_stream(body, [APPLY_PATCH_TOOL])
    reasoning, message, call, patch = final.output
    assert reasoning.encrypted_content == "enc" and message.content[0].text == TEXT
    assert (call.name, call.arguments) == ("get_weather", '{"city":"Paris"}')
    assert patch.input == PATCH


@pytest.mark.parametrize(
    "records,status,message",
    [
        ([{"type": "error", "code": "rate_limit_exceeded", "message": "boom", "param": None}], 429, "boom"),
        (
            [
                {"type": "response.created", "response": RESPONSE_SHELL},
                {
                    "type": "response.failed",
                    "response": {
                        **RESPONSE_SHELL,
                        "status": "failed",
                        "error": {"code": "server_error", "message": "boom"},
                    },
                },
            ],
            500,
            "boom",
        ),
    ],
)
def test_an_upstream_error_in_the_stream_becomes_a_stream_error(records, status, message):
    events = decode([sse(*records)])
    errors = [e for e in events if isinstance(e, StreamError)]
    assert len(errors) == 1 and (errors[0].error.status, errors[0].error.message) == (status, message)


def test_an_upstream_stream_cut_short_ends_in_an_error():
    events = decode([UPSTREAM_STREAM[: len(UPSTREAM_STREAM) // 2]])
    assert isinstance(events[-1], StreamError) and events[-1].error.status == 502


def test_incomplete_and_refused_upstream_streams():
    incomplete = sse(
        {"type": "response.created", "response": RESPONSE_SHELL},
        {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": "x"},
        {
            "type": "response.incomplete",
            "response": {
                **RESPONSE_SHELL,
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
            },
        },
    )
    assert decode([incomplete])[-1] == Finish("max_tokens")
    refused = sse(
        {"type": "response.created", "response": RESPONSE_SHELL},
        {"type": "response.refusal.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": "No."},
        {"type": "response.completed", "response": {**RESPONSE_SHELL, "status": "completed"}},
    )
    assert decode([refused])[-2:] == [TextDelta("No."), Finish("refusal")]


# ---------------------------------------------------------------- the registry


def test_the_codec_is_registered_with_its_routes():
    assert isinstance(codec, ResponsesCodec) and codec.protocol == "responses"
    assert codec.custom_tools and "web_search" in codec.server_tools
    routes = {(r.method, r.operation): r.compiled() for r in codec.routes}
    assert routes[("POST", "generate")].match("/v1/responses")
    assert routes[("POST", "count_tokens")].match("/v1/responses/input_tokens")
    assert routes[("GET", "get_kept")].match("/v1/responses/resp_1")["id"] == "resp_1"
    assert routes[("DELETE", "delete_kept")].match("/v1/responses/resp_1")["id"] == "resp_1"
    assert routes[("GET", "kept_input")].match("/v1/responses/resp_1/input_items")["id"] == "resp_1"
    assert not routes[("GET", "get_kept")].match("/v1/responses/resp_1/input_items")
    assert codec.path_roots == ("/v1/responses",)


def test_kept_answers_as_the_api_shows_stored_responses():
    error = codec.unknown_kept("resp_gone")
    assert (
        error.status == 404
        and codec.encode_error(error)["error"]["message"] == "Response with id 'resp_gone' not found."
    )
    assert codec.encode_deleted("resp_1") == {"id": "resp_1", "object": "response", "deleted": True}
    request = codec.decode_request(CODEX_REQUEST, CTX)
    listed = codec.encode_kept_input(request.messages, "resp_1")
    parsed = ResponseItemList.model_validate(listed)
    assert parsed.data[0].type == "message" and parsed.data[0].content[0].text == "Now run it."  # newest first
    assert [item.type for item in parsed.data][::-1] == [
        "message",
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert codec.encode_kept_input(request.messages, "resp_1") == listed  # the same ids every time
    assert len({item.id for item in parsed.data}) == len(parsed.data)


def test_codex_code_mode_offers_its_tools_in_the_input_and_they_are_read() -> None:
    """Codex's default model sends no `tools`: an `additional_tools` input
    item holds namespaces of function and custom tools (recorded from Codex
    0.169.0)."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parents[1] / "agents" / "codex-default.json").read_text())
    body = next(r["body"] for r in recorded["requests"] if r["path"].endswith("/responses"))
    assert "tools" not in body and body["input"][0]["type"] == "additional_tools"
    request = CODECS["responses"].decode_request(body, ClientContext())
    kinds = {tool.name: tool.kind for tool in request.tools}
    assert kinds["exec"] == "custom" and kinds["wait"] == "function"
    assert len(kinds) == len(request.tools), "a name offered twice is one tool"
    assert request.messages and request.store is False
