"""Type aliases shared across the server, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

import grpc

T = TypeVar("T")
# A row by column name: a SQLAlchemy RowMapping or a plain dict.
Row: TypeAlias = Mapping[Any, Any]
# A resource as the API shows it, by message field name.
Snapshot: TypeAlias = dict[str, Any]
Context: TypeAlias = grpc.aio.ServicerContext
