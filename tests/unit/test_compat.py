"""Tool compatibility mode: the prompt, the history rewrite and the parser.

The parser is tested against a corpus of model outputs, clean and sloppy,
each whole, split in two at every position, and fed one character at a time:
every chunking must give exactly the same text and calls.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ccproxy.compat import (
    CompatParser,
    CompatStream,
    State,
    format_call,
    parse_response,
    rewrite_request,
    tool_instructions,
    wrap_stream,
)
from ccproxy.compat.values import convert_arg
from ccproxy.unified import (
    Finish,
    Image,
    Message,
    Request,
    Response,
    Start,
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageUpdate,
)

WEATHER = Tool(
    name="get_weather",
    description="Current weather and forecast for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris."},
            "days": {"type": "integer", "description": "Forecast days.", "default": 1, "minimum": 1},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
WRITE = Tool(
    name="write_file",
    description="Write a file.\nOverwrites it if it exists.",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)
SEARCH = Tool(
    name="search",
    description="Search documents.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": ["integer", "null"]},
            "exact": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "score": {"type": "number"},
            "filters": {
                "type": "object",
                "description": "Narrow the search.",
                "properties": {
                    "lang": {"type": "string"},
                    "range": {"$ref": "#/$defs/range"},
                },
                "required": ["lang"],
            },
            "stops": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "at": {"type": "integer"}},
                    "required": ["name"],
                },
            },
        },
        "required": ["query"],
        "$defs": {"range": {"type": "object", "properties": {"from": {"type": "integer"}}}},
    },
)
RUN = Tool(name="run", description="Run a shell command.", parameters={
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"],
})
LIST = Tool(name="list_files", description="List files.", parameters={"type": "object", "properties": {}})
TOOLS = [WEATHER, WRITE, SEARCH, RUN, LIST]

W = '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n<arg name="days">3</arg>\n</tool_call>'
PARIS3 = ("get_weather", {"city": "Paris", "days": 3})
CODE = 'if (a < b && c > 0) {\n    x = "<div>" & y;\n}'

# (id, model output, expected segments): a segment is ("text", str) or (name, arguments).
CORPUS: list[tuple[str, str, list[tuple[str, Any]]]] = [
    ("clean", W, [PARIS3]),
    ("text_around", "Let me check.\n" + W + "\nI asked for the weather.",
     [("text", "Let me check.\n"), PARIS3, ("text", "I asked for the weather.")]),
    ("fenced_xml", "Sure:\n```xml\n" + W + "\n```\n", [("text", "Sure:\n"), PARIS3]),
    ("fenced_bare", "```\n" + W + "\n```", [PARIS3]),
    ("fenced_then_text", "Sure:\n```xml\n" + W + "\n```\nDone.", [("text", "Sure:\n"), PARIS3, ("text", "Done.")]),
    ("unclosed", '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n',
     [("get_weather", {"city": "Paris"})]),
    ("unclosed_mid_arg", 'Checking. <tool_call name="get_weather">\n<arg name="city">Par',
     [("text", "Checking. "), ("get_weather", {"city": "Par"})]),
    ("cut_in_closer", '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n</tool_ca',
     [("get_weather", {"city": "Paris"})]),
    ("json_body", '<tool_call name="get_weather">{"city":"Paris","days":2}</tool_call>',
     [("get_weather", {"city": "Paris", "days": 2})]),
    ("json_body_fenced", '<tool_call name="get_weather">\n```json\n{"city": "Oslo",}\n```\n</tool_call>',
     [("get_weather", {"city": "Oslo"})]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     [("get_weather", {"city": "Paris"})]),
    ("hermes_string_arguments", '<tool_call>{"name":"get_weather","arguments":"{\\"city\\":\\"Rome\\"}"}</tool_call>',
     [("get_weather", {"city": "Rome"})]),
    ("hermes_named_wrapper", '<tool_call name="get_weather">{"name": "get_weather", "parameters": {"city": "Lima"}}</tool_call>',
     [("get_weather", {"city": "Lima"})]),
    ("hermes_unknown_tool", 'A <tool_call>{"name": "launch", "arguments": {}}</tool_call> B',
     [("text", 'A <tool_call>{"name": "launch", "arguments": {}}</tool_call> B')]),
    ("hermes_not_json", "I use <tool_call> tags.", [("text", "I use <tool_call> tags.")]),
    ("qwen_coder", 'Ok.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n'
     "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>",
     [("text", "Ok.\n"), ("get_weather", {"city": "New York", "days": 2})]),
    ("qwen_coder_sloppy", "<tool_call><function=run><parameter=command>echo a<b</function></tool_call>",
     [("run", {"command": "echo a<b"})]),
    ("qwen_coder_unknown", "<tool_call><function=nope></function></tool_call>",
     [("text", "<tool_call><function=nope></function></tool_call>")]),
    ("single_quotes", "<tool_call name='get_weather'>\n<arg name='city'>Paris</arg>\n</tool_call>",
     [("get_weather", {"city": "Paris"})]),
    ("unquoted_name", "<tool_call name=get_weather><arg name=city>Paris</arg></tool_call>",
     [("get_weather", {"city": "Paris"})]),
    ("whitespace_everywhere",
     '<tool_call   name = "get_weather" >\n\n  <arg name="city">Paris</arg>\n\n <arg name = "days" > 4 </arg>\n</tool_call >',
     [("get_weather", {"city": "Paris", "days": 4})]),
    ("newline_in_tag", '<tool_call\nname="get_weather"\n>\n<arg name="city">Paris</arg>\n</tool_call>',
     [("get_weather", {"city": "Paris"})]),
    ("entities", '<tool_call name="write_file">\n<arg name="path">a&amp;b.txt</arg>\n'
     '<arg name="content">a &lt; b &amp;&amp; c &gt; d &quot;q&quot; &#39;s&#39; &#x263A;</arg>\n</tool_call>',
     [("write_file", {"path": "a&b.txt", "content": "a < b && c > d \"q\" 's' \u263a"})]),
    ("raw_lt_amp", '<tool_call name="write_file">\n<arg name="path">x.c</arg>\n<arg name="content">\n'
     + CODE + "\n</arg>\n</tool_call>",
     [("write_file", {"path": "x.c", "content": CODE})]),
    ("raw_amp_not_entity", '<tool_call name="run"><arg name="command">curl "a?x=1&copy=2&lt"</arg></tool_call>',
     [("run", {"command": 'curl "a?x=1&copy=2&lt"'})]),
    ("unknown_tool", 'Hi <tool_call name="delete_all">\n<arg name="x">1</arg>\n</tool_call> bye',
     [("text", 'Hi <tool_call name="delete_all">\n<arg name="x">1</arg>\n</tool_call> bye')]),
    ("unknown_tool_fenced", '```xml\n<tool_call name="nope"></tool_call>\n```',
     [("text", '```xml\n<tool_call name="nope"></tool_call>\n```')]),
    ("two_calls", W + "\n" + '<tool_call name="run">\n<arg name="command">ls</arg>\n</tool_call>',
     [PARIS3, ("run", {"command": "ls"})]),
    ("two_calls_one_fence", "```xml\n" + W + "\n\n" + W + "\n```\nok",
     [PARIS3, PARIS3, ("text", "ok")]),
    ("three_calls_text_between", "A\n" + W + "\nB\n" + W + W,
     [("text", "A\n"), PARIS3, ("text", "B\n"), PARIS3, PARIS3]),
    ("implicit_close", '<tool_call name="get_weather"><arg name="city">A</arg>\n'
     '<tool_call name="get_weather"><arg name="city">B</arg></tool_call>',
     [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})]),
    ("typed_args", '<tool_call name="search">\n<arg name="query">cats &amp; dogs</arg>\n'
     '<arg name="limit">5</arg>\n<arg name="exact">true</arg>\n<arg name="tags">["a", "b"]</arg>\n'
     '<arg name="filters">{"lang": "en", "range": {"from": 2}}</arg>\n<arg name="score">0.5</arg>\n</tool_call>',
     [("search", {"query": "cats & dogs", "limit": 5, "exact": True, "tags": ["a", "b"],
                  "filters": {"lang": "en", "range": {"from": 2}}, "score": 0.5})]),
    ("lenient_values", '<tool_call name="search"><arg name="query">x</arg><arg name="limit">"7"</arg>'
     '<arg name="exact">False</arg><arg name="tags">[\'a\',]</arg>'
     '<arg name="filters">{&quot;lang&quot;: &quot;en&quot;}</arg><arg name="score">2.0</arg>'
     '<arg name="stops">null</arg></tool_call>',
     [("search", {"query": "x", "limit": 7, "exact": False, "tags": ["a"], "filters": {"lang": "en"},
                  "score": 2.0, "stops": None})]),
    ("unparseable_typed_value", '<tool_call name="search"><arg name="query">q</arg><arg name="limit">five</arg></tool_call>',
     [("search", {"query": "q", "limit": "five"})]),
    ("undeclared_arg_is_string", '<tool_call name="get_weather"><arg name="city">Paris</arg><arg name="extra">42</arg></tool_call>',
     [("get_weather", {"city": "Paris", "extra": "42"})]),
    ("missing_arg_close", '<tool_call name="get_weather">\n<arg name="city">Paris\n<arg name="days">2</arg>\n</tool_call>',
     [("get_weather", {"city": "Paris", "days": 2})]),
    ("multiline_trim_one_newline", '<tool_call name="write_file"><arg name="path">a</arg><arg name="content">\n\nx\n\n</arg></tool_call>',
     [("write_file", {"path": "a", "content": "\nx\n"})]),
    ("bare_body_single_param", '<tool_call name="run">ls -la</tool_call>', [("run", {"command": "ls -la"})]),
    ("self_closing", 'Listing: <tool_call name="list_files"/>', [("text", "Listing: "), ("list_files", {})]),
    ("empty_call", '<tool_call name="list_files">\n</tool_call>', [("list_files", {})]),
    ("case_insensitive_name", '<tool_call name="Get_Weather"><arg name="city">Paris</arg></tool_call>',
     [("get_weather", {"city": "Paris"})]),
    ("leading_whitespace_call", "\n\n  " + W, [PARIS3]),
    ("leading_whitespace_text", "  Hi\n", [("text", "  Hi\n")]),
    ("prose_lookalikes", "Use <tool_calls> or <tool_call_id>, a < b, `x`, ``y`` and\n```python\nprint(1)\n```\n",
     [("text", "Use <tool_calls> or <tool_call_id>, a < b, `x`, ``y`` and\n```python\nprint(1)\n```\n")]),
    ("prose_tool_call_word", "The <tool_call is here> thing", [("text", "The <tool_call is here> thing")]),
    ("truncated_opener", 'Hello <tool_call name="get_wea', [("text", 'Hello <tool_call name="get_wea')]),
    ("trailing_fence_start", "See ``", [("text", "See ``")]),
    ("thinking_like_text_then_call", "Thought: need weather.\n\n```tool_call\n" + W + "\n```",
     [("text", "Thought: need weather.\n\n"), PARIS3]),
    ("unicode", '<tool_call name="get_weather"><arg name="city">São Paulo 🌧</arg></tool_call>🎉',
     [("get_weather", {"city": "São Paulo 🌧"}), ("text", "🎉")]),
]


def segments(events: list[Any]) -> list[tuple[str, Any]]:
    """Text (merged) and calls in order, checking each call's event structure."""
    out: list[tuple[str, Any]] = []
    expected_index = 0
    ids = set()
    i = 0
    while i < len(events):
        event = events[i]
        if isinstance(event, TextDelta):
            assert event.text, "no empty text deltas"
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + event.text)
            else:
                out.append(("text", event.text))
            i += 1
            continue
        start, delta, end = events[i:i + 3]
        assert isinstance(start, ToolCallStart) and isinstance(delta, ToolCallDelta) and isinstance(end, ToolCallEnd)
        assert start.index == delta.index == end.index == expected_index
        assert start.id.startswith("call_") and start.id not in ids
        ids.add(start.id)
        expected_index += 1
        out.append((start.name, json.loads(delta.arguments)))
        i += 3
    return out


