"""The sandbox carrier: calls that need no telephony account, with outcomes chosen by the last
digits of the number dialled, on real asyncio timers.

| `to` (E.164, after normalisation)   | events                                                     |
|-------------------------------------|------------------------------------------------------------|
| not a valid phone number            | REJECTED INVALID_NUMBER at once                            |
| ends in 0486                        | REJECTED BUSY at once (no ringing)                         |
| ends in 0404                        | RINGING, then REJECTED NO_ANSWER when answer_timeout ends  |
| ends in 0503                        | RINGING, then REJECTED CARRIER_ERROR after the ring        |
| ends in 0500                        | RINGING, ANSWERED after the ring, then ENDED "remote       |
|                                     | hangup" 2 s later (`remote_hangup_seconds`)                |
| anything else                       | RINGING, ANSWERED after the ring; up until hung up         |

The ring lasts `ring_seconds` (0.2 s by default); when that is longer than the call's
answer_timeout, the call is REJECTED NO_ANSWER at the timeout instead of answering.

Plays queue per target (call or mix) and last their media's duration (see media.py) divided by
`speed`, so tests can play a minute of speech in milliseconds. AUDIO is resolved to bytes by the
`resolve_audio` hook the engine gives (URL fetch, attachment read); without a hook, or when it
returns None, fails, or the bytes are not a WAV file, a play lasts AUDIO_FALLBACK_SECONDS (3 s).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from switchboard.server.calling.carrier import (
    LOCAL_HANGUP,
    MIX_CLOSED,
    REMOTE_HANGUP,
    SERVER_RESTART,
    CallNotActive,
    CarrierEvent,
    EventKind,
    EventSink,
    FailureCode,
    LegFlags,
    LegInOtherMix,
    UnknownTarget,
)
from switchboard.server.calling.media import Audio, Media, media_duration
from switchboard.server.core.clock import Clock
from switchboard.server.telephony.phone import InvalidNumber, classify

log = logging.getLogger(__name__)

# Resolves an AUDIO play's source to the file's bytes; None when it cannot.
AudioResolver = Callable[[Audio], Awaitable[bytes | None]]

# Ended calls remembered for `reconcile`, oldest forgotten first.
_ENDED_MEMORY = 10_000


class _Phase(StrEnum):
    RINGING = "RINGING"
    ANSWERED = "ANSWERED"


@dataclass
class _Play:
    play_id: str
    media: Media


@dataclass
class _Plays:
    """One target's play queue, run by one worker task at a time."""

    target_id: str
    queue: deque[_Play] = field(default_factory=deque)
    current: _Play | None = None
    worker: asyncio.Task[None] | None = None
    seen: set[str] = field(default_factory=set)


@dataclass
class _Call:
    call_id: str
    from_address: str
    to_address: str
    phase: _Phase = _Phase.RINGING
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    mix_id: str | None = None
    plays: _Plays = field(init=False)

    def __post_init__(self) -> None:
        self.plays = _Plays(self.call_id)


@dataclass
class _Mix:
    mix_id: str
    legs: dict[str, LegFlags] = field(default_factory=dict)
    plays: _Plays = field(init=False)

    def __post_init__(self) -> None:
        self.plays = _Plays(self.mix_id)


