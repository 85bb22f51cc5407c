"""A group's shaping (shape_request, merge_body) at its edges, and route
rules in routing.resolve."""

from __future__ import annotations

import copy

import pytest
from ccproxy.config import ConfigError, Shape, parse
from ccproxy.errors import ProxyError
from ccproxy.protocols import upstream_codec
from ccproxy.protocols.common import estimate_tokens, request_text
from ccproxy.routing import resolve
from ccproxy.shaping import merge_body, shape_request
from ccproxy.unified import Image, Message, Reasoning, Request, Text, Tool, ToolCall, ToolChoice, ToolResult

PNG = Image(media_type="image/png", data="iVBORw0KGgo=")


def shape(**fields) -> Shape:
    return Shape.model_validate(fields)


def ask(*messages: Message, **fields) -> Request:
    return Request(model="m", messages=list(messages) or [Message(role="user", content=[Text(text="hi")])], **fields)


def user(*parts) -> Message:
    return Message(role="user", content=list(parts))


def tools(*names: str) -> list[Tool]:
    return [Tool(name=name) for name in names]


# ---------------------------------------------------------------- prompt text


def test_a_request_without_a_user_turn_gets_the_system_text_only():
    request = Request(model="m", system="Be kind.", messages=[Message(role="assistant", content=[Text(text="Hello.")])])
    group = shape(prompt=[{"mode": "prepend", "to": "last_user", "text": "Think."}, {"to": "system", "text": "Be brief."}])
    shaped, steps = shape_request(request, group, "p", "m")
    assert steps == ["prompt[1]"]  # the step with nothing to change is not named
    assert shaped.messages == request.messages and shaped.system == "Be kind.\n\nBe brief."


def test_the_last_user_turn_is_the_one_changed():
    first, last = user(Text(text="first")), user(Text(text="second"))
    request = ask(first, Message(role="assistant", content=[Text(text="ok")]), last)
    shaped, _ = shape_request(request, shape(prompt=[{"mode": "append", "to": "last_user", "text": "!"}]), "p", "m")
    assert shaped.messages[0] == first
    assert [p.text for p in shaped.messages[2].content] == ["second", "!"]


def test_replacing_a_turns_text_keeps_its_images_and_tool_results():
    result = ToolResult(id="call_1", name="read", content=[Text(text="file body")])
    request = ask(user(result, Text(text="old"), PNG, Text(text="older")))
    shaped, steps = shape_request(request, shape(prompt=[{"mode": "replace", "to": "last_user", "text": "new"}]), "p", "m")
    assert steps == ["prompt[0]"]
    assert shaped.messages[0].content == [result, Text(text="new"), PNG]


def test_prepended_text_goes_after_the_tool_results_and_before_the_rest():
    results = [ToolResult(id="a", content=[Text(text="1")]), ToolResult(id="b", content=[Text(text="2")])]
    request = ask(user(*results, Text(text="and then")))
    shaped, _ = shape_request(request, shape(prompt=[{"mode": "prepend", "to": "last_user", "text": "Note."}]), "p", "m")
    assert shaped.messages[0].content == [*results, Text(text="Note."), Text(text="and then")]


@pytest.mark.parametrize(
    "mode,system,expected",
    [
        ("append", "You help.", "You help.\n\nAdded."),
        ("prepend", "You help.", "Added.\n\nYou help."),
        ("replace", "You help.", "Added."),
        ("append", None, "Added."),
        ("prepend", "", "Added."),
    ],
)
def test_system_injection_modes(mode, system, expected):
    shaped, _ = shape_request(ask(system=system), shape(prompt=[{"mode": mode, "text": "Added."}]), "p", "m")
    assert shaped.system == expected


