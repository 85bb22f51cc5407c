import pytest
from ccproxy.config import ConfigError, load, parse, resolve_secret
from ccproxy.errors import ProxyError
from ccproxy.routing import resolve, split_group

GOOD = {
    "providers": {
        "openai": {"protocol": "openai", "base_url": "https://api.openai.com/v1/", "keys": ["env:CCP_TEST_KEY"]},
        "local": {"protocol": "ollama", "base_url": "http://127.0.0.1:11434"},
        "router": {"protocol": "openai", "base_url": "https://openrouter.ai/api/v1"},
    },
    "groups": {
        "default": {"models": {"claude-sonnet-*": ["openai/gpt-4.1-mini"], "or": "router/anthropic/claude-3.5-sonnet", "*": ["local/qwen3:8b"]}},
        "free": {"tool_mode": "compat", "models": {"*": ["local/llama3"]}},
    },
    "active_group": "free",
}


def test_good_config_parses_in_order():
    config = parse(GOOD, "c.yaml")
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"
    assert list(config.groups["default"].models) == ["claude-sonnet-*", "or", "*"]
    target = config.groups["default"].models["or"][0]
    assert (target.provider, target.model) == ("router", "anthropic/claude-3.5-sonnet")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["providers"]["openai"].update(colour="red"), "c.yaml: providers.openai.colour: unknown key"),
        (lambda c: c["providers"]["openai"].update(protocol="grpc"), "providers.openai.protocol"),
        (lambda c: c["providers"]["openai"].update(base_url="api.openai.com"), "providers.openai.base_url: must start with http"),
        (lambda c: c.update(activ_group="x"), "c.yaml: activ_group: unknown key"),
        (lambda c: c.update(active_group="nope"), "active_group: no group named 'nope'"),
        (lambda c: c["groups"]["default"]["models"].update(x=["nope/m"]), "groups.default.models.x: unknown provider 'nope'"),
        (lambda c: c["groups"]["default"]["models"].update(x=["no-slash"]), "must be provider-id/model"),
        (lambda c: c["groups"]["free"].update(tool_mode="sometimes"), "groups.free.tool_mode"),
    ],
)
def test_bad_config_names_file_and_key(mutate, expected):
    import copy

    data = copy.deepcopy(GOOD)
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse(data, "c.yaml")
    assert expected in str(caught.value)


def test_load_reports_yaml_errors_with_the_file(tmp_path):
    path = tmp_path / "ccproxy.yaml"
    path.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError, match="ccproxy.yaml: not valid YAML"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_example_config_loads():
    from pathlib import Path

    config = load(Path(__file__).parents[2] / "ccproxy.example.yaml")
    assert config.providers["local"].base_url == "http://127.0.0.1:11434"
    assert {"openai", "anthropic", "gemini", "local"} <= set(config.providers)


def test_env_keys(monkeypatch):
    monkeypatch.setenv("CCP_TEST_KEY", "sk-x")
    assert resolve_secret("env:CCP_TEST_KEY") == "sk-x"
    assert resolve_secret("env:CCP_TEST_UNSET_KEY") is None
    assert resolve_secret("literal") == "literal"


def test_alias_globs_first_match_wins_and_group_at_alias():
    config = parse(GOOD, "c.yaml")
    assert str(resolve(config, "default", "claude-sonnet-4-5").targets[0]) == "openai/gpt-4.1-mini"
    assert str(resolve(config, "default", "anything").targets[0]) == "local/qwen3:8b"
    chosen = resolve(config, "default", "free@claude-sonnet-4-5")
    assert chosen.group_name == "free" and str(chosen.targets[0]) == "local/llama3"
    assert split_group("a@b") == ("a", "b") and split_group("plain") == (None, "plain")


def test_unknown_group_and_alias_are_404_naming_what_exists():
    config = parse({**GOOD, "groups": {"default": {"models": {"gpt-*": ["openai/gpt-4.1"]}}}, "active_group": "default"}, "c")
    with pytest.raises(ProxyError) as caught:
        resolve(config, "default", "claude-x")
    assert caught.value.status == 404 and "gpt-*" in caught.value.message
    with pytest.raises(ProxyError) as caught:
        resolve(config, "nogroup", "gpt-4")
    assert caught.value.status == 404 and "nogroup" in caught.value.message
