"""What coding agents send beyond plain chat, through every upstream: system
turns mid-conversation, beta headers, documents, cache breakpoints, server
tools, thinking kept across turns, and unsigned reasoning sent back. The
official SDKs are the clients; the strict fakes refuse what the real APIs
refuse."""

from __future__ import annotations

import base64
import json
import logging

import anthropic
import httpx
import openai
import pytest
from google.genai import types as gtypes

from tests.fakes import scenarios

from .conftest import PROTOCOLS, alias
from .drivers import ACCESS_KEY, QUESTION, TOOLS

SYSTEM_BETA = "mid-conversation-system-2026-04-07"
REMINDER = "Reminder: answer in French."
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF").decode()
CLAUDE_TOOLS = [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]} for t in TOOLS]


def claude(proxy_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy_url, api_key=ACCESS_KEY, max_retries=0)


def oai(proxy_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy_url + "/v1", api_key=ACCESS_KEY, max_retries=0)


def system_sent(upstream: str, body: dict) -> str:
    """The upstream's top-level system prompt."""
    if upstream == "responses":
        return body.get("instructions") or ""
    if upstream == "gemini":
        return "".join(p["text"] for p in (body.get("systemInstruction") or {}).get("parts", []))
    if upstream == "claude":
        system = body.get("system") or ""
        return system if isinstance(system, str) else "".join(b["text"] for b in system)
    leading = []
    for message in body["messages"]:
        if message["role"] != "system":
            break
        leading.append(message["content"])
    return "\n\n".join(leading)


# ---------------------------------------------------------------- system turns


def claude_code_turns() -> list[dict]:
    """A conversation as Claude Code sends it for a model it does not know:
    a system turn after the first user turn and another after a tool result."""
    return [
        {"role": "user", "content": QUESTION},
        {"role": "system", "content": [{"type": "text", "text": REMINDER}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}]},
        {"role": "system", "content": "Second reminder."},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("upstream", PROTOCOLS)
def test_claude_system_turns_reach_every_upstream(upstream, stream, proxy_url, upstreams):
    upstreams[upstream].script("text")
    kwargs = dict(model=alias(upstream), max_tokens=256, system="You are terse.", messages=claude_code_turns(),
                  tools=CLAUDE_TOOLS, extra_headers={"anthropic-beta": f"{SYSTEM_BETA},interleaved-thinking-2025-05-14"})
    if stream:
        with claude(proxy_url).messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = claude(proxy_url).messages.create(**kwargs)
    assert message.content[0].text == scenarios.TEXT
    sent = upstreams[upstream].last
    if upstream == "claude":
        # Same protocol: the turns stay where they were, under the beta.
        assert [m["role"] for m in sent.json["messages"]] == ["user", "system", "assistant", "user", "system"]
        assert SYSTEM_BETA in sent.headers["anthropic-beta"]
    elif upstream == "openai":
        roles = [m["role"] for m in sent.json["messages"]]
        assert roles == ["system", "user", "system", "assistant", "tool", "system"]
        assert sent.json["messages"][2]["content"] == REMINDER
        assert "anthropic-beta" not in sent.headers
    elif upstream == "responses":
        # The Responses API takes system (or developer) turns anywhere in its
        # input, as chat completions does: they stay where they were.
        items = sent.json["input"]
        kinds = ["system" if i.get("role") in ("system", "developer") else i.get("role") or i["type"] for i in items]
        if sent.json.get("instructions") is None:  # the system prompt as a leading turn instead
            assert kinds[0] == "system" and "You are terse." in json.dumps(items[0])
            kinds = kinds[1:]
        else:
            assert sent.json["instructions"] == "You are terse."
        assert kinds == ["user", "system", "function_call", "function_call_output", "system"]
        assert REMINDER in json.dumps(items[kinds.index("system") + len(items) - len(kinds)])
        assert "anthropic-beta" not in sent.headers
    else:
        # Folded into the system prompt, in order, never dropped.
        assert system_sent(upstream, sent.json) == f"You are terse.\n\n{REMINDER}\n\nSecond reminder."


