"""Named access keys: parsed from the secrets and the config, identified in
constant time, and the state stores' counters they are limited by."""

from __future__ import annotations

import datetime

import pytest
from ccproxy.config import ConfigError, parse
from ccproxy.keys import KeyRing, fingerprint, identify
from ccproxy.stores.secrets import AccessKey, NoSecrets, SecretsError, parse_secrets
from ccproxy.stores.state import MemoryStateStore, SqliteStateStore


def test_plain_and_named_keys_parse_and_round_trip():
    document = {"providers": {}, "access_keys": [
        "ccp-plain-0123456789",
        {"name": "laptop", "key": "ccp-laptop-0123456789", "groups": ["default"], "models": ["claude-*"],
         "rpm": 60, "tokens_per_day": 2000000, "expires": "2027-06-30"},
    ]}
    secrets = parse_secrets(document, "s")
    plain, laptop = secrets.access_keys
    assert plain.name == fingerprint("ccp-plain-0123456789") and plain.rpm is None and plain.groups is None
    assert laptop.groups == ("default",) and laptop.models == ("claude-*",) and laptop.rpm == 60
    assert laptop.expires == datetime.date(2027, 6, 30)
    assert not laptop.expired(datetime.date(2027, 6, 30)) and laptop.expired(datetime.date(2027, 7, 1))
    assert laptop.allows_model("claude-sonnet") and not laptop.allows_model("gpt-4")
    assert secrets.document() == document
    assert "ccp-laptop" not in repr(laptop)


@pytest.mark.parametrize("entry, says", [
    ({"name": "x"}, "name and key"),
    ({"name": "x", "key": "ccp-secret-0123456789", "rpm": 0}, "rpm"),
    ({"name": "x", "key": "ccp-secret-0123456789", "expires": "soon"}, "expires"),
    ({"name": "x", "key": "ccp-secret-0123456789", "colour": "red"}, "colour"),
    (7, "string or an object"),
])
def test_bad_entries_are_refused_without_quoting_the_key(entry, says):
    with pytest.raises(SecretsError) as caught:
        parse_secrets({"access_keys": [entry]}, "s")
    assert says in str(caught.value) and "ccp-secret" not in str(caught.value)


def test_two_keys_with_one_name_are_refused():
    with pytest.raises(SecretsError, match="two access keys"):
        parse_secrets({"access_keys": [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}]}, "s")


def test_the_config_takes_named_keys_with_env_references(monkeypatch):
    monkeypatch.setenv("CCP_T_NAMED", "ccp-from-env-0123456789")
    config = parse({"access_keys": ["ccp-plain", {"name": "ci", "key": "env:CCP_T_NAMED", "rpm": 5},
                                    {"name": "unset", "key": "env:CCP_T_UNSET_ANYWHERE"}]}, "c")
    keys = KeyRing(config, NoSecrets()).access_keys()
    assert [k.name for k in keys] == [fingerprint("ccp-plain"), "ci"]
    assert identify("ccp-from-env-0123456789", keys).name == "ci"
    assert identify("ccp-plain", keys).name == fingerprint("ccp-plain")
    assert identify("ccp-other", keys) is None and identify(None, keys) is None
    with pytest.raises(ConfigError, match="rpm"):
        parse({"access_keys": [{"name": "ci", "key": "k", "rpm": "many"}]}, "c")


@pytest.mark.parametrize("make", [lambda tmp: MemoryStateStore(), lambda tmp: SqliteStateStore(tmp / "s.db")])
def test_counters_add_expire_and_count_windows(make, tmp_path):
    store = make(tmp_path)
    far = 4_000_000_000.0
    assert store.add_amount("a", 5, far) == 5 and store.add_amount("a", 2, far) == 7
    assert store.read_amount("a", far - 1) == 7 and store.read_amount("a", far) == 0
    assert store.read_amount("unknown", 0.0) == 0
    assert store.add_amount("gone", 5, 1.0) == 5 and store.add_amount("gone", 2, far) == 2  # expired: restarts
    assert [store.count_window("w", far) for _ in range(3)] == [1, 2, 3]
    assert store.count_window("w", far + 60) == 1
    store.close()


def test_unused_key_record_reveals_nothing():
    key = AccessKey("n", "ccp-secret-value-0123456789")
    assert "secret" not in key.fingerprint and "secret" not in repr(key)
