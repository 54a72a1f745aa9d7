"""SSE streams through Envoy resume the way a browser's EventSource does: every event frame
carries `id: <cursor>`, heartbeats carry none, and a reconnect with Last-Event-ID (the last id
seen) continues exactly after it - nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.sms import SEND

pytestmark = pytest.mark.envoy


@dataclass
class Frame:
    id: str | None
    data: dict[str, Any]


@dataclass
class EventSource:
    """The parts of the WHATWG EventSource this needs: fields per frame, the last event id."""

    last_event_id: str = ""
    frames: list[Frame] = field(default_factory=list)

    async def read(
        self,
        http: httpx.AsyncClient,
        path: str,
        headers: dict[str, str],
        events: int,
        then_heartbeat: bool = False,
    ) -> None:
        """Reads frames until `events` non-heartbeat events (and then a heartbeat, if asked)
        arrived, then disconnects."""
        if self.last_event_id:
            headers = {**headers, "Last-Event-ID": self.last_event_id}
        seen = 0
        async with asyncio.timeout(15), http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            frame_id: str | None = None
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    frame_id = line[3:].removeprefix(" ")
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line == "" and data:
                    frame = Frame(frame_id, json.loads("\n".join(data)))
                    self.frames.append(frame)
                    if frame_id is not None:
                        self.last_event_id = frame_id
                    frame_id, data = None, []
                    if frame.data["envelope"]["type"] != "heartbeat":
                        seen += 1
                        if seen == events and not then_heartbeat:
                            return
                    elif seen == events and then_heartbeat:
                        return

    def events(self) -> list[Frame]:
        return [f for f in self.frames if f.data["envelope"]["type"] != "heartbeat"]


def sms(to: str) -> dict[str, Any]:
    return {"Messages": [{"channel": "smpp", "to": to, "content": "hello"}]}


async def test_sse_resumes_by_last_event_id_without_loss_or_duplicates(
    http: httpx.AsyncClient, bearer: dict[str, str]
) -> None:
    ids = []
    for i in range(3):
        sent = await http.post(SEND, json=sms(f"+2782123456{i}"), headers=bearer)
        assert sent.status_code == 200, sent.text
        ids.append(sent.json()["SMPPMsgResponse"]["messages"][0]["apiMessageId"])
    path = f"{SEND}/events?after=0&heartbeatSeconds=1&apiMessageIds=" + "&apiMessageIds=".join(ids)
    # Everything at once: accepted, sent, delivered per message.
    whole = EventSource()
    await whole.read(http, path, bearer, events=9)
    expected = [f.data["envelope"]["cursor"] for f in whole.events()]
    assert len(set(expected)) == 9

    # The same stream, read with disconnects after 2 and 4 more events; each reconnect sends
    # only Last-Event-ID (no after=), from the frames' ids.
    source = EventSource()
    path_without_after = path.replace("after=0&", "")
    await source.read(http, path, bearer, events=2)
    assert source.last_event_id == expected[1]
    await source.read(http, path_without_after, bearer, events=4)
    await source.read(http, path_without_after, bearer, events=3)
    assert [f.data["envelope"]["cursor"] for f in source.events()] == expected
    for frame in source.events():
        assert frame.id == frame.data["envelope"]["cursor"]

    # A heartbeat comes once the events are out; it carries no id, so it cannot move the
    # resume point past an event the client has not seen.
    before = source.last_event_id
    await source.read(http, path_without_after, bearer, events=0, then_heartbeat=True)
    assert source.frames[-1].data["envelope"]["type"] == "heartbeat"
    assert source.frames[-1].id is None
    assert source.last_event_id == before == expected[-1]
    assert [f.data["envelope"]["cursor"] for f in source.events()] == expected


async def test_heartbeats_carry_no_id(http: httpx.AsyncClient, bearer: dict[str, str]) -> None:
    source = EventSource()
    await source.read(http, f"{SEND}/events?heartbeatSeconds=1", bearer, 0, then_heartbeat=True)
    # No event for this fresh org: the first frame is a heartbeat, without an id line.
    assert source.frames[0].data["envelope"]["type"] == "heartbeat"
    assert source.frames[0].id is None
    assert source.last_event_id == ""