def test_openai_developer_message_mid_conversation_is_folded_for_claude(proxy_url, upstreams):
    upstreams["claude"].script("text")
    completion = oai(proxy_url).chat.completions.create(
        model=alias("claude"),
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "Checking."},
            {"role": "developer", "content": REMINDER},
            {"role": "user", "content": "Go on."},
        ],
    )
    assert completion.choices[0].message.content == scenarios.TEXT
    sent = upstreams["claude"].last.json
    assert system_sent("claude", sent) == f"Be brief.\n\n{REMINDER}"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]


def test_system_turn_without_its_beta_is_folded_even_for_claude(proxy_url, upstreams):
    """Compat mode converts even Claude to Claude; without the beta the API
    would refuse the turn, so it is folded."""
    upstreams["claude"].script("text")
    message = claude(proxy_url).with_options(base_url=proxy_url + "/compat").messages.create(
        model=alias("claude"), max_tokens=256, messages=claude_code_turns()[:2] + [{"role": "user", "content": "Go."}])
    assert message.content[0].text == scenarios.TEXT
    sent = upstreams["claude"].last.json
    assert all(m["role"] != "system" for m in sent["messages"])
    assert REMINDER in system_sent("claude", sent)


# ---------------------------------------------------------------- model name and thinking across turns


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_claude_on_claude_keeps_its_thinking_across_turns(proxy_url, upstreams, stream):
    """Claude Code sends its thinking back only when the answer names the
    model it asked for; the API then requires it before the tool_use."""
    fake = upstreams["claude"]
    fake.script("thinking_tool_call")
    client = claude(proxy_url)
    kwargs = dict(model=alias("claude"), max_tokens=4096, tools=CLAUDE_TOOLS,
                  thinking={"type": "enabled", "budget_tokens": 1024})
    history = [{"role": "user", "content": QUESTION}]
    if stream:
        with client.messages.stream(messages=history, **kwargs) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(messages=history, **kwargs)
    assert first.model == alias("claude")
    assert [b.type for b in first.content][0] == "thinking"
    call = next(b for b in first.content if b.type == "tool_use")
    history += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "22C"}]}]
    fake.script("text")
    second = client.messages.create(messages=history, **kwargs)
    assert second.content[-1].text == scenarios.TEXT
    sent = fake.last.json
    assert sent["thinking"]["type"] == "enabled"
    assert sent["messages"][1]["content"][0]["type"] == "thinking"


@pytest.mark.parametrize("signature,sent_back", [("", True), ("EqQBsigned", False)], ids=["unsigned", "signed"])
def test_unsigned_thinking_goes_back_as_reasoning_content(signature, sent_back, proxy_url, upstreams):
    """Thinking a DeepSeek-style upstream produced reaches a Claude client
    unsigned; sent back, it must return as reasoning_content on the
    assistant turn that made the call. Signed thinking is another vendor's."""
    upstreams["openai"].script("text")
    claude(proxy_url).messages.create(
        model=alias("openai"), max_tokens=256, tools=CLAUDE_TOOLS,
        messages=[
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should look it up.", "signature": signature},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}]},
        ])
    assistant = next(m for m in upstreams["openai"].last.json["messages"] if m["role"] == "assistant")
    assert assistant.get("reasoning_content") == ("I should look it up." if sent_back else None)


# ---------------------------------------------------------------- documents


def pdf_question() -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "spec.pdf"},
        {"type": "text", "text": "Summarise this."}]}]


@pytest.mark.parametrize("upstream", ["claude", "openai", "gemini"])
def test_claude_pdf_reaches_upstreams_that_read_pdfs(upstream, proxy_url, upstreams):
    upstreams[upstream].script("text")
    message = claude(proxy_url).messages.create(model=alias(upstream), max_tokens=256, messages=pdf_question())
    assert message.content[0].text == scenarios.TEXT
    sent = json.dumps(upstreams[upstream].last.json)
    assert PDF in sent
    if upstream == "openai":
        part = upstreams["openai"].last.json["messages"][0]["content"][0]
        assert part == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "spec.pdf"}}
    if upstream == "gemini":
        part = upstreams["gemini"].last.json["contents"][0]["parts"][0]
        assert part == {"inlineData": {"mimeType": "application/pdf", "data": PDF}}