def parse(chunks: list[str], tools: list[Tool] = TOOLS) -> list[tuple[str, Any]]:
    parser = CompatParser(tools)
    events: list[Any] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return segments(events)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 20
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in CORPUS], ids=[n for n, _, _ in CORPUS])
def test_corpus_whole(text: str, expected: list[tuple[str, Any]]) -> None:
    assert parse([text]) == expected


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in CORPUS], ids=[n for n, _, _ in CORPUS])
def test_corpus_every_split_point(text: str, expected: list[tuple[str, Any]]) -> None:
    for cut in range(len(text) + 1):
        assert parse([text[:cut], text[cut:]]) == expected, f"split at {cut}: {text[:cut]!r} | {text[cut:]!r}"
    assert parse(list(text)) == expected, "one character at a time"


def test_text_streams_before_call_completes() -> None:
    parser = CompatParser(TOOLS)
    assert parser.feed("Hello <tool_") == [TextDelta("Hello ")]
    assert parser.state is State.MAYBE_CALL
    assert parser.feed('call name="get_weather">') == []
    assert parser.state is State.IN_CALL
    assert parser.feed('<arg name="city">Paris</arg>') == []
    events = parser.feed("</tool_call>")
    assert [type(e) for e in events] == [ToolCallStart, ToolCallDelta, ToolCallEnd]
    assert parser.state is State.AFTER_CALL
    assert parser.feed(" and more") == [TextDelta("and more")]
    assert parser.state is State.TEXT
    assert parser.close() == []


