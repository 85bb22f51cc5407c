"""What the fake upstreams answer: the scripted scenarios and their constants.

The constants are shared by every protocol so that a test can check the far
side of the proxy against the same values whatever pair of protocols it runs:
the proxy must deliver `TEXT` byte for byte, report `PROMPT_TOKENS` and
`OUTPUT_TOKENS`, and so on.

A content scenario is described once, protocol-neutrally, as a `Turn`; each
protocol module renders a `Turn` in its own wire format, whole and streamed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

# Non-ASCII on purpose: 2-, 3- and 4-byte UTF-8 sequences (and a variation
# selector) so that streams split inside multibyte characters.
TEXT = "It is 22°C and sunny in Paris — enjoy! ☀️ Ünïcødé 東京 🌍"
THINKING = "The user asks about Paris weather; 22°C — answer briefly. 考える"
THINKING_ANSWER = "Paris: 22°C, sunny ☀️."
# The start of TEXT that "midstream_error" and "truncated" streams send
# before they break off (it still holds a multibyte character).
PARTIAL_TEXT = "It is 22°C and sunny"

PROMPT_TOKENS = 21
CACHED_TOKENS = 5  # part of PROMPT_TOKENS, read from the prompt cache
OUTPUT_TOKENS = 9  # includes THINKING_TOKENS in the "thinking" scenario
THINKING_TOKENS = 4
COUNT_TOKENS = 42
EMBEDDING = [0.1, 0.2, 0.3]

WEATHER_ARGS: dict[str, Any] = {"city": "Paris"}
TIME_ARGS: dict[str, Any] = {"timezone": "Europe/Paris"}

# Tool-call ids each upstream hands out, first call then second call. Fixed so
# tests can check that the proxy passed them through. Gemini's second entry is
# unused: "parallel_tools" on Gemini deliberately has no ids (older models).
CALL_IDS: dict[str, tuple[str, str]] = {
    "openai": ("call_Wx7PzQ2mN4kL9vB3cR8tY1aD", "call_Tm3JhG6fE5dS2aQ9wZ4xC7vB"),
    "claude": ("toolu_01A09q90qw90lq917835lq9", "toolu_01B17x27rt58mn204913pk3"),
    "gemini": ("call_4162774", "call_4162775"),
    "ollama": ("call_ab12cd34", "call_ef56gh78"),
    # The call_id of a Responses function_call item (its own id is "fc_...").
    "responses": ("call_Rk4TnW8yLp2VbQ6xMz1JcH5s", "call_Ng7DqF3uXe9AjK2wPo6YtB4r"),
}
# Opaque signatures. Both are valid base64: Gemini's must be (the SDK decodes
# it), Anthropic's only looks like it.
CLAUDE_SIGNATURE = "EqQBCgIYAhIMfakeSignatureForTestsOnlyGgxA5m9Qb3JzZXR0ZQ=="
GEMINI_SIGNATURE = base64.b64encode(b"fake gemini thought signature \x00\x01\x02").decode()

# Scenario names, by what they do.
CONTENT = ("text", "tool_call", "parallel_tools", "thinking", "thinking_tool_call", "web_search", "compat_call", "compat_parallel")
ERRORS = ("rate_limit", "server_error", "overloaded")
FAULTS = ("midstream_error", "truncated", "hang", "stall")
NAMES = CONTENT + ERRORS + FAULTS

# The keyword arguments each scenario takes, with their defaults.
OPTIONS: dict[str, dict[str, Any]] = {
    "rate_limit": {"retry_after": 7},
    "hang": {"seconds": 30.0},
    # stall: stream the first records, then wait (for the client to go away).
    "stall": {"seconds": 30.0},
    # abort=True drops the TCP connection instead of ending the body cleanly.
    "truncated": {"abort": False},
}


@dataclass(frozen=True)
class Call:
    """One function call the model makes."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """A model turn, protocol-neutral: optional reasoning, text, then calls."""

    text: str = ""
    thinking: str = ""
    calls: tuple[Call, ...] = ()
    # A web search the upstream ran itself before answering: its query and
    # the (url, title) of each source found.
    search: tuple[str, tuple[tuple[str, str], ...]] | None = None

    @property
    def thinking_tokens(self) -> int:
        return THINKING_TOKENS if self.thinking else 0


# Compat mode: a model without function calling writes its calls as text
# (the README's compat call format), which the proxy must turn into native calls.
COMPAT_PREAMBLE = "Let me check that for you. 🌤"
COMPAT_WEATHER = '<tool_call name="get_weather">\n<arg name="city">Paris</arg>\n</tool_call>'
COMPAT_TIME = '<tool_call name="get_time">\n<arg name="timezone">Europe/Paris</arg>\n</tool_call>'

SEARCH = ("weather paris today", (("https://weather.example/paris", "Paris weather"), ("https://news.example/a", "A story")))

TURNS: dict[str, Turn] = {
    "text": Turn(text=TEXT),
    "tool_call": Turn(calls=(Call("get_weather", WEATHER_ARGS),)),
    "parallel_tools": Turn(calls=(Call("get_weather", WEATHER_ARGS), Call("get_time", TIME_ARGS))),
    "thinking": Turn(thinking=THINKING, text=THINKING_ANSWER),
    "thinking_tool_call": Turn(thinking=THINKING, calls=(Call("get_weather", WEATHER_ARGS),)),
    "web_search": Turn(text=TEXT, search=SEARCH),
    "compat_call": Turn(text=COMPAT_PREAMBLE + "\n" + COMPAT_WEATHER),
    "compat_parallel": Turn(text=COMPAT_PREAMBLE + "\n```xml\n" + COMPAT_WEATHER + "\n" + COMPAT_TIME + "\n```"),
}
PARTIAL_TURN = Turn(text=PARTIAL_TEXT)


@dataclass(frozen=True)
class Scenario:
    """A scripted answer: a name from NAMES plus its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, name: str, **kwargs: Any) -> "Scenario":
        """Check the name and keyword arguments now, so a typo fails in the
        test that wrote it rather than as a puzzling answer later."""
        if name not in NAMES:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(NAMES)}")
        allowed = OPTIONS.get(name, {})
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise TypeError(f"scenario {name!r} takes no option(s) {sorted(unknown)}; it takes {sorted(allowed)}")
        return cls(name, {**allowed, **kwargs})

    @property
    def turn(self) -> Turn:
        """The content to send; error and fault scenarios fall back to TEXT."""
        return TURNS.get(self.name, TURNS["text"])


def pieces(text: str, count: int | None = None) -> list[str]:
    """Split text into `count` non-empty pieces at character boundaries, the
    way a model streams it in increments (by default about one piece per ten
    characters, so longer texts, like compat-mode calls, are cut inside
    their tags)."""
    if count is None:
        count = max(3, len(text) // 10)
    if len(text) <= 1 or count <= 1:
        return [text]
    count = min(count, len(text))
    size, extra = divmod(len(text), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out