def test_pdf_for_an_upstream_without_documents_is_a_clear_400(proxy_url, upstreams):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(proxy_url).messages.create(model=alias("ollama"), max_tokens=256, messages=pdf_question())
    assert "up-ollama" in caught.value.message and "application/pdf" in caught.value.message
    assert upstreams["ollama"].requests == []


def test_text_document_becomes_text_where_documents_are_missing(proxy_url, upstreams):
    upstreams["ollama"].script("text")
    claude(proxy_url).messages.create(model=alias("ollama"), max_tokens=256, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Line one."}, "title": "notes"},
        {"type": "text", "text": "Summarise."}]}])
    sent = upstreams["ollama"].last.json["messages"][0]["content"]
    assert "Document: notes" in sent and "Line one." in sent


def test_openai_file_part_becomes_a_claude_document(proxy_url, upstreams):
    upstreams["claude"].script("text")
    oai(proxy_url).chat.completions.create(model=alias("claude"), messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}},
        {"type": "text", "text": "Summarise."}]}])
    block = upstreams["claude"].last.json["messages"][0]["content"][0]
    assert block == {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                     "title": "a.pdf"}


def test_gemini_inline_pdf_becomes_a_claude_document(proxy_url, upstreams, driver_for):
    upstreams["claude"].script("text")
    driver = driver_for("gemini")
    contents = [gtypes.Content(role="user", parts=[
        gtypes.Part(inline_data=gtypes.Blob(mime_type="application/pdf", data=base64.b64decode(PDF))),
        gtypes.Part(text="Summarise.")])]
    outcome = driver.chat(alias("claude"), stream=False, contents=contents)
    assert outcome.text == scenarios.TEXT
    block = upstreams["claude"].last.json["messages"][0]["content"][0]
    assert block["type"] == "document" and block["source"]["data"] == PDF


# ---------------------------------------------------------------- prompt caching


def test_openai_cache_control_reaches_claude_and_cached_tokens_come_back(proxy_url, upstreams):
    upstreams["claude"].script("text")
    completion = oai(proxy_url).chat.completions.create(model=alias("claude"), messages=[
        {"role": "system", "content": [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
    ])
    sent = upstreams["claude"].last.json
    assert sent["system"] == [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert completion.usage.prompt_tokens_details.cached_tokens == scenarios.CACHED_TOKENS


def test_more_than_four_cache_marks_keep_the_last_four(proxy_url, upstreams):
    upstreams["claude"].script("text")
    parts = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(6)]
    oai(proxy_url).chat.completions.create(model=alias("claude"), messages=[{"role": "user", "content": parts}])
    blocks = upstreams["claude"].last.json["messages"][0]["content"]
    assert ["cache_control" in b for b in blocks] == [False, False, True, True, True, True]


def test_claude_cache_marks_survive_a_conversion_to_claude(proxy_url, upstreams):
    upstreams["claude"].script("text")
    claude(proxy_url).with_options(base_url=proxy_url + "/compat").messages.create(
        model=alias("claude"), max_tokens=256,
        system=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION, "cache_control": {"type": "ephemeral"}}]}])
    sent = upstreams["claude"].last.json
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}


# ---------------------------------------------------------------- server tools

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


def test_web_search_becomes_google_search_on_gemini(proxy_url, upstreams):
    upstreams["gemini"].script("text")
    response = claude(proxy_url).messages.with_raw_response.create(
        model=alias("gemini"), max_tokens=256, tools=[WEB_SEARCH], messages=[{"role": "user", "content": "News today?"}])
    assert response.parse().content[0].text == scenarios.TEXT
    assert upstreams["gemini"].last.json["tools"] == [{"googleSearch": {}}]
    assert "x-ccproxy-left-out" not in response.headers


def test_web_search_becomes_the_responses_apis_own(proxy_url, upstreams):
    upstreams["responses"].script("text")
    response = claude(proxy_url).messages.with_raw_response.create(
        model=alias("responses"), max_tokens=256, tools=[WEB_SEARCH], messages=[{"role": "user", "content": "News today?"}])
    assert response.parse().content[0].text == scenarios.TEXT
    assert upstreams["responses"].last.json["tools"] == [{"type": "web_search"}]
    assert "x-ccproxy-left-out" not in response.headers


