"""Tool compatibility mode: function calling for models that lack it.

Some upstream models (small local ones, mostly) have no native function
calling. In compat mode the proxy describes the tools in the system prompt and
asks the model to write each call as text, in the format the README gives::

    <tool_call name="get_weather">
    <arg name="city">Paris</arg>
    <arg name="days">3</arg>
    </tool_call>

Two halves make this work, both pure (no I/O):

* `rewrite_request` turns a unified Request with tools into one without:
  the tools become prompt text, and past calls and results in the history
  become text in the same format, so the model sees a consistent story.
* `CompatParser` (streams, through `CompatStream`) and `parse_response`
  (whole answers) turn the model's text calls back into native unified tool
  calls, which the client's codec then encodes in its own protocol.

Weak models are sloppy, so the parser is lenient: code fences around calls,
a missing `</tool_call>`, raw `<` and `&` in values, JSON bodies, the
Hermes/Qwen `{"name": ..., "arguments": ...}` body and odd quoting all work.
A call to a tool the request does not offer is not a call: it stays text.

The modules: `values` (the format's markers, and a call's body read into
arguments) lies under all the others; `render` (calls and results written as
text), `prompt` (the tools described) and `history` (the request rewritten)
serve the way to the upstream; `parser` (the streaming parser) and `stream`
(the parser over a unified stream or a whole response) the way back.
"""

from __future__ import annotations

from .history import rewrite_request
from .parser import CompatParser, State
from .prompt import tool_instructions
from .render import format_call, format_result
from .stream import CompatStream, parse_response, wrap_stream

__all__ = [
    "CompatParser",
    "CompatStream",
    "State",
    "format_call",
    "format_result",
    "parse_response",
    "rewrite_request",
    "tool_instructions",
    "wrap_stream",
]