def test_prose_is_not_held() -> None:
    parser = CompatParser(TOOLS)
    assert parser.feed("Hello wor") == [TextDelta("Hello wor")]
    assert parser.feed("ld ```x") == [TextDelta("ld ")]  # a fence may open a call: held
    assert parser.feed("ml\nprint") == [TextDelta("```xml\nprint")]
    assert parser.feed("a <b") == [TextDelta("a <b")]
    assert parser.feed(" <") == [TextDelta(" ")]
    assert parser.close() == [TextDelta("<")]


def test_unknown_tool_streams_as_text() -> None:
    parser = CompatParser(TOOLS)
    assert parser.feed('<tool_call name="nope">') == [TextDelta('<tool_call name="nope">')]
    assert parser.feed("<arg") == [TextDelta("<arg")]


def test_arguments_delta_is_compact_json() -> None:
    parser = CompatParser(TOOLS)
    events = parser.feed(W)
    assert events[1] == ToolCallDelta(index=0, arguments='{"city":"Paris","days":3}')
    assert events[0].name == "get_weather"


def test_no_tools_means_no_calls() -> None:
    assert parse([W], tools=[]) == [("text", W)]


# ---------------------------------------------------------------- streams


def test_compat_stream_turns_text_calls_into_events() -> None:
    usage = UsageUpdate(Usage(output_tokens=9))
    upstream = [
        Start(id="m1", model="llama"),
        ThinkingDelta("hmm"),
        TextDelta("Checking <tool"),
        TextDelta('_call name="get_weather"><arg name="city">Paris</arg>'),
        usage,
        TextDelta("</tool_call>"),
        Finish("end_turn"),
    ]
    out = list(wrap_stream(upstream, TOOLS))
    assert out[:3] == [Start(id="m1", model="llama"), ThinkingDelta("hmm"), TextDelta("Checking ")]
    assert out[3] is usage
    assert isinstance(out[4], ToolCallStart) and out[4].index == 0 and out[4].name == "get_weather"
    assert out[5] == ToolCallDelta(0, '{"city":"Paris"}')
    assert out[6] == ToolCallEnd(0)
    assert out[7] == Finish("tool_use")
    assert len(out) == 8