def test_web_search_passes_through_to_claude(proxy_url, upstreams):
    upstreams["claude"].script("text")
    claude(proxy_url).messages.create(model=alias("claude"), max_tokens=256, tools=[WEB_SEARCH],
                                      messages=[{"role": "user", "content": "News today?"}])
    assert upstreams["claude"].last.json["tools"] == [WEB_SEARCH]


@pytest.mark.parametrize("upstream", ["openai", "ollama"])
def test_web_search_is_left_out_with_a_warning_where_there_is_none(upstream, proxy_url, upstreams):
    upstreams[upstream].script("text")
    response = claude(proxy_url).messages.with_raw_response.create(
        model=alias(upstream), max_tokens=256, tools=[WEB_SEARCH] + CLAUDE_TOOLS,
        messages=[{"role": "user", "content": "News today?"}])
    assert response.parse().content[0].text == scenarios.TEXT
    assert "web_search" in response.headers["x-ccproxy-left-out"]
    assert [t["function"]["name"] for t in upstreams[upstream].last.json["tools"]] == ["get_weather", "get_time"]


def test_web_search_history_is_kept_as_text_for_other_upstreams(proxy_url, upstreams):
    upstreams["openai"].script("text")
    claude(proxy_url).messages.create(model=alias("openai"), max_tokens=256, messages=[
        {"role": "user", "content": "News today?"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://example.com/a", "title": "A story", "encrypted_content": "x"}]},
            {"type": "text", "text": "Here is the news."}]},
        {"role": "user", "content": "More?"}])
    assistant = upstreams["openai"].last.json["messages"][1]["content"]
    assert "news" in assistant and "A story - https://example.com/a" in assistant and "Here is the news." in assistant


# ---------------------------------------------------------------- headers, probes, access log


def test_pass_through_forwards_beta_headers_but_never_the_clients_auth(proxy_url, upstreams):
    upstreams["claude"].script("text")
    claude(proxy_url).messages.create(model=alias("claude"), max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                      extra_headers={"anthropic-beta": "context-1m-2025-08-07", "x-custom": "no"})
    headers = upstreams["claude"].last.headers
    assert headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert "x-custom" not in headers and ACCESS_KEY not in json.dumps(headers)