def test_replace_reaches_system_turns_in_the_conversation_too():
    request = ask(user(Text(text="You are Claude Code, yes")), Message(role="system", content=[Text(text="You are Claude Code.")]),
                  system="You are Claude Code here.")
    shaped, steps = shape_request(request, shape(replace=[{"find": "Claude Code", "with": "an agent"}]), "p", "m")
    assert steps == ["replace"]
    assert shaped.system == "You are an agent here."
    assert shaped.messages[1].content == [Text(text="You are an agent.")]
    assert shaped.messages[0].content == [Text(text="You are Claude Code, yes")], "user turns are the user's"


def test_a_replacement_that_finds_nothing_is_no_step():
    _, steps = shape_request(ask(system="Hello."), shape(replace=[{"find": "absent", "with": "x"}]), "p", "m")
    assert steps == []


@pytest.mark.parametrize(
    "pattern,provider,model,applied",
    [
        ("qwen*", "local", "qwen3:8b", True),
        ("qwen*", "local", "llama3", False),
        ("local/*", "local", "llama3", True),
        ("local/*", "remote", "llama3", False),
        ("openrouter/anthropic/*", "openrouter", "anthropic/claude-3.5-sonnet", True),
    ],
)
def test_an_injections_models_glob_names_the_target(pattern, provider, model, applied):
    group = shape(prompt=[{"text": "Local.", "models": pattern}])
    shaped, steps = shape_request(ask(system="S"), group, provider, model)
    assert (shaped.system == "S\n\nLocal.") is applied and (steps == ["prompt[0]"]) is applied


# ---------------------------------------------------------------- tools


@pytest.mark.parametrize(
    "choice,kept",
    [
        (ToolChoice(mode="tool", name="WebSearch"), None),  # its tool is gone: the model chooses
        (ToolChoice(mode="tool", name="Read"), ToolChoice(mode="tool", name="Read")),
        (ToolChoice(mode="any"), ToolChoice(mode="any")),
    ],
)
def test_a_forced_choice_of_a_dropped_tool_falls_back_to_auto(choice, kept):
    request = ask(tools=tools("Read", "WebSearch", "NotebookEdit"), tool_choice=choice)
    shaped, steps = shape_request(request, shape(tools={"drop": ["WebSearch", "Notebook*"]}), "p", "m")
    assert [t.name for t in shaped.tools] == ["Read"] and steps == ["tools"]
    assert shaped.tool_choice == kept


def test_no_tool_left_means_no_choice_either():
    request = ask(tools=tools("WebSearch"), tool_choice=ToolChoice(mode="any"))
    shaped, _ = shape_request(request, shape(tools={"drop": ["*"]}), "p", "m")
    assert shaped.tools == [] and shaped.tool_choice is None


def test_keep_lets_through_only_its_globs_and_drop_still_applies():
    request = ask(tools=tools("Read", "ReadMany", "Write", "Bash"))
    shaped, _ = shape_request(request, shape(tools={"keep": ["Read*", "Bash"], "drop": ["ReadMany"]}), "p", "m")
    assert [t.name for t in shaped.tools] == ["Read", "Bash"]


def test_a_filter_that_drops_nothing_is_no_step():
    request = ask(tools=tools("Read"), tool_choice=ToolChoice(mode="tool", name="Read"))
    shaped, steps = shape_request(request, shape(tools={"drop": ["Web*"]}), "p", "m")
    assert steps == [] and shaped.tool_choice == ToolChoice(mode="tool", name="Read")


# ---------------------------------------------------------------- parameters


