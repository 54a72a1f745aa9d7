"""The carrier layer of the calling engine: media validation and durations, and the sandbox
carrier's outcomes, timing, play queues, mixes and reconcile, on real timers kept short."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import pytest

from switchboard.server.calling import media
from switchboard.server.calling.carrier import (
    LOCAL_HANGUP,
    MIX_CLOSED,
    REMOTE_HANGUP,
    SERVER_RESTART,
    CallNotActive,
    Carrier,
    CarrierEvent,
    EventKind,
    FailureCode,
    LegFlags,
    LegInOtherMix,
    UnknownTarget,
)
from switchboard.server.calling.media import Audio, AudioSource, Dtmf, Gender, Tts
from switchboard.server.calling.sandbox import SandboxCarrier
from tests.support.clock import TEST_CLOCK

pytestmark = pytest.mark.unit

K = EventKind
RING = 0.05
SLACK = 0.010  # timers never fire early by more than this
LATE = 0.150  # a loaded 2-core machine may be this late
OK_NUMBER = "+27821234567"
FROM = "+27820000001"


class Recorder:
    """The engine's sink: keeps every event with the order it arrived in."""

    def __init__(self) -> None:
        self.events: list[CarrierEvent] = []

    async def __call__(self, events: Sequence[CarrierEvent]) -> None:
        self.events.extend(events)

    def of(self, target_id: str) -> list[CarrierEvent]:
        return [e for e in self.events if e.target_id == target_id]

    def kinds(self, target_id: str) -> list[EventKind]:
        return [e.kind for e in self.of(target_id)]

    def find(self, target_id: str, kind: EventKind, play_id: str = "") -> CarrierEvent:
        return next(
            e
            for e in self.of(target_id)
            if e.kind is kind and (not play_id or e.play_id == play_id)
        )

    async def until(self, done: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.002)

    async def until_kind(self, target_id: str, kind: EventKind, count: int = 1) -> None:
        await self.until(lambda: self.kinds(target_id).count(kind) >= count)


def seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def assert_near(actual: float, expected: float) -> None:
    assert expected - SLACK <= actual <= expected + LATE, (actual, expected)


def make_wav(seconds_long: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * round(seconds_long * rate))
    return buffer.getvalue()


@pytest.fixture
async def sink() -> Recorder:
    return Recorder()


async def started(sink: Recorder, **options: object) -> SandboxCarrier:
    options.setdefault("ring_seconds", RING)
    carrier = SandboxCarrier(TEST_CLOCK, **options)  # type: ignore[arg-type]
    await carrier.start(sink)
    return carrier


@pytest.fixture
async def carrier(sink: Recorder) -> AsyncIterator[SandboxCarrier]:
    carrier = await started(sink, speed=20.0, remote_hangup_seconds=0.1)
    yield carrier
    await carrier.stop()


async def answered(carrier: SandboxCarrier, sink: Recorder, call_id: str) -> None:
    await carrier.dial(call_id, FROM, OK_NUMBER, 5000)
    await sink.until_kind(call_id, K.ANSWERED)


def test_sandbox_is_a_carrier() -> None:
    implementation: Carrier = SandboxCarrier(TEST_CLOCK)
    assert implementation.name == "sandbox"


# -- outcomes by number


@pytest.mark.parametrize(
    ("to", "timeout_ms", "kinds", "code", "terminal_at"),
    [
        ("+27821230486", 5000, [K.REJECTED], FailureCode.BUSY, 0.0),
        ("+27821230404", 150, [K.RINGING, K.REJECTED], FailureCode.NO_ANSWER, 0.15),
        ("+27821230503", 5000, [K.RINGING, K.REJECTED], FailureCode.CARRIER_ERROR, RING),
        ("12345", 5000, [K.REJECTED], FailureCode.INVALID_NUMBER, 0.0),
        ("not a number", 5000, [K.REJECTED], FailureCode.INVALID_NUMBER, 0.0),
        # Rings longer than the caller waits: no answer at the timeout.
        (OK_NUMBER, 30, [K.RINGING, K.REJECTED], FailureCode.NO_ANSWER, 0.03),
    ],
)
async def test_rejections(
    carrier: SandboxCarrier,
    sink: Recorder,
    to: str,
    timeout_ms: int,
    kinds: list[EventKind],
    code: FailureCode,
    terminal_at: float,
) -> None:
    call_id = f"call-{to}-{timeout_ms}"
    began = TEST_CLOCK.now()
    await carrier.dial(call_id, FROM, to, timeout_ms)
    await sink.until_kind(call_id, K.REJECTED)
    await asyncio.sleep(RING * 2)  # nothing follows a terminal event
    assert sink.kinds(call_id) == kinds
    rejected = sink.of(call_id)[-1]
    assert rejected.failure_code is code and rejected.reason and rejected.terminal
    assert_near(seconds(rejected.at, began), terminal_at)
    if K.RINGING in kinds:
        assert_near(seconds(sink.of(call_id)[0].at, began), 0.0)