@pytest.mark.parametrize("path", ["/", "/second", "/compat", "/second/compat", "/switch"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_root_answers_without_auth_and_says_nothing_of_the_config(method, path, proxy_url):
    """Clients probe their base URL, which may carry a group or compat prefix."""
    response = httpx.request(method, proxy_url + path)
    assert response.status_code == 200
    if method == "GET":
        assert response.json() == {"service": "ccproxy", "status": "ok"}


def test_an_unknown_bare_prefix_is_still_a_404(proxy_url):
    assert httpx.head(proxy_url + "/no-such-group").status_code == 404


def test_access_log_has_one_line_per_request_and_says_why_one_was_refused(proxy_url, upstreams, caplog):
    upstreams["gemini"].script("text")
    with caplog.at_level(logging.INFO, logger="ccproxy.access"):
        claude(proxy_url).messages.create(model=alias("gemini"), max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        httpx.post(proxy_url + "/v1/messages?key=ccp-secret-in-url", json={"model": "x"})
        httpx.get(proxy_url + "/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "ccproxy.access"]
    assert len(lines) == 3, lines
    assert lines[0].startswith("POST /v1/messages 200 claude via-gemini -> up-gemini/")
    assert lines[1].startswith("POST /v1/messages?key=*** 401 claude") and "access key" in lines[1]
    assert "ccp-secret-in-url" not in "\n".join(lines)
    assert lines[2].startswith("GET /nowhere 404") and "no route" in lines[2]


SEARCH_QUERY, SEARCH_SOURCES = scenarios.SEARCH


def claude_search(proxy_url: str, upstream: str, stream: bool):
    kwargs = dict(model=alias(upstream), max_tokens=256, tools=[WEB_SEARCH],
                  messages=[{"role": "user", "content": "Weather in Paris today?"}])
    if stream:
        with claude(proxy_url).messages.stream(**kwargs) as events:
            return events.get_final_message()
    return claude(proxy_url).messages.create(**kwargs)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("upstream", ["gemini", "claude", "responses"])
def test_claude_client_sees_the_search_the_upstream_ran(upstream, stream, proxy_url, upstreams):
    """Gemini's grounding (or Anthropic's own search) reaches a Claude client
    as server_tool_use and web_search_tool_result blocks, as the API shows a
    search it ran."""
    upstreams[upstream].script("web_search")
    message = claude_search(proxy_url, upstream, stream)
    kinds = [b.type for b in message.content]
    assert kinds[:2] == ["server_tool_use", "web_search_tool_result"] or kinds[-2:] == ["server_tool_use", "web_search_tool_result"]
    use = next(b for b in message.content if b.type == "server_tool_use")
    result = next(b for b in message.content if b.type == "web_search_tool_result")
    assert use.name == "web_search" and use.input == {"query": SEARCH_QUERY}
    assert result.tool_use_id == use.id
    if upstream == "responses":
        # The Responses API's search lists its sources' URLs only (their
        # titles come later, in the answer's citations).
        assert [r.url for r in result.content] == [url for url, _ in SEARCH_SOURCES] and all(r.title for r in result.content)
    else:
        assert [(r.url, r.title) for r in result.content] == list(SEARCH_SOURCES)
    assert "".join(b.text for b in message.content if b.type == "text") == scenarios.TEXT


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_gemini_client_sees_grounding_from_anthropic_search(stream, proxy_url, upstreams, driver_for):
    upstreams["claude"].script("web_search")
    driver = driver_for("gemini")  # held: the SDK closes its client with the driver
    client = driver.client
    config = gtypes.GenerateContentConfig(tools=[gtypes.Tool(google_search=gtypes.GoogleSearch())])
    contents = "Weather in Paris today?"
    if stream:
        chunks = list(client.models.generate_content_stream(model=alias("claude"), contents=contents, config=config))
    else:
        chunks = [client.models.generate_content(model=alias("claude"), contents=contents, config=config)]
    assert upstreams["claude"].last.json["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]
    grounding = [c.candidates[0].grounding_metadata for c in chunks if c.candidates and c.candidates[0].grounding_metadata]
    assert len(grounding) == 1
    assert grounding[0].web_search_queries == [SEARCH_QUERY]
    assert [(g.web.uri, g.web.title) for g in grounding[0].grounding_chunks] == list(SEARCH_SOURCES)
    assert "".join(p.text or "" for c in chunks for p in c.candidates[0].content.parts) == scenarios.TEXT


def test_openai_client_gets_the_sources_as_url_citations(proxy_url, upstreams):
    upstreams["gemini"].script("web_search")
    completion = oai(proxy_url).chat.completions.create(
        model=alias("gemini"), web_search_options={}, messages=[{"role": "user", "content": "Weather in Paris today?"}])
    assert upstreams["gemini"].last.json["tools"] == [{"googleSearch": {}}]
    message = completion.choices[0].message
    assert message.content == scenarios.TEXT
    assert [(a.url_citation.url, a.url_citation.title) for a in message.annotations] == list(SEARCH_SOURCES)


@pytest.mark.parametrize("upstream", ["claude", "gemini"])
def test_count_tokens_with_system_turns(upstream, proxy_url, upstreams):
    """Claude Code counts tokens of the same conversation it sends, system
    turns and betas included."""
    result = claude(proxy_url).messages.count_tokens(
        model=alias(upstream), messages=claude_code_turns(), tools=CLAUDE_TOOLS,
        extra_headers={"anthropic-beta": SYSTEM_BETA})
    assert result.input_tokens == scenarios.COUNT_TOKENS
    sent = upstreams[upstream].last
    if upstream == "claude":
        assert sent.headers["anthropic-beta"] == SYSTEM_BETA
    else:
        assert "Second reminder." in system_sent("gemini", sent.json["generateContentRequest"])


def test_pdf_urls_are_fetched_for_upstreams_that_cannot_and_kept_for_claude(proxy_url, upstreams):
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.support.server import serving

    async def pdf(request):
        return Response(base64.b64decode(PDF), media_type="application/pdf")

    with serving(Starlette(routes=[Route("/spec.pdf", pdf)])) as files:
        question = [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": files.url + "/spec.pdf"}},
            {"type": "text", "text": "Summarise."}]}]
        for upstream in ("openai", "gemini", "claude"):
            upstreams[upstream].script("text")
            claude(proxy_url).messages.create(model=alias(upstream), max_tokens=64, messages=question)
    assert upstreams["openai"].last.json["messages"][0]["content"][0]["file"]["file_data"] == f"data:application/pdf;base64,{PDF}"
    assert upstreams["gemini"].last.json["contents"][0]["parts"][0] == {"inlineData": {"mimeType": "application/pdf", "data": PDF}}
    # Anthropic fetches URLs itself: same protocol, the block goes as it came.
    assert upstreams["claude"].last.json["messages"][0]["content"][0]["source"]["type"] == "url"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_claude_answer_from_gemini_ends_with_its_text(stream, proxy_url, upstreams):
    """Gemini signs its closing empty text part; a signature-only thinking
    block after the text would be the turn's last block, which Claude Code
    prints as its (empty) answer."""
    upstreams["gemini"].script("text")
    kwargs = dict(model=alias("gemini"), max_tokens=64, messages=[{"role": "user", "content": QUESTION}])
    if stream:
        with claude(proxy_url).messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = claude(proxy_url).messages.create(**kwargs)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == scenarios.TEXT


def test_a_gemini_signature_before_a_call_still_reaches_the_claude_client(proxy_url, upstreams):
    upstreams["gemini"].script("tool_call")
    with claude(proxy_url).messages.stream(model=alias("gemini"), max_tokens=64, tools=CLAUDE_TOOLS,
                                           messages=[{"role": "user", "content": QUESTION}]) as events:
        message = events.get_final_message()
    kinds = [b.type for b in message.content]
    assert kinds[-2:] == ["thinking", "tool_use"] and message.content[-2].signature.startswith("gemini:")


def test_cached_tokens_from_claude_reach_a_gemini_client_in_its_own_field(proxy_url, upstreams, driver_for):
    upstreams["claude"].script("text")
    driver = driver_for("gemini")  # held: the SDK closes its client with the driver
    response = driver.client.models.generate_content(model=alias("claude"), contents=QUESTION)
    assert response.usage_metadata.cached_content_token_count == scenarios.CACHED_TOKENS
    assert response.usage_metadata.prompt_token_count == scenarios.PROMPT_TOKENS


def test_ollama_system_message_mid_conversation_stays_in_place_for_openai(proxy_url, upstreams, driver_for):
    upstreams["openai"].script("text")
    outcome = driver_for("ollama").chat(alias("openai"), stream=False, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Checking."},
        {"role": "system", "content": REMINDER},
        {"role": "user", "content": "Go on."},
    ])
    assert outcome.text == scenarios.TEXT
    sent = upstreams["openai"].last.json["messages"]
    assert [(m["role"], m["content"]) for m in sent if m["role"] == "system"] == [("system", "Be brief."), ("system", REMINDER)]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "system", "user"]


# ---------------------------------------------------------------- per pair

PDF_BYTES = base64.b64decode(PDF)


def ask_with_pdf(client: str, model: str, proxy_url: str, driver_for) -> None:
    """A PDF and a question, as each client protocol that can carry one sends it."""
    if client == "responses":
        oai(proxy_url).responses.create(model=model, input=[{"role": "user", "content": [
            {"type": "input_file", "file_data": f"data:application/pdf;base64,{PDF}", "filename": "spec.pdf"},
            {"type": "input_text", "text": "Summarise this."}]}])
    elif client == "claude":
        claude(proxy_url).messages.create(model=model, max_tokens=64, messages=pdf_question())
    elif client == "openai":
        oai(proxy_url).chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "spec.pdf"}},
            {"type": "text", "text": "Summarise this."}]}])
    else:
        driver = driver_for("gemini")
        driver.client.models.generate_content(model=model, contents=[gtypes.Content(role="user", parts=[
            gtypes.Part(inline_data=gtypes.Blob(mime_type="application/pdf", data=PDF_BYTES)),
            gtypes.Part(text="Summarise this.")])])


