"""Communications: send, preview, search, get and attachments (the Communications API v2).

A send is judged in three steps:

1. **The request.** Anything malformed or inconsistent refuses the whole request with 400 and
   nothing is stored: unknown type, bad language, unknown channel, an argument the type does not
   declare or of the wrong type, an argument a template to render references but the request
   lacks, an invalid scheduledTime, a missing or invalid input of an explicitly requested
   channel (smsInput for `sms`, …), or no usable channel at all.
2. **Each channel.** A channel that cannot be sent fails on its own, with its reason, and the
   response is 206: no stable template in any language of the fallback chain, consent refused
   for the destination (requirement OPT_OUT, sender id = the template's senderInfo; BLACKLIST
   refuses always), a number that cannot take the channel (a fixed line for SMS or WhatsApp),
   or a template that does not render.
3. **Acceptance.** The rest is stored in one transaction with its events and answered 202 (206
   when some channel failed): ACCEPTED when due now, SCHEDULED when the requested time or the
   type's delivery window puts it later. The dispatcher hands each channel to its provider when
   due.

Languages: each channel uses the first of (requested, its primary subtag for tags like `es-ES`,
the org's default language, `en`) in which the type has a stable template for that channel;
the response states the language per channel.

Channels: when the request names none, every channel with a stable template whose input the
request carries (a send), or every channel with a stable template (a preview).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import phonenumbers
from sqlalchemy import ColumnElement, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.server.communications import arguments as args_module
from switchboard.server.communications import rendering, windows
from switchboard.server.communications.arguments import CheckedArguments
from switchboard.server.communications.email import cid
from switchboard.server.communications.models import (
    ChannelName,
    CommunicationRecord,
    DeliveryRecord,
    DeliveryStatus,
)
from switchboard.server.communications.rendering import Rendering, TemplateLike
from switchboard.server.communications.sealing import QrPayload, Sealer
from switchboard.server.communications.short_urls import (
    LINK_CODE_LENGTH,
    NewShortUrl,
    ShortUrlService,
    random_code,
)
from switchboard.server.contacts.consent import ConsentDecision
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import DomainError, FieldViolation, InvalidArgument, NotFound
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks
from switchboard.server.delivery import queue
from switchboard.server.delivery.models import Priority, QueueKind
from switchboard.server.delivery.policies import hours_window
from switchboard.server.delivery.recipients import country_and_zones
from switchboard.server.telephony import phone
from switchboard.server.templates.catalog import CommunicationType
from switchboard.server.templates.engine import TemplateError

log = logging.getLogger("switchboard.communications")

EXTERNAL_ID_MAX = 128
CLIENT_ID_MAX = 256
EMAIL_COPIES_MAX = 50
CHANNEL_ORDER = (ChannelName.SMS, ChannelName.EMAIL, ChannelName.WHATSAPP)
FALLBACK_LANGUAGE = "en"
CONSENT_REQUIREMENT = "OPT_OUT"
_CHANNEL_NAMES = frozenset(c.value for c in ChannelName)
_INPUT_FIELD = {
    ChannelName.SMS: "smsInput",
    ChannelName.EMAIL: "emailInput",
    ChannelName.WHATSAPP: "whatsAppInput",
}
_INPUT_KEY = {
    ChannelName.SMS: "sms_input",
    ChannelName.EMAIL: "email_input",
    ChannelName.WHATSAPP: "whats_app_input",
}
_PROGRESS = {
    DeliveryStatus.SCHEDULED.value: 0,
    DeliveryStatus.ACCEPTED.value: 1,
    DeliveryStatus.SENT.value: 2,
    DeliveryStatus.DELIVERED.value: 3,
}

_communications = table_of(CommunicationRecord)
_deliveries = table_of(DeliveryRecord)
_m = _communications.c
_d = _deliveries.c


# ---- what this domain needs from others ---------------------------------------------------


class TemplateSource(Protocol):
    async def stable_template(
        self, org_id: str, type_code: str, channel: str, language: str
    ) -> Any: ...

    async def stable_channels(self, org_id: str, type_code: str, language: str) -> list[str]: ...


class TypeSource(Protocol):
    async def get_type(self, type_code: str) -> CommunicationType | None: ...


class ConsentSource(Protocol):
    async def may_send_many(
        self,
        org_id: str,
        sender_id: str,
        address_type: Any,
        addresses: Any,
        requirement: Any,
    ) -> dict[str, ConsentDecision]: ...


@dataclass(frozen=True)
class Languages:
    default: str = FALLBACK_LANGUAGE
    per_org: Mapping[str, str] = field(default_factory=dict)

    def chain(self, org_id: str, requested: str) -> list[str]:
        """Languages to try, in order, without repeats."""
        primary = requested.split("-", 1)[0]
        wanted = [requested, primary, self.per_org.get(org_id, self.default), FALLBACK_LANGUAGE]
        chain: list[str] = []
        for language in wanted:
            if language and language not in chain:
                chain.append(language)
        return chain


# A channel's template lookup: the template (or None), the languages tried, a problem.
Lookup = tuple["TemplateLike | None", list[str], str]


@dataclass(frozen=True)
class Caller:
    org_id: str
    application_id: str
    client_id: str


# ---- parsed requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """A phone recipient (sms, whatsapp)."""

    e164: str
    type: str
    country_code: str
    national: str


@dataclass(frozen=True)
class EmailRecipients:
    to: str
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    reply_to: str


@dataclass
class Request:
    type: CommunicationType
    language: str
    channels: list[ChannelName]
    explicit_channels: bool
    scheduled: datetime | None
    external_id: str
    arguments: CheckedArguments
    sms: Recipient | None = None
    email: EmailRecipients | None = None
    whatsapp: Recipient | None = None


@dataclass
class ChannelPlan:
    """A channel of one communication, from template to rendering."""

    channel: ChannelName
    template: TemplateLike | None = None
    language: str = ""
    fallback: bool = False
    destination: str = ""
    destination_type: str = ""
    error: str = ""
    masked: Rendering | None = None
    real: Rendering | None = None
    short_links: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.error)


# ---- snapshots ------------------------------------------------------------------------------


def delivery_snapshot(row: Row) -> Snapshot:
    return {
        "channel": row["channel"],
        "status": row["status"],
        "language": row["language"],
        "language_fallback": bool(row["language_fallback"]),
        "template_id": row["template_id"],
        "template_version": row["template_version"],
        "destination": row["destination"],
        "sender_info": row["sender_info"],
        "subject": row["subject"],
        "content": row["content"],
        "error": row["error"],
        "due_time": iso(row["due_at"]),
        "sent_time": iso(row["sent_at"]),
        "delivered_time": iso(row["delivered_at"]),
        "encoding": row["encoding"],
        "segments": row["segments"],
    }


def delivery_event(row: Row) -> NewEvent:
    """The event recording that a channel entered its current status (content left out)."""
    payload = {
        "communication_id": row["communication_id"],
        "channel": row["channel"],
        "status": row["status"],
        "language": row["language"],
        "destination": row["destination"],
        "error": row["error"],
        "due_time": iso(row["due_at"]),
        "sent_time": iso(row["sent_at"]),
        "delivered_time": iso(row["delivered_at"]),
    }
    return NewEvent(
        org_id=row["org_id"],
        type=DeliveryStatus(row["status"]).event_type,
        resource_id=row["communication_id"],
        payload=payload,
        occurred_at=row["updated_at"],
    )


def overall_status(statuses: Sequence[str]) -> str:
    """The least advanced channel that did not fail; FAILED when all did."""
    alive = [s for s in statuses if s in _PROGRESS]
    if not alive:
        return DeliveryStatus.FAILED.value
    return min(alive, key=lambda s: _PROGRESS[s])


def _phone_output(e164: str) -> dict[str, str] | None:
    """An SMS or WhatsApp input as returned: all three forms of the number."""
    if not e164:
        return None
    number = phonenumbers.parse(e164, None)
    return {
        "phone_number": e164,
        "country_code": str(number.country_code),
        "terminating_number": phonenumbers.national_significant_number(number),
    }


def communication_snapshot(row: Row, deliveries: Sequence[Row]) -> Snapshot:
    ordered = sorted(deliveries, key=lambda d: [c.value for c in CHANNEL_ORDER].index(d["channel"]))
    email = None
    if row["email_to"]:
        email = {
            "to": row["email_to"],
            "cc": list(row["email_cc"] or []),
            "bcc": list(row["email_bcc"] or []),
            "reply_to": row["email_reply_to"],
        }
    updated = max([row["updated_at"], *(d["updated_at"] for d in deliveries)])
    attachments = [a for a in row["attachments"] or [] if not a.get("inline")]
    return {
        "id": row["id"],
        "type": row["type"],
        "language": row["language"],
        "status": overall_status([d["status"] for d in ordered]),
        "client_id": row["client_id"],
        "external_id": row["external_id"],
        "request_time": iso(row["created_at"]),
        "scheduled_time": iso(row["scheduled_time"]),
        "sms_input": _phone_output(row["sms_phone"]),
        "email_input": email,
        "whats_app_input": _phone_output(row["whatsapp_phone"]),
        "arguments": row["arguments"] or {},
        "channels": [delivery_snapshot(d) for d in ordered],
        "qr_token": row["qr_token"],
        "attachment_count": len(attachments),
        "update_time": iso(updated),
    }


def attachment_snapshots(row: Row) -> list[Snapshot]:
    return [
        {
            "id": a["id"],
            "name": a["name"],
            "content_type": a["content_type"],
            "size": a["size"],
        }
        for a in row["attachments"] or []
        if not a.get("inline")
    ]


# ---- the service ----------------------------------------------------------------------------


class CommunicationService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        templates: TemplateSource,
        types: TypeSource,
        consent: ConsentSource,
        short_urls: ShortUrlService,
        sealer: Sealer,
        languages: Languages,
        default_region: str | None = None,
        shorten_links: bool = True,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._templates = templates
        self._types = types
        self._consent = consent
        self._short_urls = short_urls
        self._sealer = sealer
        self._languages = languages
        self._region = default_region
        self._shorten = shorten_links

    # ---- request parsing ----------------------------------------------------------------

    async def _parse(
        self, org_id: str, body: Mapping[str, Any], *, for_send: bool
    ) -> tuple[Request, dict[ChannelName, Lookup]]:
        """The request checked, and the template lookup of each channel it may use. The type and
        the templates are read concurrently (each read is a round trip to the database)."""
        checks = Checks()
        type_code = str(body.get("type") or "").strip()
        checks.required("type", type_code)
        language = str(body.get("language") or "").strip()
        if checks.required("language", language):
            checks.language("language", language)
        channels: list[ChannelName] = []
        for index, raw in enumerate(body.get("channels") or []):
            choice = checks.choice(f"channels[{index}]", str(raw), ChannelName)
            if choice is not None and choice not in channels:
                channels.append(choice)
        kind: CommunicationType | None = None
        lookups: dict[ChannelName, Lookup] = {}
        if type_code:
            kind, lookups = await asyncio.gather(
                self._types.get_type(type_code),
                self._lookups(
                    org_id, type_code, language if checks.ok("language") else "", channels
                ),
            )
            if kind is None:
                checks.fail("type", f"there is no communication type {type_code!r}")
        scheduled = None
        scheduled_text = str(body.get("scheduled_time") or "").strip()
        if scheduled_text:
            scheduled = listing.parse_instant(scheduled_text)
            if scheduled is None:
                checks.fail("scheduledTime", "must be an RFC 3339 time", "Format")
        external_id = str(body.get("external_id") or "").strip()
        checks.length("externalId", external_id, EXTERNAL_ID_MAX)
        sms = whatsapp = None
        email = None
        if for_send:
            sms = self._phone_input(checks, ChannelName.SMS, body.get("sms_input"))
            whatsapp = self._phone_input(checks, ChannelName.WHATSAPP, body.get("whats_app_input"))
            email = self._email_input(checks, body.get("email_input"))
            given = {ChannelName.SMS: sms, ChannelName.EMAIL: email, ChannelName.WHATSAPP: whatsapp}
            for channel in channels:
                named = any(v.field.startswith(_INPUT_FIELD[channel]) for v in checks.violations)
                if given[channel] is None and not named:
                    checks.fail(
                        _INPUT_FIELD[channel],
                        f"is required when the {channel.value} channel is requested",
                        "Required",
                    )
        raw_arguments = body.get("arguments") or {}
        checked = (
            args_module.check(checks, type_code, kind.arguments if kind else [], raw_arguments)
            if kind is not None
            else CheckedArguments({}, {}, [], None, None)
        )
        checks.raise_if_failed()
        assert kind is not None
        request = Request(
            type=kind,
            language=language,
            channels=channels,
            explicit_channels=bool(channels),
            scheduled=scheduled,
            external_id=external_id,
            arguments=checked,
            sms=sms,
            email=email,
            whatsapp=whatsapp,
        )
        return request, lookups

    def _phone_input(self, checks: Checks, channel: ChannelName, raw: Any) -> Recipient | None:
        if not raw:
            return None
        where = _INPUT_FIELD[channel]
        number = str(raw.get("phone_number") or "").strip()
        country = str(raw.get("country_code") or "").strip().lstrip("+")
        national = str(raw.get("terminating_number") or "").strip()
        if not number and not national:
            checks.fail(
                f"{where}.phoneNumber",
                "phoneNumber (E.164), or countryCode and terminatingNumber, is required",
                "Required",
            )
            return None
        if country and not country.isdigit():
            checks.fail(f"{where}.countryCode", "must be digits without +", "Format")
            return None
        text = number or (f"+{country}{national}" if country else national)
        try:
            parsed = phone.classify(text, self._region)
        except phone.InvalidNumber as exc:
            field_name = "phoneNumber" if number else "terminatingNumber"
            checks.fail(f"{where}.{field_name}", str(exc), "Format")
            return None
        value = phonenumbers.parse(parsed.e164, None)
        recipient = Recipient(
            parsed.e164,
            parsed.type,
            str(value.country_code),
            phonenumbers.national_significant_number(value),
        )
        if (
            number
            and national
            and (
                national.lstrip("0") != recipient.national.lstrip("0")
                or (country and country != recipient.country_code)
            )
        ):
            checks.fail(where, "phoneNumber and countryCode/terminatingNumber disagree")
        return recipient

    def _email_input(self, checks: Checks, raw: Any) -> EmailRecipients | None:
        if not raw:
            return None
        to = str(raw.get("to") or "").strip()
        if checks.required("emailInput.to", to):
            checks.email("emailInput.to", to)
        copies: dict[str, tuple[str, ...]] = {}
        for key in ("cc", "bcc"):
            values = [str(v).strip() for v in raw.get(key) or []]
            if len(values) > EMAIL_COPIES_MAX:
                checks.fail(f"emailInput.{key}", f"at most {EMAIL_COPIES_MAX} addresses", "Range")
            for index, value in enumerate(values):
                checks.email(f"emailInput.{key}[{index}]", value)
            copies[key] = tuple(v.lower() for v in values)
        reply_to = str(raw.get("reply_to") or "").strip()
        if reply_to:
            checks.email("emailInput.replyTo", reply_to)
        return EmailRecipients(to.lower(), copies["cc"], copies["bcc"], reply_to)

    # ---- planning and rendering -----------------------------------------------------------

    async def _lookups(
        self, org_id: str, type_code: str, requested: str, channels: Sequence[ChannelName]
    ) -> dict[ChannelName, Lookup]:
        """The template lookup of each requested channel or, when none is named, of each channel
        that has a stable template in some language of the chain (found with one query per
        language rather than one per channel and language)."""
        if not requested:
            return {}
        if channels:
            found = await asyncio.gather(
                *(self._template(org_id, type_code, requested, c) for c in channels)
            )
            return dict(zip(channels, found, strict=True))
        chain = self._languages.chain(org_id, requested)
        where: dict[ChannelName, str] = {}
        for language in chain:
            for name in await self._templates.stable_channels(org_id, type_code, language):
                if name in _CHANNEL_NAMES:
                    where.setdefault(ChannelName(name), language)
            if len(where) == len(CHANNEL_ORDER):
                break
        present = [c for c in CHANNEL_ORDER if c in where]

        async def fetch(channel: ChannelName) -> Lookup:
            try:
                template = await self._templates.stable_template(
                    org_id, type_code, channel.value, where[channel]
                )
            except DomainError as exc:
                return None, chain, f"the stable {channel.value} template is not usable: {exc}"
            if template is None:  # changed since we looked: look again, the long way
                return await self._template(org_id, type_code, requested, channel)
            return template, chain, ""

        found = await asyncio.gather(*(fetch(c) for c in present))
        return dict(zip(present, found, strict=True))

    async def _template(
        self, org_id: str, type_code: str, requested: str, channel: ChannelName
    ) -> Lookup:
        """The channel's stable template in the first language of the chain that has one, the
        chain, and a problem when the template found is not usable."""
        chain = self._languages.chain(org_id, requested)
        for language in chain:
            try:
                found = await self._templates.stable_template(
                    org_id, type_code, channel.value, language
                )
            except DomainError as exc:  # a stable template that no longer compiles or checks
                return None, chain, f"the stable {channel.value} template is not usable: {exc}"
            if found is not None:
                return found, chain, ""
        return None, chain, ""

    def _plans(
        self, request: Request, lookups: Mapping[ChannelName, Lookup], *, for_send: bool
    ) -> list[ChannelPlan]:
        """Each channel to use with its template (or the reason it has none)."""
        wanted = request.channels or list(CHANNEL_ORDER)
        plans: list[ChannelPlan] = []
        for channel in wanted:
            if (
                for_send
                and not request.explicit_channels
                and self._recipient(request, channel) is None
            ):
                continue  # implicit channels are those the request can address
            template, chain, problem = lookups.get(channel, (None, [], ""))
            plan = ChannelPlan(channel, error=problem)
            if problem:
                pass
            elif template is None:
                if not request.explicit_channels:
                    continue
                tried = ", ".join(chain)
                plan.error = (
                    f"no stable {channel.value} template for type {request.type.code!r} "
                    f"in any of the languages tried ({tried})"
                )
            else:
                plan.template = template
                plan.language = template.language
                plan.fallback = template.language.lower() != request.language.lower()
            plans.append(plan)
        if not plans:
            reason = (
                "no channel has both a stable template and its input (smsInput, emailInput, "
                "whatsAppInput) in this request"
                if for_send
                else "the type has no stable template in any channel"
            )
            raise InvalidArgument(
                f"nothing to {'send' if for_send else 'preview'}: {reason}",
                violations=[FieldViolation("channels", reason)],
            )
        return plans

    def _recipient(
        self, request: Request, channel: ChannelName
    ) -> Recipient | EmailRecipients | None:
        return {
            ChannelName.SMS: request.sms,
            ChannelName.EMAIL: request.email,
            ChannelName.WHATSAPP: request.whatsapp,
        }[channel]

    def _check_references(self, request: Request, plans: Sequence[ChannelPlan]) -> None:
        checks = Checks()
        for plan in plans:
            if plan.template is None:
                continue
            for name in args_module.missing(self._uses(request, plan), request.arguments):
                path = f"arguments.{name}"
                if checks.ok(path):
                    checks.fail(
                        path, f"is required by the {plan.channel.value} template", "Required"
                    )
        checks.raise_if_failed()

    def _render(
        self,
        plan: ChannelPlan,
        request: Request,
        *,
        qr_url: str,
        real: bool = True,
    ) -> None:
        """Render with masked values (stored, shown) and, unless `real` is False (previews
        hand nothing over), with real ones for the provider."""
        assert plan.template is not None
        masked_values, real_values = rendering.contexts(
            request.arguments, plan.channel, short_links=plan.short_links, qr_url=qr_url
        )
        try:
            plan.masked = rendering.render(plan.template, masked_values)
            if real:
                plan.real = rendering.render(plan.template, real_values)
        except TemplateError as exc:
            plan.error = f"the {plan.channel.value} template did not render: {exc}"

    # ---- preview --------------------------------------------------------------------------

    async def preview(self, caller: Caller, body: Mapping[str, Any]) -> tuple[Snapshot, bool]:
        """The renderings, and whether every channel rendered (200) or not (206)."""
        request, lookups = await self._parse(caller.org_id, body, for_send=False)
        plans = self._plans(request, lookups, for_send=False)
        qr_url = self._qr_url("preview") if request.arguments.qr_name else ""
        channels: list[Snapshot] = []
        for plan in plans:
            if plan.template is not None:
                missing = args_module.missing(self._uses(request, plan), request.arguments)
                if missing:
                    plan.error = (
                        f"the {plan.channel.value} template needs arguments not given: "
                        + ", ".join(missing)
                    )
                else:
                    self._render(plan, request, qr_url=qr_url, real=False)
            channels.append(self._preview_snapshot(plan))
        snapshot = {
            "type": request.type.code,
            "language": request.language,
            "channels": channels,
            "arguments": request.arguments.masked(),
        }
        return snapshot, not any(p.failed for p in plans)

    def _preview_snapshot(self, plan: ChannelPlan) -> Snapshot:
        template = plan.template
        shown: Snapshot = {
            "channel": plan.channel.value,
            "status": "FAILED" if plan.failed else "RENDERED",
            "language": plan.language,
            "language_fallback": plan.fallback,
            "template_id": template.id if template else "",
            "template_version": template.version if template else 0,
            "sender_info": template.sender_info if template else "",
            "subject": plan.masked.subject if plan.masked else "",
            "content": plan.masked.content if plan.masked and not plan.failed else "",
            "error": plan.error,
        }
        if plan.channel == ChannelName.SMS and plan.masked and not plan.failed:
            facts = rendering.sms_facts(plan.masked.content)
            shown.update(
                encoding=facts.encoding, characters=facts.characters, segments=facts.segments
            )
        return shown

    # ---- send -----------------------------------------------------------------------------

    def _qr_url(self, token: str) -> str:
        return f"{self._short_urls.base_url}/v2/communications/qr?qrToken={quote(token, safe='')}"

    async def send(self, caller: Caller, body: Mapping[str, Any]) -> tuple[Snapshot, bool]:
        """Accept a communication; returns it and whether every channel was accepted."""
        request, lookups = await self._parse(caller.org_id, body, for_send=True)
        plans = self._plans(request, lookups, for_send=True)
        self._check_references(request, plans)
        now = self._clock.now()
        communication_id = new_id("com_")
        qr_token = ""
        if request.arguments.qr_text is not None:
            payload = QrPayload(communication_id, caller.org_id, request.arguments.qr_text)
            qr_token = self._sealer.qr_token(payload, now)
        qr_url = self._qr_url(qr_token) if qr_token else ""
        await self._check_recipients(caller.org_id, request, plans)
        for plan in plans:
            if plan.failed:
                continue
            if plan.channel == ChannelName.SMS and self._shorten:
                plan.short_links = self._links_to_shorten(request, plan)
            self._render(plan, request, qr_url=qr_url)
        for _ in range(3):
            try:
                rows = await self._db.run_write(
                    lambda session: self._store(
                        session, caller, communication_id, request, plans, qr_token, now
                    )
                )
                break
            except IntegrityError:  # a short code collided: new codes, same communication
                for plan in plans:
                    plan.short_links = {}
                    if plan.channel == ChannelName.SMS and not plan.failed and self._shorten:
                        plan.short_links = self._links_to_shorten(request, plan)
                        self._render(plan, request, qr_url=qr_url)
        else:
            raise InvalidArgument("could not store the communication; retry")
        communication, deliveries = rows
        return communication_snapshot(communication, deliveries), not any(p.failed for p in plans)

    def _uses(self, request: Request, plan: ChannelPlan) -> set[str]:
        assert plan.template is not None
        return rendering.argument_uses(plan.template, request.arguments.specs)

    def _links_to_shorten(self, request: Request, plan: ChannelPlan) -> dict[str, str]:
        assert plan.template is not None
        used = self._uses(request, plan)
        links: dict[str, str] = {}
        for name in request.arguments.values:
            if (
                request.arguments.kind(name) == "Link"
                and not request.arguments.sensitive(name)
                and name in used
            ):
                links[name] = self._short_urls.link(random_code(LINK_CODE_LENGTH))
        return links

    async def _check_recipients(
        self, org_id: str, request: Request, plans: Sequence[ChannelPlan]
    ) -> None:
        """Destinations, numbers that cannot take the channel, and consent, per channel."""
        for plan in plans:
            recipient = self._recipient(request, plan.channel)
            if plan.failed or recipient is None:
                continue
            assert plan.template is not None
            if isinstance(recipient, EmailRecipients):
                plan.destination, address_type = recipient.to, "EMAIL"
            else:
                plan.destination, address_type = recipient.e164, "MDN"
                plan.destination_type = recipient.type
                if plan.channel == ChannelName.SMS:
                    reason = phone.sms_incapable_reason(
                        phone.PhoneNumber(recipient.e164, recipient.type)
                    )
                    if reason is not None:
                        plan.error = reason
                        continue
                elif recipient.type not in ("MOBILE", "FIXED_LINE_OR_MOBILE"):
                    plan.error = f"{recipient.e164} is not a mobile number and cannot use WhatsApp"
                    continue
            decisions = await self._consent.may_send_many(
                org_id,
                plan.template.sender_info,
                address_type,
                [plan.destination],
                CONSENT_REQUIREMENT,
            )
            decision = decisions[plan.destination]
            if not decision.allowed:
                plan.error = f"consent refused for {plan.destination}: {decision.reason}"

    def _due(self, request: Request, plan: ChannelPlan, now: datetime) -> datetime:
        wanted = max(request.scheduled or now, now)
        number = plan.destination if plan.channel != ChannelName.EMAIL else ""
        if not number:
            number = (request.sms or request.whatsapp or Recipient("", "", "", "")).e164
        zones = windows.zones_for_number(number) if number else ()
        try:
            hours = request.type.delivery_hours
        except ValueError:
            hours = None
        return windows.fit(wanted, hours, zones)

    def _store(
        self,
        session: Session,
        caller: Caller,
        communication_id: str,
        request: Request,
        plans: Sequence[ChannelPlan],
        qr_token: str,
        now: datetime,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        phone_recipient = request.sms or request.whatsapp
        files = [
            {
                "id": new_id("cat_"),
                "name": f.name,
                "content_type": f.content_type,
                "size": len(f.content),
                "inline": f.kind == "Image",
            }
            for f in request.arguments.files
        ]
        communication: dict[str, Any] = {
            "id": communication_id,
            "org_id": caller.org_id,
            "type": request.type.code,
            "language": request.language,
            "client_id": caller.client_id[:CLIENT_ID_MAX],
            "application_id": caller.application_id[:CLIENT_ID_MAX],
            "external_id": request.external_id,
            "scheduled_time": request.scheduled,
            "country_code": phone_recipient.country_code if phone_recipient else "",
            "terminating_number": phone_recipient.national if phone_recipient else "",
            "sms_phone": request.sms.e164 if request.sms else "",
            "whatsapp_phone": request.whatsapp.e164 if request.whatsapp else "",
            "email_to": request.email.to if request.email else "",
            "email_cc": list(request.email.cc) if request.email else None,
            "email_bcc": list(request.email.bcc) if request.email else None,
            "email_reply_to": request.email.reply_to if request.email else "",
            "arguments": request.arguments.masked(),
            "attachments": files or None,
            "qr_token": qr_token,
            "created_at": now,
            "updated_at": now,
        }
        deliveries = [self._delivery_row(caller, communication_id, request, p, now) for p in plans]
        connection = session.connection()
        connection.execute(insert(_communications), communication)
        connection.execute(insert(_deliveries), deliveries)
        links = [
            NewShortUrl(
                url.rsplit("/", 1)[1], str(request.arguments.values[name]), communication_id
            )
            for plan in plans
            if not plan.failed
            for name, url in plan.short_links.items()
        ]
        self._short_urls.insert_for_communication(
            session, caller.org_id, caller.application_id, links, now
        )
        self._events.append(session, [delivery_event(d) for d in deliveries])
        queue.enqueue(session, [self._queue_row(request, d) for d in deliveries if d["due_at"]])
        return communication, deliveries

    def _queue_row(self, request: Request, delivery: dict[str, Any]) -> dict[str, Any]:
        """The delivery queue's row: the channel is the route, the type's window travels with
        it (the engine re-checks it when the delivery comes due, e.g. after a retry)."""
        phone = delivery["destination"] if delivery["channel"] != ChannelName.EMAIL else ""
        if not phone:
            phone = (request.sms or request.whatsapp or Recipient("", "", "", "")).e164
        country, zones = country_and_zones(phone) if phone else ("", "")
        try:
            hours = request.type.delivery_hours
        except ValueError:
            hours = None
        return {
            "id": delivery["id"],
            "kind": QueueKind.COMMUNICATION.value,
            "org_id": delivery["org_id"],
            "channel": delivery["channel"],
            "route": delivery["channel"],
            "sender": delivery["sender_info"],
            "destination": delivery["destination"],
            "country": country,
            "zones": zones,
            "window": hours_window(*hours) if hours else "",
            "priority": Priority.REAL_TIME if request.type.real_time_required else Priority.NORMAL,
            "due_at": delivery["due_at"],
            "created_at": delivery["created_at"],
        }

    def _delivery_row(
        self,
        caller: Caller,
        communication_id: str,
        request: Request,
        plan: ChannelPlan,
        now: datetime,
    ) -> dict[str, Any]:
        template = plan.template
        due = None if plan.failed else self._due(request, plan, now)
        status = DeliveryStatus.FAILED
        if not plan.failed:
            status = DeliveryStatus.SCHEDULED if due and due > now else DeliveryStatus.ACCEPTED
        masked = plan.masked if not plan.failed else None
        facts = (
            rendering.sms_facts(masked.content)
            if masked and plan.channel == ChannelName.SMS
            else None
        )
        sealed = None
        if not plan.failed and plan.real is not None:
            sealed = self._sealer.seal(self._sealed_payload(request, plan), now)
        return {
            "id": new_id("cdl_"),
            "communication_id": communication_id,
            "org_id": caller.org_id,
            "channel": plan.channel.value,
            "status": status.value,
            "priority": 1 if request.type.real_time_required else 0,
            "language": plan.language,
            "language_fallback": plan.fallback,
            "template_id": template.id if template else "",
            "template_version": template.version if template else 0,
            "destination": plan.destination or self._destination(request, plan.channel),
            "destination_type": plan.destination_type,
            "sender_info": template.sender_info if template else "",
            "subject": masked.subject if masked else "",
            "content": masked.content if masked else "",
            "encoding": facts.encoding if facts else "",
            "segments": facts.segments if facts else 0,
            "sealed": sealed,
            "error": plan.error,
            "due_at": due,
            "lease_until": None,
            "attempts": 0,
            "provider_message_id": "",
            "sent_at": None,
            "delivered_at": None,
            "created_at": now,
            "updated_at": now,
        }

    def _destination(self, request: Request, channel: ChannelName) -> str:
        recipient = self._recipient(request, channel)
        if isinstance(recipient, EmailRecipients):
            return recipient.to
        return recipient.e164 if recipient else ""

    def _sealed_payload(self, request: Request, plan: ChannelPlan) -> dict[str, Any]:
        """What the provider needs besides the row: real rendering, and for email the copies,
        inline images, QR text and attachments (base64)."""
        assert plan.real is not None
        payload: dict[str, Any] = {"subject": plan.real.subject, "content": plan.real.content}
        if plan.channel == ChannelName.EMAIL and request.email is not None:
            payload["cc"] = list(request.email.cc)
            payload["bcc"] = list(request.email.bcc)
            payload["reply_to"] = request.email.reply_to
            payload["files"] = [
                {
                    "name": f.name,
                    "content_type": f.content_type,
                    "content": base64.b64encode(f.content).decode(),
                    "cid": cid(f.name) if f.kind == "Image" else "",
                }
                for f in request.arguments.files
            ]
            if request.arguments.qr_name and request.arguments.qr_text is not None:
                payload["qr"] = {
                    "text": request.arguments.qr_text,
                    "cid": cid(request.arguments.qr_name),
                }
        return payload

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, org_id: str, communication_id: str) -> Snapshot:
        row, deliveries = await self._load(org_id, communication_id)
        return communication_snapshot(row, deliveries)

    async def attachments(self, org_id: str, communication_id: str) -> list[Snapshot]:
        row, _ = await self._load(org_id, communication_id, with_deliveries=False)
        return attachment_snapshots(row)

    async def _load(
        self, org_id: str, communication_id: str, *, with_deliveries: bool = True
    ) -> tuple[Row, list[Row]]:
        async with self._db.read() as session:
            row = (
                (
                    await session.execute(
                        select(_communications).where(
                            _m.org_id == org_id, _m.id == communication_id
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound(f"no communication {communication_id!r}")
            deliveries: list[Row] = []
            if with_deliveries:
                deliveries = list(
                    (
                        await session.execute(
                            select(_deliveries).where(_d.communication_id == communication_id)
                        )
                    ).mappings()
                )
        return row, deliveries

    async def search(
        self, org_id: str, given: Mapping[str, str], *, limit: int, offset: int
    ) -> list[Snapshot]:
        checks = Checks()
        page = listing.page(checks, limit, offset, "")
        if not any(
            given.get(k) for k in ("destination_email", "terminating_number", "external_id")
        ):
            checks.fail(
                "destinationEmail",
                "one of destinationEmail, terminatingNumber or externalId is required",
                "Required",
            )
        clauses: list[ColumnElement[bool]] = [_m.org_id == org_id]
        if given.get("destination_email"):
            clauses.append(_m.email_to == given["destination_email"].strip().lower())
        for key, json_name, column in (
            ("terminating_number", "terminatingNumber", _m.terminating_number),
            ("country_code", "countryCode", _m.country_code),
        ):
            value = given.get(key, "").strip().lstrip("+")
            if key in given:
                if not value.isdigit():
                    checks.fail(json_name, "must be digits", "Format")
                else:
                    # A national number as dialled may carry a trunk prefix (UK 07…); Italian
                    # numbers keep their leading 0 in the stored national significant number.
                    variants = (
                        {value, value.lstrip("0")} if key == "terminating_number" else {value}
                    )
                    clauses.append(column.in_(sorted(variants)))
        if "external_id" in given:
            clauses.append(_m.external_id == given["external_id"])
        if "client_id" in given:
            clauses.append(_m.client_id == given["client_id"])
        for key, json_name, after in (
            ("request_time_gt", "requestTime[gt]", True),
            ("request_time_lt", "requestTime[lt]", False),
        ):
            if key not in given:
                continue
            instant = listing.parse_instant(given[key])
            if instant is None:
                checks.fail(json_name, "must be an RFC 3339 time (or YYYY-MM-DD)", "Format")
            else:
                clauses.append(_m.created_at > instant if after else _m.created_at < instant)
        checks.raise_if_failed()
        query = listing.paged(select(_communications).where(*clauses), _communications, page)
        async with self._db.read() as session:
            rows = list((await session.execute(query)).mappings())[: page.limit]
            ids = [r["id"] for r in rows]
            by_communication: dict[str, list[Row]] = {i: [] for i in ids}
            if ids:
                found = await session.execute(
                    select(_deliveries).where(_d.communication_id.in_(ids))
                )
                for delivery in found.mappings():
                    by_communication[delivery["communication_id"]].append(delivery)
        return [communication_snapshot(r, by_communication[r["id"]]) for r in rows]