async def test_answer_then_local_hangup_is_idempotent(
    carrier: SandboxCarrier, sink: Recorder
) -> None:
    began = TEST_CLOCK.now()
    await carrier.dial("c1", FROM, OK_NUMBER, 5000)
    await sink.until_kind("c1", K.ANSWERED)
    ringing, answer = sink.of("c1")
    assert_near(seconds(ringing.at, began), 0.0)
    assert_near(seconds(answer.at, began), RING)
    await asyncio.sleep(0.1)
    assert sink.kinds("c1") == [K.RINGING, K.ANSWERED]  # stays up until hung up

    await carrier.hangup("c1")
    await carrier.hangup("c1")
    await carrier.hangup("never-dialled")
    await sink.until_kind("c1", K.ENDED)
    await asyncio.sleep(0.02)
    assert sink.kinds("c1") == [K.RINGING, K.ANSWERED, K.ENDED]
    assert sink.of("c1")[-1].reason == LOCAL_HANGUP
    assert sink.of("never-dialled") == []


async def test_remote_hangup(carrier: SandboxCarrier, sink: Recorder) -> None:
    began = TEST_CLOCK.now()
    await carrier.dial("c-remote", FROM, "+27821230500", 5000)
    await sink.until_kind("c-remote", K.ENDED)
    ringing, answer, ended = sink.of("c-remote")
    assert [ringing.kind, answer.kind, ended.kind] == [K.RINGING, K.ANSWERED, K.ENDED]
    assert ended.reason == REMOTE_HANGUP
    assert_near(seconds(answer.at, began), RING)
    assert_near(seconds(ended.at, answer.at), 0.1)


async def test_hangup_while_ringing_cancels(sink: Recorder) -> None:
    # A long ring: on a loaded machine the hang-up must still land while it rings.
    carrier = await started(sink, ring_seconds=30.0)
    try:
        await carrier.dial("c-cancel", FROM, OK_NUMBER, 60_000)
        await sink.until_kind("c-cancel", K.RINGING)
        await carrier.hangup("c-cancel")
        await sink.until_kind("c-cancel", K.ENDED)
        assert sink.kinds("c-cancel") == [K.RINGING, K.ENDED]
    finally:
        await carrier.stop()


async def test_redial_of_a_known_call_is_a_no_op(carrier: SandboxCarrier, sink: Recorder) -> None:
    await answered(carrier, sink, "c-dup")
    await carrier.dial("c-dup", FROM, OK_NUMBER, 5000)
    await asyncio.sleep(RING * 2)
    assert sink.kinds("c-dup") == [K.RINGING, K.ANSWERED]
    with pytest.raises(ValueError, match="answer_timeout_ms"):
        await carrier.dial("c-zero", FROM, OK_NUMBER, 0)


# -- plays


async def test_plays_run_in_order_for_their_durations(
    carrier: SandboxCarrier, sink: Recorder
) -> None:
    await answered(carrier, sink, "c-play")
    plays: list[tuple[str, media.Media, float]] = [
        ("p1", media.dtmf("12w"), 0.8),  # 2 x 150 ms + 500 ms
        ("p2", media.tts(" ".join(["word"] * 10)), 4.0),  # 10 words at 150/min
        ("p3", media.dtmf("#"), 0.15),
    ]
    for play_id, item, _ in plays:
        await carrier.play("c-play", play_id, item)
    await sink.until(lambda: sink.kinds("c-play").count(K.PLAY_COMPLETED) == 3)

    events = [e for e in sink.of("c-play") if e.play_id]
    assert [(e.kind, e.play_id) for e in events] == [
        (kind, play_id) for play_id, _, _ in plays for kind in (K.PLAY_STARTED, K.PLAY_COMPLETED)
    ]
    for index, (play_id, _, duration) in enumerate(plays):
        start = sink.find("c-play", K.PLAY_STARTED, play_id)
        done = sink.find("c-play", K.PLAY_COMPLETED, play_id)
        assert start.duration_ms == round(duration * 1000)
        assert_near(seconds(done.at, start.at), duration / 20)  # speed 20
        if index:
            previous = sink.find("c-play", K.PLAY_COMPLETED, plays[index - 1][0])
            assert_near(seconds(start.at, previous.at), 0.0)