def pdf_sent(upstream: str, body: dict) -> bool:
    if upstream == "claude":
        block = body["messages"][0]["content"][0]
        return block["type"] == "document" and block["source"] == {"type": "base64", "media_type": "application/pdf", "data": PDF}
    if upstream == "openai":
        return body["messages"][0]["content"][0]["file"]["file_data"] == f"data:application/pdf;base64,{PDF}"
    if upstream == "responses":
        part = body["input"][0]["content"][0]
        return part["type"] == "input_file" and part["file_data"] == f"data:application/pdf;base64,{PDF}"
    # Gemini to Gemini goes as the SDK wrote it: snake_case keys, URL-safe base64.
    inline = body["contents"][0]["parts"][0]["inlineData"]
    data = base64.b64decode(inline["data"].replace("-", "+").replace("_", "/"))
    return (inline.get("mimeType") or inline.get("mime_type")) == "application/pdf" and data == PDF_BYTES


@pytest.mark.parametrize("upstream", PROTOCOLS)
@pytest.mark.parametrize("client", ["claude", "openai", "gemini", "responses"])
def test_pdf_every_pair(client, upstream, proxy_url, upstreams, driver_for):
    upstreams[upstream].script("text")
    if upstream == "ollama":
        from google.genai import errors

        refusal = {"claude": anthropic.BadRequestError, "openai": openai.BadRequestError, "gemini": errors.ClientError,
                   "responses": openai.BadRequestError}
        with pytest.raises(refusal[client]) as caught:  # each SDK's own 400
            ask_with_pdf(client, alias(upstream), proxy_url, driver_for)
        assert getattr(caught.value, "status_code", getattr(caught.value, "code", None)) == 400
        assert "up-ollama" in str(caught.value) and upstreams["ollama"].requests == []
        return
    ask_with_pdf(client, alias(upstream), proxy_url, driver_for)
    assert pdf_sent(upstream, upstreams[upstream].last.json)