def test_defaults_fill_only_what_the_client_left_out():
    group = shape(defaults={"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 1000})
    shaped, steps = shape_request(ask(temperature=0.0, max_tokens=50), group, "p", "m")
    assert (shaped.temperature, shaped.top_p, shaped.top_k, shaped.max_tokens) == (0.0, 0.9, 40, 50)
    assert steps == ["defaults"]


def test_overrides_replace_what_the_client_gave():
    shaped, steps = shape_request(ask(temperature=1.0, top_p=0.5), shape(overrides={"temperature": 0.1}), "p", "m")
    assert (shaped.temperature, shaped.top_p, steps) == (0.1, 0.5, ["overrides"])


def test_the_temperature_ratio_scales_only_a_temperature_the_client_gave():
    group = shape(temperature_ratio=0.5, defaults={"temperature": 0.7})
    scaled, steps = shape_request(ask(temperature=0.8), group, "p", "m")
    assert scaled.temperature == pytest.approx(0.4) and steps == ["temperature_ratio"]
    defaulted, steps = shape_request(ask(), group, "p", "m")
    assert defaulted.temperature == 0.7 and steps == ["defaults"]


@pytest.mark.parametrize(
    "said",
    [
        Reasoning(enabled=False),  # the client turned thinking off
        Reasoning(enabled=True, budget_tokens=1024),
        Reasoning(effort="low"),
        Reasoning(effort="none", enabled=False),
    ],
    ids=["off", "budget", "effort", "none"],
)
@pytest.mark.parametrize("default", [{"reasoning_effort": "high"}, {"thinking_budget": 20000}], ids=["effort", "budget"])
def test_thinking_defaults_leave_what_the_client_said(said, default):
    shaped, steps = shape_request(ask(reasoning=said), shape(defaults=default), "p", "m")
    assert shaped.reasoning == said and steps == []


@pytest.mark.parametrize(
    "default,expected",
    [
        ({"reasoning_effort": "high"}, Reasoning(enabled=True, effort="high")),
        ({"reasoning_effort": "none"}, Reasoning(enabled=False, effort="none")),
        ({"thinking_budget": 4096}, Reasoning(enabled=True, budget_tokens=4096)),
        ({"thinking_budget": 0}, Reasoning(enabled=False, budget_tokens=0)),
    ],
)
def test_thinking_defaults_where_the_client_said_nothing(default, expected):
    for reasoning in (None, Reasoning(include_thoughts=False)):  # include_thoughts alone says nothing of thinking
        shaped, steps = shape_request(ask(reasoning=reasoning), shape(defaults=default), "p", "m")
        wanted = expected.model_copy(update={"include_thoughts": reasoning.include_thoughts if reasoning else True})
        assert shaped.reasoning == wanted and steps == ["defaults"]


def test_thinking_overrides_replace_the_clients_kind_of_thinking():
    shaped, _ = shape_request(ask(reasoning=Reasoning(enabled=True, budget_tokens=30000)),
                              shape(overrides={"reasoning_effort": "low"}), "p", "m")
    assert shaped.reasoning == Reasoning(enabled=True, effort="low")


def test_limits_are_ceilings():
    group = shape(limits={"max_tokens": 8192, "temperature": 1.0, "thinking_budget": 4096})
    high = ask(max_tokens=64000, temperature=1.5, reasoning=Reasoning(enabled=True, budget_tokens=30000))
    shaped, steps = shape_request(high, group, "p", "m")
    assert (shaped.max_tokens, shaped.temperature, shaped.reasoning.budget_tokens) == (8192, 1.0, 4096)
    assert steps == ["limits"]
    low = ask(max_tokens=100, temperature=0.2, reasoning=Reasoning(enabled=True, budget_tokens=2000))
    shaped, steps = shape_request(low, group, "p", "m")
    assert (shaped.max_tokens, shaped.temperature, shaped.reasoning.budget_tokens, steps) == (100, 0.2, 2000, [])


def test_a_client_that_asked_no_max_tokens_gets_the_ceiling():
    shaped, steps = shape_request(ask(), shape(limits={"max_tokens": 8192}), "p", "m")
    assert shaped.max_tokens == 8192 and steps == ["limits"]


def test_the_thinking_budget_ceiling_holds_for_a_default_budget():
    group = shape(defaults={"thinking_budget": 20000}, limits={"thinking_budget": 8192})
    shaped, steps = shape_request(ask(), group, "p", "m")
    assert shaped.reasoning.budget_tokens == 8192 and steps == ["defaults", "limits"]


@pytest.mark.parametrize("effort", ["high", "max"])
def test_the_thinking_budget_ceiling_holds_for_a_client_that_gave_an_effort(effort):
    """An effort becomes a budget on the upstreams that take budgets; the
    ceiling must hold there as for a budget the client gave."""
    group = shape(limits={"thinking_budget": 2048})
    shaped, _ = shape_request(ask(reasoning=Reasoning(enabled=True, effort=effort), max_tokens=64000), group, "p", "m")
    claude = upstream_codec("claude").encode_request(shaped, "claude-m")
    gemini = upstream_codec("gemini").encode_request(shaped, "gemini-m")
    assert claude["thinking"]["budget_tokens"] <= 2048
    assert gemini["generationConfig"]["thinkingConfig"]["thinkingBudget"] <= 2048


# ---------------------------------------------------------------- the client's request and the steps


def test_the_clients_request_is_left_as_it_came():
    request = Request(
        model="m",
        system="You are Claude Code.",
        messages=[user(Text(text="hi")), Message(role="system", content=[Text(text="You are Claude Code.")]),
                  Message(role="assistant", content=[ToolCall(id="c", name="Read")]),
                  user(ToolResult(id="c", content=[Text(text="x")]), Text(text="go"))],
        tools=tools("Read", "WebSearch"),
        tool_choice=ToolChoice(mode="tool", name="WebSearch"),
        temperature=0.8,
        reasoning=Reasoning(enabled=True, budget_tokens=30000),
    )
    before = request.model_dump()
    group = shape(
        replace=[{"find": "Claude Code", "with": "an agent"}],
        prompt=[{"to": "system", "text": "S"}, {"mode": "replace", "to": "last_user", "text": "U"}],
        tools={"drop": ["WebSearch"]}, temperature_ratio=0.5, overrides={"top_p": 0.5},
        limits={"max_tokens": 10, "thinking_budget": 1024}, extra_body={"seed": 1},
    )
    shaped, steps = shape_request(request, group, "p", "m")
    assert steps == ["replace", "prompt[0]", "prompt[1]", "tools", "temperature_ratio", "overrides", "limits", "extra_body"]
    assert request.model_dump() == before
    assert shaped.model_dump() != before


def test_no_shape_changes_nothing():
    request = ask(system="S", temperature=0.5, tools=tools("Read"))
    shaped, steps = shape_request(request, Shape(), "p", "m")
    assert steps == [] and shaped == request


# ---------------------------------------------------------------- merge_body


def test_merge_body_merges_mappings_key_by_key():
    body = {"model": "m", "options": {"temperature": 0.2, "nested": {"a": 1}}, "stream": True}
    extra = {"options": {"num_ctx": 32768, "nested": {"b": 2}}, "keep_alive": "5m"}
    kept = copy.deepcopy(extra)
    merge_body(body, extra)
    assert body == {"model": "m", "options": {"temperature": 0.2, "nested": {"a": 1, "b": 2}, "num_ctx": 32768},
                    "stream": True, "keep_alive": "5m"}
    assert extra == kept, "the config's extra_body is not changed by a merge"


@pytest.mark.parametrize(
    "body,extra,expected",
    [
        ({"stop": ["a"]}, {"stop": ["b"]}, {"stop": ["b"]}),  # lists are replaced, not joined
        ({"options": 3}, {"options": {"x": 1}}, {"options": {"x": 1}}),
        ({"options": {"x": 1}}, {"options": None}, {"options": None}),
        ({"think": True}, {"think": False}, {"think": False}),
        ({}, {}, {}),
    ],
)
def test_merge_body_replaces_what_is_not_a_mapping_in_both(body, extra, expected):
    merge_body(body, extra)
    assert body == expected


def test_a_merge_leaves_the_bodys_own_mappings_alone():
    inner = {"temperature": 0.2}
    body = {"options": inner}
    merge_body(body, {"options": {"num_ctx": 1}})
    assert inner == {"temperature": 0.2} and body["options"] == {"temperature": 0.2, "num_ctx": 1}


# ---------------------------------------------------------------- routing by need


def routed_config(route: list, models: dict | None = None):
    return parse(
        {
            "providers": {"p": {"protocol": "openai", "base_url": "http://x"}},
            "groups": {
                "default": {"route": route, "models": models if models is not None else {"claude-*": "p/alias", "*": "p/any"}},
                "other": {"models": {"*": "p/other"}},
            },
        },
        "test",
    )


RULES = [
    {"when": {"input_tokens_over": 100}, "targets": ["p/long"]},
    {"when": "thinking", "targets": ["p/thinker"]},
    {"when": "images", "targets": ["p/vision"]},
    {"when": {"model": "claude-haiku-*"}, "targets": ["p/small"]},
]


def request_of(model: str = "claude-sonnet", text: str = "hi", reasoning: Reasoning | None = None, image: bool = False) -> Request:
    parts = [Text(text=text), *([PNG] if image else [])]
    return Request(model=model, messages=[user(*parts)], reasoning=reasoning)


def target(resolution) -> str:
    return ",".join(str(t) for t in resolution.targets)


@pytest.mark.parametrize(
    "request_,chosen,rule",
    [
        (request_of(text="x" * 404), "p/long", "route.0: input_tokens_over 100"),  # about 101 tokens
        (request_of(reasoning=Reasoning(enabled=True)), "p/thinker", "route.1: thinking"),
        (request_of(reasoning=Reasoning(effort="low")), "p/thinker", "route.1: thinking"),
        (request_of(reasoning=Reasoning(enabled=True, budget_tokens=0)), "p/alias", None),
        (request_of(reasoning=Reasoning(effort="none")), "p/alias", None),
        (request_of(reasoning=Reasoning(enabled=False, budget_tokens=4096)), "p/alias", None),
        (request_of(image=True), "p/vision", "route.2: images"),
        (request_of("claude-haiku-4"), "p/small", "route.3: model claude-haiku-*"),
        (request_of("claude-haiku-4", reasoning=Reasoning(enabled=True), image=True), "p/thinker", "route.1: thinking"),
        (request_of("claude-haiku-4", text="x" * 1000, image=True), "p/long", "route.0: input_tokens_over 100"),
        (request_of("gpt-4o"), "p/any", None),
    ],
    ids=["long", "thinking", "effort", "budget-0", "effort-none", "thinking-off", "image",
         "background", "first-rule-wins", "first-rule-wins-again", "no-rule"],
)
def test_the_first_rule_the_request_meets_chooses(request_, chosen, rule):
    resolution = resolve(routed_config(RULES), "default", request_.model, request_)
    assert (target(resolution), resolution.rule) == (chosen, rule)
    assert resolution.alias == (rule.split(":")[0] if rule else ("claude-*" if request_.model.startswith("claude") else "*"))
    assert resolution.model == request_.model


def test_input_tokens_over_means_more_than_the_count_tokens_estimate():
    request = Request(model="m", system="Be brief.", messages=[user(Text(text="word " * 300))], tools=tools("Read"))
    estimate = estimate_tokens(request_text(request))
    for limit, chosen in ((estimate - 1, "p/long"), (estimate, "p/any")):
        config = routed_config([{"when": {"input_tokens_over": limit}, "targets": ["p/long"]}])
        assert target(resolve(config, "default", "m", request)) == chosen


def test_an_image_a_tool_returned_counts_as_an_image():
    request = Request(model="m", messages=[user(ToolResult(id="c", content=[PNG]))])
    assert target(resolve(routed_config(RULES), "default", "m", request)) == "p/vision"


def test_every_condition_of_a_rule_must_hold():
    config = routed_config([{"when": {"model": "claude-opus-*", "thinking": True}, "targets": ["p/deep"]}])
    thinking = Reasoning(enabled=True)
    assert target(resolve(config, "default", "claude-opus-4", request_of("claude-opus-4", reasoning=thinking))) == "p/deep"
    assert target(resolve(config, "default", "claude-opus-4", request_of("claude-opus-4"))) == "p/alias"
    assert target(resolve(config, "default", "claude-sonnet", request_of("claude-sonnet", reasoning=thinking))) == "p/alias"


def test_a_rule_may_ask_for_the_absence_of_a_need():
    config = routed_config([{"when": {"thinking": False, "images": False}, "targets": ["p/plain"]}])
    assert target(resolve(config, "default", "x", request_of("x"))) == "p/plain"
    assert target(resolve(config, "default", "x", request_of("x", image=True))) == "p/any"


def test_the_rule_named_in_the_record_says_what_it_asks():
    """A rule for requests without thinking must not read as one for thinking."""
    config = routed_config([{"when": {"thinking": False, "input_tokens_over": 0}, "targets": ["p/plain"]}])
    rule = resolve(config, "default", "x", request_of("x")).rule
    thinking_rule = resolve(routed_config(RULES[1:2]), "default", "x", request_of("x", reasoning=Reasoning(enabled=True))).rule
    assert rule is not None and rule.startswith("route.0: ") and thinking_rule == "route.0: thinking"
    said = rule.split(": ", 1)[1].split(", ")
    assert "input_tokens_over 0" in said and any("thinking" in need for need in said)
    assert "thinking" not in said, f"{rule!r} reads as a rule for thinking"


def test_a_rule_target_on_an_unknown_provider_is_refused():
    with pytest.raises(ConfigError) as raised:
        routed_config([{"when": "images", "targets": ["nowhere/x"]}])
    assert "groups.default.route.0.targets: unknown provider 'nowhere'" in str(raised.value)


def test_without_a_request_only_rules_on_the_model_name_apply():
    """Embeddings have no request to look into."""
    config = routed_config([{"when": "thinking", "targets": ["p/thinker"]}, {"when": {"thinking": False}, "targets": ["p/plain"]},
                            {"when": {"model": "embed-*"}, "targets": ["p/embedder"]}])
    assert target(resolve(config, "default", "embed-small")) == "p/embedder"
    assert target(resolve(config, "default", "other")) == "p/any"


def test_a_group_named_in_the_model_has_its_own_rules():
    resolution = resolve(routed_config(RULES), "default", "other@claude-haiku-4", request_of("claude-haiku-4"))
    assert (target(resolution), resolution.rule, resolution.group_name) == ("p/other", None, "other")


def test_without_a_matching_rule_or_alias_the_model_is_not_found():
    config = routed_config(RULES, models={"claude-*": "p/alias"})
    with pytest.raises(ProxyError) as raised:
        resolve(config, "default", "gpt-4o", request_of("gpt-4o"))
    assert raised.value.status == 404
    assert target(resolve(config, "default", "gpt-4o", request_of("gpt-4o", image=True))) == "p/vision"


@pytest.mark.parametrize(
    "when,message",
    [
        ("fast", "say thinking, images"),
        ({}, "give at least one condition"),
        ({"tokens_over": 5}, "tokens_over"),
        ({"input_tokens_over": -1}, "input_tokens_over"),
    ],
)
def test_a_bad_rule_is_refused_when_the_config_loads(when, message):
    with pytest.raises(ConfigError) as raised:
        routed_config([{"when": when, "targets": ["p/x"]}])
    assert message in str(raised.value)


def test_a_rules_own_shape_is_chosen_over_the_groups():
    from ccproxy import routing
    from ccproxy.config import parse

    config = parse({
        "providers": {"p": {"protocol": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "groups": {"g": {
            "shape": {"limits": {"max_tokens": 100}},
            "route": [{"when": {"model": "small-*"}, "targets": ["p/s"], "shape": {"limits": {"max_tokens": 10}}},
                      {"when": {"model": "bare-*"}, "targets": ["p/b"]}],
            "models": {"*": ["p/m"]},
        }},
        "active_group": "g",
    }, "test")
    shapes = {model: routing.resolve(config, "g", model).shape for model in ("small-1", "bare-1", "other")}
    assert {model: shape.limits.max_tokens for model, shape in shapes.items()} == {"small-1": 10, "bare-1": 100, "other": 100}
