"""StreamResponse: a hang-up cancels the body; the end of a stream does not."""

import asyncio

from ccproxy.responses import StreamResponse
from starlette.background import BackgroundTask


def drive(body, disconnect_after_end: bool):
    sent: list[dict] = []
    events = {"closed": False, "background": False}
    done = asyncio.Event()
    some_sent = asyncio.Event()

    async def receive():
        if disconnect_after_end:
            await done.wait()  # like uvicorn and Mangum: disconnect once the response is complete
        else:
            await some_sent.wait()  # the client goes away mid-stream, a few pieces in
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if len(sent) >= 4:
            some_sent.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    async def background():
        events["background"] = True

    async def scenario():
        response = StreamResponse(body(events), media_type="text/event-stream", background=BackgroundTask(background))
        await response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
        return asyncio.current_task().cancelling()

    cancelling = asyncio.run(scenario())
    return sent, events, cancelling


async def endless(events):
    try:
        while True:
            yield b"data: tick\n\n"
            await asyncio.sleep(0)  # a turn for the client's hang-up
    finally:
        events["closed"] = True


async def short(events):
    for piece in (b"a", "b"):
        yield piece
        await asyncio.sleep(0)
    events["closed"] = True


def test_a_client_that_hangs_up_cancels_the_body_quietly():
    sent, events, cancelling = drive(endless, disconnect_after_end=False)
    assert events["closed"], "the body iterator was not closed"
    assert not events["background"]
    assert cancelling == 0, "the cancellation leaked out of the response"
    assert sent[0]["type"] == "http.response.start"
    assert all(m.get("more_body", True) for m in sent[1:]), "a hung-up stream is not ended as if complete"


def test_a_stream_that_ends_is_complete_and_runs_its_background():
    sent, events, cancelling = drive(short, disconnect_after_end=True)
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b""]
    assert sent[-1]["more_body"] is False
    assert events == {"closed": True, "background": True}
    assert cancelling == 0


def test_the_last_piece_ends_the_response_in_the_same_message():
    from ccproxy.pipeline import LastPiece

    async def ending(events):
        yield b"a"
        yield LastPiece(b"end")
        events["closed"] = True  # the body still runs to its end after the response is complete

    sent, events, cancelling = drive(ending, disconnect_after_end=True)
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [(b"a", True), (b"end", False)]
    assert events == {"closed": True, "background": True}
    assert cancelling == 0
