"""How meshnode's log records read: hclog-like text lines, or hclog's JSON lines.

Rule: one home for the log line format, shared by the agent's stderr (``node.cli``) and
``/v1/agent/monitor``. Context passed with ``extra=`` follows the message as
``key=value`` pairs (text) or as fields of the object (JSON).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["KeyValueFormatter", "JSONFormatter", "extra_fields", "CONSUL_LEVELS"]

# Attributes every LogRecord has; anything else came from ``extra=`` and is context.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: Consul's level names for Python's levels (hclog spells them lowercase in JSON).
CONSUL_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` context of ``record``, in the order it was given."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_FIELDS and not key.startswith("_")
    }


class KeyValueFormatter(logging.Formatter):
    """``2026-01-01T00:00:00 [INFO] node.agent: msg key=value ...`` (hclog-like)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(levelname)s] %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """Append ``extra=`` fields as ``key=value`` pairs after the message."""
        text = super().format(record)
        pairs = [f"{key}={_kv(value)}" for key, value in extra_fields(record).items()]
        return f"{text} {' '.join(pairs)}" if pairs else text


class JSONFormatter(logging.Formatter):
    """hclog's JSON line: ``{"@level","@message","@module","@timestamp", ...extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object (no newline)."""
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        doc: dict[str, Any] = {
            "@level": CONSUL_LEVELS.get(record.levelno, record.levelname).lower(),
            "@message": record.getMessage(),
            "@module": record.name,
            "@timestamp": stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        for key, value in extra_fields(record).items():
            doc[key] = (
                value
                if isinstance(value, str | int | float | bool) or value is None
                else str(value)
            )
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _kv(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text