async def test_hangup_interrupts_the_play_and_drops_the_queue(
    carrier: SandboxCarrier, sink: Recorder
) -> None:
    await answered(carrier, sink, "c-cut")
    speech = media.tts(" ".join(["word"] * 10))  # 4 s, 0.2 s at speed 20
    for play_id in ("p1", "p2", "p3"):
        await carrier.play("c-cut", play_id, speech)
    await sink.until_kind("c-cut", K.PLAY_STARTED)
    await carrier.hangup("c-cut")
    await sink.until_kind("c-cut", K.ENDED)
    await asyncio.sleep(0.3)  # past when p1 would have completed
    assert [(e.kind, e.play_id) for e in sink.of("c-cut")] == [
        (K.RINGING, ""),
        (K.ANSWERED, ""),
        (K.PLAY_STARTED, "p1"),
        (K.PLAY_INTERRUPTED, "p1"),
        (K.PLAY_INTERRUPTED, "p2"),
        (K.PLAY_INTERRUPTED, "p3"),
        (K.ENDED, ""),
    ]
    assert {e.reason for e in sink.of("c-cut")[3:]} == {LOCAL_HANGUP}
    with pytest.raises(CallNotActive, match="ended"):
        await carrier.play("c-cut", "p4", speech)


async def test_remote_hangup_interrupts_the_play(carrier: SandboxCarrier, sink: Recorder) -> None:
    await carrier.dial("c-remote-play", FROM, "+27821230500", 5000)
    await sink.until_kind("c-remote-play", K.ANSWERED)
    await carrier.play("c-remote-play", "p1", media.tts(" ".join(["word"] * 500)))
    await sink.until_kind("c-remote-play", K.ENDED)
    assert sink.kinds("c-remote-play")[2:] == [K.PLAY_STARTED, K.PLAY_INTERRUPTED, K.ENDED]
    assert sink.find("c-remote-play", K.PLAY_INTERRUPTED).reason == REMOTE_HANGUP


async def test_play_is_refused_before_answer_and_on_unknown_targets(
    carrier: SandboxCarrier, sink: Recorder
) -> None:
    await carrier.dial("c-early", FROM, OK_NUMBER, 5000)
    with pytest.raises(CallNotActive, match="not been answered"):
        await carrier.play("c-early", "p1", media.dtmf("1"))
    with pytest.raises(UnknownTarget):
        await carrier.play("nobody", "p1", media.dtmf("1"))
    await sink.until_kind("c-early", K.ANSWERED)
    await asyncio.sleep(0.02)
    assert not [e for e in sink.events if e.play_id]  # the refused plays left no trace


async def test_repeated_play_id_is_a_no_op(carrier: SandboxCarrier, sink: Recorder) -> None:
    await answered(carrier, sink, "c-rep")
    await carrier.play("c-rep", "p1", media.dtmf("1"))
    await carrier.play("c-rep", "p1", media.dtmf("1"))
    await sink.until_kind("c-rep", K.PLAY_COMPLETED)
    await asyncio.sleep(0.05)
    assert sink.kinds("c-rep").count(K.PLAY_STARTED) == 1


async def test_audio_duration_comes_from_the_resolved_wav(sink: Recorder) -> None:
    async def resolve(item: Audio) -> bytes | None:
        if item.source.endswith("broken"):
            raise OSError("connection refused")
        return make_wav(1.5) if item.source_type is AudioSource.ATTACHMENT else None

    carrier = await started(sink, speed=50.0, resolve_audio=resolve)
    try:
        await answered(carrier, sink, "c-audio")
        await carrier.play("c-audio", "wav", media.audio("attachment", "att_1"))
        await carrier.play("c-audio", "url", media.audio("url", "https://example.com/a.wav"))
        await carrier.play("c-audio", "bad", media.audio("URL", "https://example.com/broken"))
        await sink.until(lambda: sink.kinds("c-audio").count(K.PLAY_COMPLETED) == 3)
    finally:
        await carrier.stop()
    durations = {e.play_id: e.duration_ms for e in sink.of("c-audio") if e.kind is K.PLAY_STARTED}
    assert durations == {"wav": 1500, "url": 3000, "bad": 3000}


# -- mixes


