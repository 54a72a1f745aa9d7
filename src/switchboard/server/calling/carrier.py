"""The carrier interface: what the call engine needs from whatever places calls (the sandbox now,
a SIP/RTP carrier later).

The engine commands (dial, hangup, play, mix legs); the carrier reports what happened through ONE
async sink given to `start`. Events reach the sink in batches (whatever happened since the last
one), each in the order the events happened, and the carrier awaits each batch before the next
(the sink returns once the events are durable: one transaction for a batch, however many calls
it touches), so per call the engine always sees

    [RINGING] → ANSWERED → PLAY_* … → ENDED        or        [RINGING] → REJECTED

and exactly one terminal event (REJECTED or ENDED) per dialled call. A call that ENDs without an
ANSWERED was cancelled by our hangup while ringing. Play events of a call target fall between its
ANSWERED and its terminal event.

Ids are the engine's: the carrier keys calls, mixes and plays by the ids it was given, so a SIP
carrier maps them to its dialogs and media sessions, and repeated commands are idempotent.

A bridge and a conference are both a *mix*: a set of answered legs whose audio is mixed, each leg
with hear/speak flags (hold = neither, mute = hear only). A leg is in at most one mix at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from switchboard.server.calling.media import Media

# Reasons of ENDED and PLAY_INTERRUPTED events.
LOCAL_HANGUP = "local hangup"
REMOTE_HANGUP = "remote hangup"
SERVER_RESTART = "server restart"
MIX_CLOSED = "mix closed"


class EventKind(StrEnum):
    RINGING = "RINGING"  # the far end is alerting
    ANSWERED = "ANSWERED"  # the call is up (API state ACTIVE)
    REJECTED = "REJECTED"  # never answered; failure_code says why (terminal)
    ENDED = "ENDED"  # hung up by either side after answer, or cancelled by us (terminal)
    PLAY_STARTED = "PLAY_STARTED"
    PLAY_COMPLETED = "PLAY_COMPLETED"
    PLAY_INTERRUPTED = "PLAY_INTERRUPTED"  # cut short or dropped from the queue by its target's end


class FailureCode(StrEnum):
    BUSY = "BUSY"
    NO_ANSWER = "NO_ANSWER"
    INVALID_NUMBER = "INVALID_NUMBER"
    CARRIER_ERROR = "CARRIER_ERROR"


TERMINAL = frozenset({EventKind.REJECTED, EventKind.ENDED})
PLAY_EVENTS = frozenset(
    {EventKind.PLAY_STARTED, EventKind.PLAY_COMPLETED, EventKind.PLAY_INTERRUPTED}
)


@dataclass(frozen=True)
class CarrierEvent:
    kind: EventKind
    # The call for call events; for play events the play's target: a call id or a mix id.
    target_id: str
    at: datetime  # the carrier's clock when it happened
    play_id: str = ""  # play events only
    failure_code: FailureCode | None = None  # REJECTED only
    # REJECTED: failure details; ENDED: who hung up (LOCAL_HANGUP, REMOTE_HANGUP, SERVER_RESTART);
    # PLAY_INTERRUPTED: why the play was cut short or dropped.
    reason: str = ""
    duration_ms: int | None = None  # PLAY_STARTED: how long the media plays, when known

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL


@dataclass(frozen=True)
class LegFlags:
    hear: bool = True
    speak: bool = True


# Receives one event and returns once it is durable.
EventSink = Callable[[Sequence[CarrierEvent]], Coroutine[Any, Any, None]]


class CarrierError(Exception):
    """A command the carrier refuses; the message says why in a client's words."""


class UnknownTarget(CarrierError, LookupError):
    """No live call or open mix has this id."""


class CarrierConflict(CarrierError):
    """The target exists but is in the wrong state for the command (the engine's 409)."""


class CallNotActive(CarrierConflict):
    """The call is still ringing or has ended: it cannot play or join a mix."""


class LegInOtherMix(CarrierConflict):
    """The leg is already in another mix; disconnect it there first."""


class Carrier(Protocol):
    name: str

    async def start(self, sink: EventSink) -> None:
        """Report every event to `sink` from now on. Commands before `start` raise RuntimeError."""

    async def stop(self) -> None:
        """Stop without emitting further events: pending rings, answers, hang-ups and plays are
        cancelled (calls stay up on a real carrier's side; `reconcile` settles them after the
        restart). Events that already happened are still delivered before `stop` returns."""

    async def dial(
        self, call_id: str, from_address: str, to_address: str, answer_timeout_ms: int
    ) -> None:
        """Place an outbound call from `from_address` (our caller id) to `to_address` (E.164).

        Returns once the carrier has taken the call; what becomes of it arrives as events: RINGING
        (optional), then ANSWERED, or REJECTED with a FailureCode: INVALID_NUMBER when the number
        cannot be dialled, BUSY, CARRIER_ERROR, or NO_ANSWER once `answer_timeout_ms` has passed
        since the dial without an answer. After ANSWERED, ENDED follows when either side hangs up.
        Dialling a call id the carrier already knows is a no-op (a retried command).
        """

    async def hangup(self, call_id: str) -> None:
        """End the call from our side. A ringing call is cancelled; an answered one hangs up.
        Its plays are interrupted (PLAY_INTERRUPTED for the current one, then for each queued one
        in order), it leaves its mix, then ENDED with reason LOCAL_HANGUP.
        A call that has ended, or that the carrier does not know, is a no-op."""

    async def play(self, target_id: str, play_id: str, media: Media) -> None:
        """Queue `media` on a call leg or a mix. Plays of a target run one after another in the
        order given: PLAY_STARTED when one starts, PLAY_COMPLETED when it has played out. When the
        target ends (hang-up or mix closed), the current play and every queued one get
        PLAY_INTERRUPTED (a dropped play never had PLAY_STARTED).
        Raises CallNotActive if the call is not answered or has ended, UnknownTarget if no call or
        mix has this id. Repeating a play_id already given for this target is a no-op."""

    async def connect(self, mix_id: str, call_ids: Collection[str]) -> None:
        """Add answered legs to a mix, opening it if it is new (with no legs: an empty conference).
        Legs join hearing and speaking; a leg already in this mix is left as it is. All or
        nothing: raises CallNotActive for a leg not answered (or ended), LegInOtherMix for a leg
        in another mix, UnknownTarget for an unknown call. No events: the engine made the change.
        """

    async def disconnect(self, mix_id: str, call_id: str) -> None:
        """Take a leg out of a mix; the call stays up. A leg not in the mix is a no-op."""

    async def set_leg(self, mix_id: str, call_id: str, *, hear: bool, speak: bool) -> None:
        """Set a leg's flags in its mix: hold is hear=False, speak=False; mute is speak=False.
        Raises UnknownTarget if the leg is not in the mix."""

    async def close_mix(self, mix_id: str) -> None:
        """Close a mix (bridge deleted, conference completed): its legs leave it and stay up, its
        plays are interrupted with reason MIX_CLOSED. An unknown or closed mix is a no-op."""

    async def reconcile(self, live_calls: Mapping[str, bool]) -> dict[str, CarrierEvent]:
        """After a restart: what became of the calls the engine still thinks are live, given as
        call id → whether the engine saw ANSWERED. Returns the terminal event of each call that is
        no longer live (calls still up are left out); the events are returned, not sent to the
        sink, so the engine applies them once."""
        ...