@pytest.mark.parametrize(
    "reason,expected", [("end_turn", "tool_use"), ("stop_sequence", "tool_use"), ("max_tokens", "max_tokens")]
)
def test_compat_stream_stop_reason(reason: str, expected: str) -> None:
    stream = CompatStream(TOOLS)
    assert stream.feed(TextDelta('<tool_call name="run"><arg name="command">ls')) == []
    out = stream.feed(Finish(reason, "</x>" if reason == "stop_sequence" else None))  # type: ignore[arg-type]
    assert [type(e) for e in out] == [ToolCallStart, ToolCallDelta, ToolCallEnd, Finish]
    assert out[1].arguments == '{"command":"ls"}'
    assert out[3].stop_reason == expected
    if expected == "tool_use":
        assert out[3].stop_sequence is None


def test_compat_stream_without_calls_keeps_stop_and_flushes_text() -> None:
    stream = CompatStream(TOOLS)
    assert stream.feed(TextDelta("a <tool")) == [TextDelta("a ")]
    assert stream.feed(Finish("end_turn")) == [TextDelta("<tool"), Finish("end_turn")]


def test_compat_stream_error_flushes_first() -> None:
    stream = CompatStream(TOOLS)
    stream.feed(TextDelta("x `"))
    error = StreamError("boom")
    assert stream.feed(error) == [TextDelta("`"), error]