async def test_mix_membership_and_flags(carrier: SandboxCarrier, sink: Recorder) -> None:
    for call_id in ("m-a", "m-b", "m-c"):
        await answered(carrier, sink, call_id)
    await carrier.connect("bridge-1", ["m-a", "m-b"])
    assert carrier.legs("bridge-1") == {"m-a": LegFlags(), "m-b": LegFlags()}

    await carrier.set_leg("bridge-1", "m-b", hear=False, speak=False)  # hold
    assert carrier.legs("bridge-1")["m-b"] == LegFlags(hear=False, speak=False)
    await carrier.connect("bridge-1", ["m-b"])  # already there: flags kept
    assert carrier.legs("bridge-1")["m-b"] == LegFlags(hear=False, speak=False)

    with pytest.raises(LegInOtherMix):
        await carrier.connect("conf-1", ["m-c", "m-a"])
    assert carrier.legs("conf-1") == {} and carrier.mix_of("m-c") is None  # all or nothing
    with pytest.raises(UnknownTarget):
        await carrier.set_leg("bridge-1", "m-c", hear=True, speak=False)

    await carrier.disconnect("bridge-1", "m-a")
    await carrier.disconnect("bridge-1", "m-a")  # no-op
    assert set(carrier.legs("bridge-1")) == {"m-b"} and carrier.mix_of("m-a") is None
    await carrier.connect("conf-1", ["m-a", "m-c"])
    await carrier.hangup("m-c")  # a leg that ends leaves its mix
    assert set(carrier.legs("conf-1")) == {"m-a"}
    await carrier.hangup("m-a")
    assert carrier.legs("conf-1") == {}
    await sink.until_kind("m-a", K.ENDED)  # the engine learns through ENDED


async def test_connect_refuses_legs_not_answered(carrier: SandboxCarrier, sink: Recorder) -> None:
    await answered(carrier, sink, "n-a")
    await carrier.dial("n-ringing", FROM, OK_NUMBER, 5000)
    with pytest.raises(CallNotActive):
        await carrier.connect("bridge-n", ["n-a", "n-ringing"])
    with pytest.raises(UnknownTarget):
        await carrier.connect("bridge-n", ["n-a", "n-missing"])
    assert carrier.mix_of("n-a") is None


async def test_mix_plays_and_close(carrier: SandboxCarrier, sink: Recorder) -> None:
    await answered(carrier, sink, "x-a")
    await carrier.connect("conf-x", [])  # an empty conference can already play
    await carrier.play("conf-x", "p1", media.tts("hello everyone"))
    await sink.until_kind("conf-x", K.PLAY_COMPLETED)
    await carrier.connect("conf-x", ["x-a"])
    await carrier.play("conf-x", "p2", media.tts(" ".join(["word"] * 500)))
    await carrier.play("conf-x", "p3", media.tts("bye"))
    await sink.until(lambda: len(sink.of("conf-x")) == 3)
    await carrier.close_mix("conf-x")
    await carrier.close_mix("conf-x")  # no-op
    await sink.until_kind("conf-x", K.PLAY_INTERRUPTED, 2)
    assert [(e.kind, e.play_id) for e in sink.of("conf-x")] == [
        (K.PLAY_STARTED, "p1"),
        (K.PLAY_COMPLETED, "p1"),
        (K.PLAY_STARTED, "p2"),
        (K.PLAY_INTERRUPTED, "p2"),
        (K.PLAY_INTERRUPTED, "p3"),
    ]
    assert sink.find("conf-x", K.PLAY_INTERRUPTED).reason == MIX_CLOSED
    assert carrier.mix_of("x-a") is None and sink.kinds("x-a")[-1] is K.ANSWERED  # leg stays up
    with pytest.raises(UnknownTarget):
        await carrier.play("conf-x", "p4", media.tts("late"))


# -- restart and shutdown


async def test_reconcile(carrier: SandboxCarrier, sink: Recorder) -> None:
    await answered(carrier, sink, "r-live")
    await carrier.dial("r-busy", FROM, "+27821230486", 5000)
    await sink.until_kind("r-busy", K.REJECTED)
    delivered = len(sink.events)

    settled = await carrier.reconcile(
        {"r-live": True, "r-busy": False, "r-lost-up": True, "r-lost-ringing": False}
    )
    assert set(settled) == {"r-busy", "r-lost-up", "r-lost-ringing"}  # r-live is still up
    assert settled["r-busy"].failure_code is FailureCode.BUSY  # what really happened
    up, ringing = settled["r-lost-up"], settled["r-lost-ringing"]
    assert (up.kind, up.reason) == (K.ENDED, SERVER_RESTART)
    assert (ringing.kind, ringing.failure_code) == (K.REJECTED, FailureCode.CARRIER_ERROR)
    assert ringing.reason == SERVER_RESTART and up.target_id == "r-lost-up"
    assert await carrier.reconcile({"r-lost-up": True}) == {"r-lost-up": up}  # stable
    await asyncio.sleep(0.02)
    assert len(sink.events) == delivered  # returned, not sent to the sink


