"""A conversation kept by one `ccproxy serve` process is continued through
another that shares its state file, as two workers or two Lambda instances
share the store: the Responses API's `previous_response_id` over the official
SDK, on a chat-completions upstream."""

from __future__ import annotations

import json
import os

import openai
import pytest

from tests.fakes import UPSTREAM_MODELS, FakeUpstream, scenarios
from tests.support.server import BackgroundServer, start_ccproxy

ACCESS_KEY = "ccp-kept-conversations-0123456789"
UPSTREAM_KEY = "sk-fake-openai-0123456789"


@pytest.fixture
def two_servers(tmp_path):
    fake = FakeUpstream("openai", key=UPSTREAM_KEY)
    upstream = BackgroundServer(fake.app).start()
    config = tmp_path / "ccproxy.yaml"
    config.write_text(
        json.dumps(
            {
                "providers": {
                    "up": {"protocol": "openai", "base_url": upstream.url + "/v1", "keys": [UPSTREAM_KEY]}
                },
                "groups": {"default": {"models": {"*": [f"up/{UPSTREAM_MODELS['openai']}"]}}},
                "access_keys": [ACCESS_KEY],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCPROXY_")}
    env["CCPROXY_STATE"] = str(tmp_path / "shared-state.db")
    processes = [start_ccproxy(config, env, tmp_path, "--quiet") for _ in range(2)]
    yield fake, [url for _, url in processes]
    for process, _ in processes:
        process.terminate()
        process.wait(timeout=10)
    upstream.stop()
    assert fake.violations == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_response_kept_by_one_process_is_continued_through_another(two_servers, stream):
    fake, (first_url, second_url) = two_servers
    first = openai.OpenAI(base_url=first_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    second = openai.OpenAI(base_url=second_url + "/v1", api_key=ACCESS_KEY, max_retries=0)
    fake.script("text", "text")
    if stream:
        with first.responses.stream(model="any-model", input="My name is Ada.") as events:
            kept = events.get_final_response()
    else:
        kept = first.responses.create(model="any-model", input="My name is Ada.")
    assert kept.output_text == scenarios.TEXT

    # The other process reads it back and continues it.
    assert second.responses.retrieve(kept.id).id == kept.id
    follow = second.responses.create(model="any-model", input="What is my name?", previous_response_id=kept.id)
    assert follow.previous_response_id == kept.id
    sent = fake.last.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert (sent[0]["content"], sent[1]["content"]) == ("My name is Ada.", scenarios.TEXT)

    # Forgotten through the first, it is gone for both.
    assert first.responses.delete(kept.id) is None
    with pytest.raises(openai.NotFoundError):
        second.responses.retrieve(kept.id)
    with pytest.raises(openai.BadRequestError) as refused:
        second.responses.create(model="any-model", input="again?", previous_response_id=kept.id)
    assert refused.value.code == "previous_response_not_found"