def test_compat_stream_numbers_after_native_calls() -> None:
    stream = CompatStream(TOOLS)
    native = [ToolCallStart(0, "call_native", "run"), ToolCallDelta(0, "{}"), ToolCallEnd(0)]
    for event in native:
        assert stream.feed(event) == [event]
    out = stream.feed(TextDelta(W))
    assert [e.index for e in out] == [1, 1, 1]


def test_parse_response() -> None:
    response = Response(
        id="r",
        content=[Thinking(text="t"), Text(text="Let me look.\n```xml\n" + W + "\n```")],
        stop_reason="end_turn",
        usage=Usage(input_tokens=3),
    )
    parsed = parse_response(response, TOOLS)
    assert parsed.stop_reason == "tool_use"
    assert parsed.content[0] == Thinking(text="t")
    assert parsed.content[1] == Text(text="Let me look.\n")
    call = parsed.content[2]
    assert isinstance(call, ToolCall) and call.name == "get_weather" and call.arguments == {"city": "Paris", "days": 3}
    assert len(parsed.content) == 3
    assert parsed.usage == Usage(input_tokens=3) and parsed.id == "r"
    assert response.content[1] == Text(text="Let me look.\n```xml\n" + W + "\n```")  # untouched


def test_parse_response_without_calls() -> None:
    response = Response(content=[Text(text="Just text <b>")], stop_reason="max_tokens")
    parsed = parse_response(response, TOOLS)
    assert parsed.content == [Text(text="Just text <b>")] and parsed.stop_reason == "max_tokens"


# ---------------------------------------------------------------- prompt


def test_prompt_describes_every_tool() -> None:
    prompt = tool_instructions(TOOLS)
    assert prompt is not None
    for tool in TOOLS:
        assert f"## {tool.name}\n" in prompt
    assert "## get_weather\nCurrent weather and forecast for a city.\nParameters:\n" in prompt
    assert "- city (string, required): City name, e.g. Paris.\n" in prompt
    assert "- days (integer, optional, default: 1, at least 1): Forecast days.\n" in prompt
    assert '- unit (string, optional, one of: "celsius", "fahrenheit")\n' in prompt
    assert "## write_file\nWrite a file.\nOverwrites it if it exists.\n" in prompt
    assert "## list_files\nList files.\nParameters: none." in prompt


def test_prompt_nested_schema_is_indented() -> None:
    prompt = tool_instructions([SEARCH])
    assert prompt is not None
    expected = "\n".join([
        "Parameters:",
        "- query (string, required)",
        "- limit (integer or null, optional)",
        "- exact (boolean, optional)",
        "- tags (array of string, optional)",
        "- score (number, optional)",
        "- filters (object, optional): Narrow the search.",
        "  - lang (string, required)",
        "  - range (object, optional)",
        "    - from (integer, optional)",
        "- stops (array of object, optional)",
        "  - name (string, required)",
        "  - at (integer, optional)",
    ])
    assert expected + "\n\n## How to call a tool" in prompt


