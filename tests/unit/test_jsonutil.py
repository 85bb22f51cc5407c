"""The fast JSON path agrees with the standard library where it matters."""

import json

import pytest
from ccproxy.jsonutil import MAX_DEPTH, TooDeep, dumpb, dumps, loads, loads_object


@pytest.mark.parametrize("text", [
    '{"a":1,"b":[true,false,null],"c":"é😀","d":1.5e-7,"e":12345678901234567890}',
    '"\\ud83d\\ude00"',  # a surrogate pair: one emoji
    '{"a":1,"a":2}',
    " [ ] ",
])
def test_loads_matches_the_standard_library(text):
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_loads_takes_a_lone_surrogate_like_the_standard_library():
    assert loads('{"t":"cut \\ud83d"}') == {"t": "cut \ud83d"}


def test_loads_takes_text_that_holds_a_lone_surrogate_itself():
    # Tool-call fragments decoded from "\\ud83d" escapes, joined again.
    assert loads('{"t":"cut \ud83d"}') == {"t": "cut \ud83d"}
    assert loads_object('{"t":"cut \ud83d"}') == {"t": "cut \ud83d"}


@pytest.mark.parametrize("text", ["", "{", "[1,2", "nope", '{"a":}', b"\xff"])
def test_loads_rejects_what_is_not_json_with_value_error(text):
    with pytest.raises(ValueError):
        loads(text)


def test_dumps_is_compact_and_keeps_non_ascii():
    value = {"a": [1, None, True], "b": "é😀"}
    assert dumps(value) == '{"a":[1,null,true],"b":"é😀"}'
    assert dumpb(value) == dumps(value).encode()
    assert json.loads(dumpb(value)) == value


def test_dumps_escapes_a_lone_surrogate_instead_of_failing():
    out = dumpb({"t": "cut \ud83d"})
    assert out == b'{"t":"cut \\ud83d"}'
    assert loads(out) == {"t": "cut \ud83d"}


def test_tool_arguments_are_always_an_object():
    assert loads_object('{"x": 1}') == {"x": 1}
    assert loads_object("") == {}
    assert loads_object("[1]") == {"value": [1]}
    assert loads_object("{broken") == {"_raw": "{broken"}


def nested(depth: int, opener: str = '{"a":', closer: str = "}", middle: str = "1") -> str:
    return opener * depth + middle + closer * depth


@pytest.mark.parametrize("opener,closer", [('{"a":', "}"), ("[", "]")], ids=["objects", "arrays"])
def test_loads_takes_json_nested_to_the_limit_and_refuses_one_level_more(opener, closer):
    assert loads(nested(MAX_DEPTH, opener, closer)) is not None
    with pytest.raises(TooDeep):
        loads(nested(MAX_DEPTH + 1, opener, closer))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 5000])
def test_the_standard_librarys_fallback_is_held_to_the_same_depth(depth):
    # A lone surrogate sends the document to the standard library's parser.
    with pytest.raises(TooDeep):
        loads(nested(depth, middle='"cut \\ud83d"'))
    assert loads(nested(MAX_DEPTH, middle='"cut \\ud83d"')) is not None


def test_what_loads_takes_at_the_limit_can_be_written_again():
    value = loads(nested(MAX_DEPTH))
    assert loads(dumpb(value)) == value
