"""JSON logs, one object per line, carrying the request id of the RPC that wrote them.

Every line is scrubbed of what looks like a credential, whoever logged it and whatever the
client put where (an access token sent as a contact id is quoted by its NotFound): access
tokens keep their id and lose their secret, bearer JWTs are replaced whole.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from switchboard.server.core.context import request_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# atk_<id>.<secret> (contacts/tokens.py), the separator possibly %-escaped; and a JWT.
_ACCESS_TOKEN = re.compile(r"(atk_[0-9A-Za-z]+)(?:\.|%2[Ee])[\w-]+")
_JWT = re.compile(r"\beyJ[\w-]*\.eyJ[\w-]*\.[\w-]*")


def scrub(text: str) -> str:
    """`text` without the secrets of access tokens and without JWTs."""
    if "atk_" in text:
        text = _ACCESS_TOKEN.sub(r"\1.REDACTED", text)
    if "eyJ" in text:
        text = _JWT.sub("REDACTED-JWT", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        # `extra` fields, including a request_id passed explicitly by code outside the RPC's task.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str))


def configure_logging(level: str = "INFO", path: Path | None = None) -> None:
    """JSON lines to stderr, or appended to `path` (the run command keeps its terminal tidy)."""
    handler: logging.Handler = (
        logging.FileHandler(path) if path is not None else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