def test_prompt_format_and_example_from_first_tool() -> None:
    prompt = tool_instructions([WEATHER, RUN])
    assert prompt is not None
    assert (
        '<tool_call name="TOOL_NAME">\n<arg name="PARAMETER_NAME">VALUE</arg>\n</tool_call>' in prompt
    )
    assert 'For example (made-up values):\n\n<tool_call name="get_weather">\n<arg name="city">text</arg>\n</tool_call>' in prompt
    assert "- To call several tools, write the calls one after another." in prompt
    assert "stop writing and wait" in prompt
    assert "never invent" in prompt
    assert "Write a string value as plain text" in prompt
    assert "as JSON" in prompt
    assert "Call a tool when it helps you answer; otherwise answer in plain text." in prompt
    assert prompt.index("## run") < prompt.index("## How to call a tool") < prompt.index("Rules:")


def test_prompt_example_is_parseable() -> None:
    prompt = tool_instructions([SEARCH])
    assert prompt is not None
    example = prompt.split("For example (made-up values):\n\n", 1)[1].split("\n\nRules:", 1)[0]
    assert parse([example], [SEARCH]) == [("search", {"query": "text"})]


def test_prompt_tool_choice_variants() -> None:
    any_ = tool_instructions(TOOLS, ToolChoice(mode="any"))
    assert any_ is not None and "- In this answer you must call at least one tool." in any_
    forced = tool_instructions(TOOLS, ToolChoice(mode="tool", name="run"))
    assert forced is not None and "- In this answer you must call the tool run." in forced
    none = tool_instructions(TOOLS, ToolChoice(mode="none"))
    assert none is not None and "Do not call any tool in this answer." in none
    assert "## get_weather" not in none and "<arg" not in none
    single = tool_instructions(TOOLS, None, parallel=False)
    assert single is not None and "- Call at most one tool in each answer." in single
    assert "one after another" not in single
    assert tool_instructions([]) is None


# ---------------------------------------------------------------- request rewrite


def _history_request(**extra: Any) -> Request:
    return Request(
        model="m",
        system="Be brief.",
        tools=TOOLS,
        tool_choice=ToolChoice(mode="any"),
        parallel_tool_calls=True,
        messages=[
            Message(role="user", content=[Text(text="Weather in Paris?")]),
            Message(role="assistant", content=[
                Thinking(text="secret", signature="sig"),
                Text(text="Checking."),
                ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris", "days": 3}),
                ToolCall(id="call_2", name="run", arguments={"command": "date"}),
            ]),
            Message(role="user", content=[
                ToolResult(id="call_1", content=[Text(text="Sunny, 21°C")]),
                ToolResult(id="call_2", name="run", is_error=True, content=[
                    Text(text="denied"), Image(media_type="image/png", data="AAAA"), Text(text="see image"),
                ]),
            ]),
            Message(role="user", content=[Text(text="Thanks. And tomorrow?")]),
        ],
        **extra,
    )


def test_rewrite_removes_native_tools() -> None:
    request = _history_request()
    rewritten = rewrite_request(request)
    assert rewritten.tools == [] and rewritten.tool_choice is None and rewritten.parallel_tool_calls is None
    assert rewritten.system is not None and rewritten.system.startswith("Be brief.\n\n# Tools\n\n")
    assert "- In this answer you must call at least one tool." in rewritten.system
    assert request.tools == TOOLS and request.system == "Be brief."  # the original is untouched
    assert len(request.messages) == 4


def test_rewrite_history() -> None:
    rewritten = rewrite_request(_history_request())
    assert [m.role for m in rewritten.messages] == ["user", "assistant", "user"]
    assert rewritten.messages[0].content == [Text(text="Weather in Paris?")]
    assert rewritten.messages[1].content == [Text(text=(
        "Checking.\n\n"
        '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n<arg name="days">3</arg>\n</tool_call>\n'
        '<tool_call name="run">\n<arg name="command">date</arg>\n</tool_call>'
    ))]
    assert rewritten.messages[2].content == [
        Text(text=(
            '<tool_result name="get_weather" id="call_1">\nSunny, 21°C\n</tool_result>\n'
            '<tool_result name="run" id="call_2" status="error">\ndenied'
        )),
        Image(media_type="image/png", data="AAAA"),
        Text(text="see image\n</tool_result>\n\nThanks. And tomorrow?"),
    ]
    for message in rewritten.messages:
        for part in message.content:
            assert not isinstance(part, (ToolCall, ToolResult, Thinking))