def history_with_reasoning(client: str) -> tuple[str, object]:
    """The client's own way of sending back a tool-calling turn with the
    reasoning an OpenAI-compatible reasoner showed it."""
    thought, call = "I should look it up.", {"city": "Paris"}
    if client == "claude":
        return "claude", [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": thought, "signature": ""},
                                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": call}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}]}]
    if client == "openai":
        return "openai", [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": None, "reasoning_content": thought, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(call)}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]
    if client == "responses":
        # The reasoning item as the proxy showed it: a summary, no encrypted content.
        return "responses", [
            {"role": "user", "content": QUESTION},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": thought}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": json.dumps(call)},
            {"type": "function_call_output", "call_id": "call_1", "output": "22C"}]
    if client == "ollama":
        return "ollama", [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "", "thinking": thought,
             "tool_calls": [{"function": {"name": "get_weather", "arguments": call}}]},
            {"role": "tool", "content": "22C", "tool_name": "get_weather"}]
    return "gemini", [
        gtypes.Content(role="user", parts=[gtypes.Part(text=QUESTION)]),
        gtypes.Content(role="model", parts=[gtypes.Part(text=thought, thought=True),
                                            gtypes.Part(function_call=gtypes.FunctionCall(name="get_weather", args=call))]),
        gtypes.Content(role="user", parts=[gtypes.Part(function_response=gtypes.FunctionResponse(
            name="get_weather", response={"output": "22C"}))])]


@pytest.mark.parametrize("client", PROTOCOLS)
def test_reasoning_goes_back_to_an_openai_compatible_reasoner_from_every_client(client, proxy_url, upstreams, driver_for):
    upstreams["openai"].script("text")
    _, history = history_with_reasoning(client)
    driver = driver_for(client)
    if client == "gemini":
        driver.chat(alias("openai"), stream=False, tools=True, contents=history)
    else:
        driver.chat(alias("openai"), stream=False, tools=True, messages=history)
    assistant = next(m for m in upstreams["openai"].last.json["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "I should look it up."
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