async def test_stop_cancels_timers_silently(sink: Recorder) -> None:
    carrier = await started(sink, speed=1.0)
    await carrier.dial("s-ringing", FROM, OK_NUMBER, 5000)
    await answered(carrier, sink, "s-up")
    await carrier.play("s-up", "p1", media.tts("a few words to say"))
    await sink.until_kind("s-up", K.PLAY_STARTED)
    await carrier.dial("s-new", FROM, OK_NUMBER, 5000)
    await carrier.stop()
    assert sink.kinds("s-new") == [K.RINGING]  # what had happened was still delivered
    count = len(sink.events)
    await asyncio.sleep(RING * 3)
    assert len(sink.events) == count
    with pytest.raises(RuntimeError, match="not started"):
        await carrier.dial("s-after", FROM, OK_NUMBER, 5000)


async def test_a_failing_sink_does_not_stop_delivery() -> None:
    received: list[CarrierEvent] = []

    async def flaky(events: Sequence[CarrierEvent]) -> None:
        if any(event.kind is K.RINGING for event in events):
            raise RuntimeError("database away")
        received.extend(events)

    carrier = SandboxCarrier(TEST_CLOCK, ring_seconds=RING)
    await carrier.start(flaky)
    try:
        await carrier.dial("f-1", FROM, OK_NUMBER, 5000)
        async with asyncio.timeout(2):
            while not received:
                await asyncio.sleep(0.002)
    finally:
        await carrier.stop()
    assert [e.kind for e in received] == [K.ANSWERED]


# -- media


def test_media_parsing_normalises() -> None:
    assert media.dtmf(" 12ab#*W ") == Dtmf("12AB#*w")
    spoken = media.tts("Hi", "en-us", "FEMALE", " Joanna ")
    assert spoken == Tts("Hi", "en-US", Gender.FEMALE, "Joanna")
    assert media.tts("Hola", "es") == Tts("Hola", "es")
    assert media.tts("Hi").language == "en-US" and media.tts("Hi").gender is None
    assert media.tts("x", "zh-hans-cn").language == "zh-Hans-CN"
    assert media.audio("url", "http://example.com/a.wav").source_type is AudioSource.URL
    assert media.audio("Attachment", "att_1") == Audio(AudioSource.ATTACHMENT, "att_1")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: media.dtmf(""), "must not be empty"),
        (lambda: media.dtmf("12x"), r"0-9 \* # A-D and w"),
        (lambda: media.dtmf("1" * 65), "at most 64"),
        (lambda: media.tts("   "), "text must not be empty"),
        (lambda: media.tts("a" * 4001), "at most 4000"),
        (lambda: media.tts("hi", "english"), "language"),
        (lambda: media.tts("hi", "en_US"), "language"),
        (lambda: media.tts("hi", "en-US", "robot"), "male, female, neutral"),
        (lambda: media.tts("hi", "en-US", "", "v" * 65), "at most 64"),
        (lambda: media.audio("file", "/tmp/a.wav"), "URL, ATTACHMENT"),
        (lambda: media.audio("URL", " "), "source must not be empty"),
        (lambda: media.audio("URL", "ftp://example.com/a.wav"), "http"),
        (lambda: media.audio("URL", "example.com/a.wav"), "http"),
        (lambda: Tts("hi", "en-us"), "language"),  # the dataclass wants canonical values
    ],
)
def test_media_validation(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_media_durations() -> None:
    assert media.media_duration(media.dtmf("123")) == pytest.approx(0.45)
    assert media.media_duration(media.dtmf("1ww")) == pytest.approx(1.15)
    assert media.media_duration(media.tts("Hi")) == pytest.approx(0.5)  # the minimum
    assert media.media_duration(media.tts(" ".join(["w"] * 150))) == pytest.approx(60.0)
    assert media.wav_duration(make_wav(1.5)) == pytest.approx(1.5)
    assert media.wav_duration(make_wav(0.25, rate=44100)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="not a WAV"):
        media.wav_duration(b"ID3 this is an mp3")
    clip = media.audio("URL", "https://example.com/a.wav")
    assert media.media_duration(clip) == media.AUDIO_FALLBACK_SECONDS == 3.0
    assert media.media_duration(clip, make_wav(2.0)) == pytest.approx(2.0)
    assert media.media_duration(clip, b"garbage") == 3.0