def test_rewrite_without_tools_keeps_system() -> None:
    request = Request(model="m", system="S", messages=[Message(role="user", content=[Text(text="hi")])])
    rewritten = rewrite_request(request)
    assert rewritten.system == "S" and rewritten.messages == request.messages


def test_rewrite_drops_thinking_only_messages_and_merges_roles() -> None:
    request = Request(model="m", messages=[
        Message(role="user", content=[Text(text="a")]),
        Message(role="assistant", content=[Thinking(text="t")]),
        Message(role="user", content=[Text(text="b")]),
    ])
    rewritten = rewrite_request(request)
    assert rewritten.messages == [Message(role="user", content=[Text(text="a\n\nb")])]
    assert rewritten.system is None


ROUND_TRIP_CALLS = [
    ToolCall(id="1", name="get_weather", arguments={"city": "Paris", "days": 3, "unit": "celsius"}),
    ToolCall(id="2", name="write_file", arguments={"path": "a.html", "content": "<arg name=\"x\">\n</arg></tool_call>"}),
    ToolCall(id="3", name="write_file", arguments={"path": "&lt;.txt", "content": "\n  indented\n\n"}),
    ToolCall(id="4", name="write_file", arguments={"path": "p", "content": CODE}),
    ToolCall(id="5", name="search", arguments={
        "query": "q", "limit": None, "exact": False, "tags": ["</arg>", "b"], "score": 1.5,
        "filters": {"lang": "en", "range": {"from": 1}}, "stops": [{"name": "x", "at": 2}],
    }),
    ToolCall(id="6", name="get_weather", arguments={"city": 42}),  # a number for a string parameter
    ToolCall(id="7", name="search", arguments={"query": "q", "limit": "not a number"}),
    ToolCall(id="8", name="list_files", arguments={}),
    ToolCall(id="9", name="run", arguments={"command": ""}),
    ToolCall(id="10", name="get_weather", arguments={"city": "Paris", "days": 2.0}),
]


@pytest.mark.parametrize("call", ROUND_TRIP_CALLS, ids=[c.id for c in ROUND_TRIP_CALLS])
def test_history_call_round_trips_through_parser(call: ToolCall) -> None:
    text = format_call(call, TOOLS)
    expected = [(call.name, call.arguments)]
    assert parse([text]) == expected
    assert [json.dumps(args) for _, args in parse(list(text))] == [json.dumps(call.arguments)]


def test_format_call_is_readable() -> None:
    assert format_call(ROUND_TRIP_CALLS[0], TOOLS) == (
        '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n<arg name="days">3</arg>\n'
        '<arg name="unit">celsius</arg>\n</tool_call>'
    )
    assert format_call(ROUND_TRIP_CALLS[3], TOOLS) == (
        '<tool_call name="write_file">\n<arg name="path">p</arg>\n<arg name="content">\n' + CODE + "\n</arg>\n</tool_call>"
    )
    # A value that could not be read back from <arg> tags makes the body JSON.
    assert format_call(ROUND_TRIP_CALLS[5], TOOLS) == '<tool_call name="get_weather">\n{"city":42}\n</tool_call>'


def test_long_body_in_small_pieces() -> None:
    content = "<" + "x = a < b and c\n" * 3000
    text = ('<tool_call name="write_file">\n<arg name="path">big.txt</arg>\n<arg name="content">\n'
            + content + "</arg>\n</  tool_call  >\nDone.")
    # The newline before </arg> is layout: one is trimmed.
    expected = [("write_file", {"path": "big.txt", "content": content[:-1]}), ("text", "Done.")]
    for size in (1, 7, 50, 4096):
        assert parse([text[i:i + size] for i in range(0, len(text), size)]) == expected


@pytest.mark.parametrize("depth", [201, 5000])
def test_a_model_argument_nested_too_deep_is_kept_as_text(depth: int) -> None:
    raw = "[" * depth + "]" * depth
    assert convert_arg({"items": {"type": "array"}}, {}, "items", raw) == raw
    assert convert_arg({"items": {"type": "array"}}, {}, "items", "[[1]]") == [[1]]