class SandboxCarrier:
    name = "sandbox"
    sandbox = True

    def __init__(
        self,
        clock: Clock,
        *,
        ring_seconds: float = 0.2,
        speed: float = 1.0,
        remote_hangup_seconds: float = 2.0,
        resolve_audio: AudioResolver | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._clock = clock
        self._ring = ring_seconds
        self._speed = speed
        self._remote_hangup = remote_hangup_seconds
        self._resolve_audio = resolve_audio
        self._calls: dict[str, _Call] = {}  # live: ringing or answered
        self._ended: OrderedDict[str, CarrierEvent] = OrderedDict()  # call id → terminal event
        self._mixes: dict[str, _Mix] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[CarrierEvent | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    # -- lifecycle

    async def start(self, sink: EventSink) -> None:
        if self._pump is not None:
            raise RuntimeError("the sandbox carrier is already started")
        self._pump = asyncio.create_task(self._deliver(sink))

    async def stop(self) -> None:
        if self._pump is None:
            return
        for call in self._calls.values():
            for timer in call.timers:
                timer.cancel()
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queue.put_nowait(None)  # after what already happened
        await self._pump
        self._pump = None

    async def _deliver(self, sink: EventSink) -> None:
        """Serial delivery keeps the per-call order: one batch (everything queued meanwhile, in
        order), durable, then the next; under load a batch carries many calls' events."""
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            while not self._queue.empty():
                event = self._queue.get_nowait()
                if event is None:
                    stopping = True
                    break
                batch.append(event)
            try:
                await sink(batch)
            except Exception:  # a sink failure must not stop the calls that follow
                log.exception("call event sink failed on a batch of %d events", len(batch))

    # -- calls

    async def dial(
        self, call_id: str, from_address: str, to_address: str, answer_timeout_ms: int
    ) -> None:
        self._require_started()
        if answer_timeout_ms <= 0:
            raise ValueError("answer_timeout_ms must be positive")
        if call_id in self._calls or call_id in self._ended:
            return
        call = _Call(call_id, from_address, to_address)
        self._calls[call_id] = call
        try:
            number = classify(to_address)
        except InvalidNumber as exc:
            self._finish(call, EventKind.REJECTED, str(exc), FailureCode.INVALID_NUMBER)
            return
        e164 = number.e164
        if e164.endswith("0486"):
            self._finish(call, EventKind.REJECTED, f"{e164} is busy", FailureCode.BUSY)
            return
        self._emit(EventKind.RINGING, call_id)
        timeout = answer_timeout_ms / 1000
        no_answer = f"{e164} did not answer within {answer_timeout_ms} ms"
        if e164.endswith("0404") or self._ring > timeout:
            self._later(call, timeout, self._reject, call, FailureCode.NO_ANSWER, no_answer)
        elif e164.endswith("0503"):
            failed = f"the carrier failed to connect {e164}"
            self._later(call, self._ring, self._reject, call, FailureCode.CARRIER_ERROR, failed)
        else:
            self._later(call, self._ring, self._answer, call, e164.endswith("0500"))

    def _answer(self, call: _Call, remote_hangs_up: bool) -> None:
        call.phase = _Phase.ANSWERED
        self._emit(EventKind.ANSWERED, call.call_id)
        if remote_hangs_up:
            self._later(
                call, self._remote_hangup, self._finish, call, EventKind.ENDED, REMOTE_HANGUP
            )

    def _reject(self, call: _Call, code: FailureCode, details: str) -> None:
        self._finish(call, EventKind.REJECTED, details, code)

    async def hangup(self, call_id: str) -> None:
        self._require_started()
        call = self._calls.get(call_id)
        if call is not None:
            self._finish(call, EventKind.ENDED, LOCAL_HANGUP)

    def _finish(
        self, call: _Call, kind: EventKind, reason: str, code: FailureCode | None = None
    ) -> None:
        """The one way a call ends: plays interrupted, mix left, then the terminal event."""
        del self._calls[call.call_id]
        for timer in call.timers:
            timer.cancel()
        self._interrupt(call.plays, reason)
        if call.mix_id is not None:
            self._mixes[call.mix_id].legs.pop(call.call_id, None)
            call.mix_id = None
        event = self._emit(kind, call.call_id, reason=reason, failure_code=code)
        self._remember(event)

    def _remember(self, event: CarrierEvent) -> None:
        self._ended[event.target_id] = event
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)

    async def reconcile(self, live_calls: Mapping[str, bool]) -> dict[str, CarrierEvent]:
        """A fresh sandbox knows no calls: answered ones ENDED, the rest REJECTED CARRIER_ERROR,
        both for SERVER_RESTART. Calls this instance still has up are left out."""
        settled: dict[str, CarrierEvent] = {}
        for call_id, answered in live_calls.items():
            if call_id in self._calls:
                continue
            event = self._ended.get(call_id)
            if event is None:
                now = self._clock.now()
                if answered:
                    event = CarrierEvent(EventKind.ENDED, call_id, now, reason=SERVER_RESTART)
                else:
                    code = FailureCode.CARRIER_ERROR
                    event = CarrierEvent(
                        EventKind.REJECTED, call_id, now, failure_code=code, reason=SERVER_RESTART
                    )
                self._remember(event)
            settled[call_id] = event
        return settled

    # -- plays

    async def play(self, target_id: str, play_id: str, media: Media) -> None:
        self._require_started()
        plays = self._plays_of(target_id)
        if play_id in plays.seen:
            return
        plays.seen.add(play_id)
        plays.queue.append(_Play(play_id, media))
        if plays.worker is None:
            worker = asyncio.create_task(self._run_plays(plays))
            plays.worker = worker
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)

    def _plays_of(self, target_id: str) -> _Plays:
        call = self._calls.get(target_id)
        if call is not None:
            if call.phase is not _Phase.ANSWERED:
                raise CallNotActive(f"call {target_id} has not been answered yet")
            return call.plays
        if target_id in self._ended:
            raise CallNotActive(f"call {target_id} has ended")
        mix = self._mixes.get(target_id)
        if mix is None:
            raise UnknownTarget(f"no live call or open bridge/conference has id {target_id}")
        return mix.plays

    async def _run_plays(self, plays: _Plays) -> None:
        try:
            while plays.queue:
                play = plays.current = plays.queue.popleft()
                seconds = await self._duration(play.media)
                self._emit(
                    EventKind.PLAY_STARTED,
                    plays.target_id,
                    play_id=play.play_id,
                    duration_ms=round(seconds * 1000),
                )
                await asyncio.sleep(seconds / self._speed)
                self._emit(EventKind.PLAY_COMPLETED, plays.target_id, play_id=play.play_id)
                plays.current = None
        finally:
            if plays.worker is asyncio.current_task():
                plays.worker = None

    async def _duration(self, media: Media) -> float:
        if not isinstance(media, Audio) or self._resolve_audio is None:
            return media_duration(media)
        try:
            data = await self._resolve_audio(media)
        except Exception:
            log.warning("could not resolve audio %s %s", media.source_type, media.source)
            data = None
        return media_duration(media, data)

    def _interrupt(self, plays: _Plays, reason: str) -> None:
        """Cut the current play short and drop the queue, each with PLAY_INTERRUPTED in order.
        Cancelling the worker first means it emits nothing more for these plays."""
        if plays.worker is not None:
            plays.worker.cancel()
            plays.worker = None
        dropped = [plays.current] if plays.current is not None else []
        dropped.extend(plays.queue)
        plays.current = None
        plays.queue.clear()
        for play in dropped:
            self._emit(
                EventKind.PLAY_INTERRUPTED, plays.target_id, play_id=play.play_id, reason=reason
            )

    # -- mixes

    async def connect(self, mix_id: str, call_ids: Collection[str]) -> None:
        self._require_started()
        legs = []
        for call_id in call_ids:
            call = self._calls.get(call_id)
            if call is None:
                if call_id in self._ended:
                    raise CallNotActive(f"call {call_id} has ended")
                raise UnknownTarget(f"no live call has id {call_id}")
            if call.phase is not _Phase.ANSWERED:
                raise CallNotActive(f"call {call_id} has not been answered yet")
            if call.mix_id is not None and call.mix_id != mix_id:
                raise LegInOtherMix(f"call {call_id} is already in {call.mix_id}")
            legs.append(call)
        mix = self._mixes.get(mix_id)
        if mix is None:
            mix = self._mixes[mix_id] = _Mix(mix_id)
        for call in legs:
            if call.mix_id is None:
                call.mix_id = mix_id
                mix.legs[call.call_id] = LegFlags()

    async def disconnect(self, mix_id: str, call_id: str) -> None:
        self._require_started()
        mix = self._mixes.get(mix_id)
        if mix is None or mix.legs.pop(call_id, None) is None:
            return
        self._calls[call_id].mix_id = None  # a leg in a mix is live: ending removes it

    async def set_leg(self, mix_id: str, call_id: str, *, hear: bool, speak: bool) -> None:
        self._require_started()
        mix = self._mixes.get(mix_id)
        if mix is None or call_id not in mix.legs:
            raise UnknownTarget(f"call {call_id} is not in {mix_id}")
        mix.legs[call_id] = LegFlags(hear=hear, speak=speak)

    async def close_mix(self, mix_id: str) -> None:
        self._require_started()
        mix = self._mixes.pop(mix_id, None)
        if mix is None:
            return
        for call_id in mix.legs:
            self._calls[call_id].mix_id = None
        mix.legs.clear()
        self._interrupt(mix.plays, MIX_CLOSED)

    # -- inspection (the dev console and tests)

    def legs(self, mix_id: str) -> dict[str, LegFlags]:
        mix = self._mixes.get(mix_id)
        return dict(mix.legs) if mix is not None else {}

    def mix_of(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return call.mix_id if call is not None else None

    # -- plumbing

    def _require_started(self) -> None:
        if self._pump is None:
            raise RuntimeError("the sandbox carrier is not started")

    def _emit(
        self,
        kind: EventKind,
        target_id: str,
        *,
        play_id: str = "",
        failure_code: FailureCode | None = None,
        reason: str = "",
        duration_ms: int | None = None,
    ) -> CarrierEvent:
        now = self._clock.now()
        event = CarrierEvent(kind, target_id, now, play_id, failure_code, reason, duration_ms)
        self._queue.put_nowait(event)
        return event

    def _later(
        self, call: _Call, delay: float, callback: Callable[..., None], *args: object
    ) -> None:
        call.timers.append(asyncio.get_running_loop().call_later(delay, callback, *args))
