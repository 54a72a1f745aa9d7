"""Email as a provider receives it: one complete MIME message built from a rendered template.

`build_email` makes the HTML body, inline images and the QR code `multipart/related` parts
referenced by `cid:`, with the attachments, and a plain-text alternative (`html_to_text`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from html.parser import HTMLParser


@dataclass(frozen=True)
class InlinePart:
    """A file of an email: inline (referenced as `cid:<content_id>`) or attached."""

    name: str
    content_type: str
    content: bytes
    content_id: str = ""  # set for inline parts


@dataclass
class EmailParts:
    sender_name: str
    sender_address: str
    to: str
    cc: Sequence[str]
    reply_to: str
    subject: str
    html: str
    inline: Sequence[InlinePart] = field(default_factory=list)
    attachments: Sequence[InlinePart] = field(default_factory=list)


def cid(name: str) -> str:
    """The Content-ID of an inline part named `name` (templates reference `cid:` + this)."""
    return f"{name}@switchboard"


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: blocks become paragraphs, `<br>` a line break, links
    `text (url)`; scripts, styles and the head are dropped."""

    _BLOCKS = frozenset(
        {
            "p",
            "div",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "table",
            "tr",
            "ul",
            "ol",
            "blockquote",
            "pre",
            "hr",
            "section",
            "article",
            "header",
            "footer",
        }
    )
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str, int]] = []  # (href, position in _out where its text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._out.append("\n")
        elif tag in self._BLOCKS:
            self._out.append("\n\n")
        elif tag == "li":
            self._out.append("\n- ")
        elif tag in ("td", "th"):
            self._out.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self._out)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCKS:
            self._out.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            text = "".join(self._out[start:]).strip()
            # A link whose text is its address, or that points nowhere useful, stays as is.
            if href and not href.startswith(("#", "cid:")) and href != text:
                self._out.append(f" ({href})" if text else href)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self._out).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML body, for clients that do not render HTML."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def build_email(parts: EmailParts) -> bytes:
    """multipart/mixed (when there are attachments) of multipart/alternative: text/plain
    derived from the HTML, then multipart/related holding the HTML and its `cid:` images."""
    message = EmailMessage()
    message["From"] = formataddr((parts.sender_name, parts.sender_address))
    message["To"] = parts.to
    if parts.cc:
        message["Cc"] = ", ".join(parts.cc)
    if parts.reply_to:
        message["Reply-To"] = parts.reply_to
    message["Subject"] = parts.subject
    message["Message-ID"] = make_msgid(domain="switchboard")
    message.set_content(html_to_text(parts.html))
    message.add_alternative(parts.html, subtype="html")
    html_part = message.get_body(("html",))
    assert html_part is not None  # added just above
    for part in parts.inline:
        maintype, _, subtype = part.content_type.partition("/")
        html_part.add_related(
            part.content, maintype, subtype, cid=f"<{part.content_id}>", filename=part.name
        )
    for part in parts.attachments:
        maintype, _, subtype = part.content_type.partition("/")
        message.add_attachment(part.content, maintype, subtype, filename=part.name)
    return message.as_bytes()
