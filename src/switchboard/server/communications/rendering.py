"""Rendering a communication on a channel: twice, with masked values for what is stored and
shown, and with real values for the provider (never stored in clear).

What an argument renders as, by type and channel:

- Link: in SMS, a non-sensitive link the template uses is replaced by a short link
  (`<public base URL>/s/<code>`, whose clicks become events); sensitive links are never
  shortened, since a short URL's target is stored and listed in clear. Elsewhere: as given.
- QrCode (or `qrArgument`): in email, `cid:<name>@switchboard`, the QR image's inline part; in
  SMS and WhatsApp, the public image URL `<base>/v2/communications/qr?qrToken=…`.
- Image: in email, `cid:<name>@switchboard` (its inline part); elsewhere the empty string.
- Attachment: its file name (email attaches the file whatever the template says).
- Anything sensitive: `****` in the masked rendering.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.server.communications.arguments import MASK, CheckedArguments, mask
from switchboard.server.communications.email import cid
from switchboard.server.communications.models import ChannelName
from switchboard.server.telephony.encoding import is_gsm7, segment_count
from switchboard.server.templates.engine import resolve_argument
from switchboard.server.templates.models import ArgumentType


class Compiled(Protocol):
    """A compiled template (the engine's CompiledTemplate)."""

    def render(self, arguments: Mapping[str, Any]) -> str: ...


class TemplateLike(Protocol):
    """A stable template (the templates domain's StableTemplate)."""

    @property
    def id(self) -> str: ...

    @property
    def channel(self) -> str: ...

    @property
    def language(self) -> str: ...

    @property
    def sender_info(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def compiled_content(self) -> Any: ...

    @property
    def compiled_subject(self) -> Any: ...


@dataclass(frozen=True)
class Rendering:
    subject: str
    content: str


@dataclass(frozen=True)
class SmsFacts:
    encoding: str  # GSM-7 or UCS-2
    characters: int
    segments: int


def sms_facts(content: str) -> SmsFacts:
    return SmsFacts("GSM-7" if is_gsm7(content) else "UCS-2", len(content), segment_count(content))


def contexts(
    arguments: CheckedArguments,
    channel: str,
    *,
    short_links: Mapping[str, str],
    qr_url: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(masked, real) values to render `channel` with."""
    masked: dict[str, Any] = {}
    real: dict[str, Any] = {}
    email = channel == ChannelName.EMAIL
    for name, value in arguments.values.items():
        kind = arguments.kind(name)
        sensitive = arguments.sensitive(name)
        if value is None:
            real[name] = masked[name] = None
        elif name == arguments.qr_name:
            shown = f"cid:{cid(name)}" if email else qr_url
            real[name] = shown
            masked[name] = MASK if sensitive else shown
        elif kind == ArgumentType.IMAGE:
            real[name] = masked[name] = f"cid:{cid(name)}" if email else ""
        elif kind == ArgumentType.ATTACHMENT:
            real[name] = masked[name] = name
        elif name in short_links:
            real[name] = masked[name] = short_links[name]
        else:
            real[name] = value
            masked[name] = mask(value) if sensitive else value
    return masked, real


def render(template: TemplateLike, values: Mapping[str, Any]) -> Rendering:
    """Subject (email) and content; raises the engine's errors."""
    subject = ""
    if template.compiled_subject is not None:
        subject = template.compiled_subject.render(values)
    return Rendering(subject, template.compiled_content.render(values))


def argument_uses(template: TemplateLike, declared: Container[str]) -> set[str]:
    """The arguments a template uses (content and subject): declared names by the engine's
    dotted-name rule (`${attached.txt}`), anything else by its first segment."""
    names: set[str] = set()
    for compiled in (template.compiled_content, template.compiled_subject):
        for reference in getattr(compiled, "references", ()) if compiled is not None else ():
            resolved = resolve_argument(reference.path, declared)
            names.add(resolved[0] if resolved else str(reference.path[0]))
    return names
