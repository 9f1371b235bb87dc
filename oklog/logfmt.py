"""logfmt quoting, and ``logging`` formatters for the node's own logs.

``-log.format`` selects how the node writes its own log lines:

* ``logfmt``: ``ts=2024-05-01T12:00:00.123Z level=info logger=oklog.node.root msg="..."``
  followed by any ``extra={...}`` fields and ``exc="..."`` for exceptions;
* ``json``: one JSON object per line with the same keys;
* ``text``: the plain human format (``configure_logging``'s default).

``logfmt_value`` / ``logfmt_pairs`` are also used where oklog writes key/value
pairs into records (the labels of Loki streams). Pure: no I/O.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

FORMATS = ("logfmt", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_LEVELS = {"WARNING": "warn", "CRITICAL": "crit"}


def logfmt_value(value: Any) -> str:
    """One logfmt value: bare when safe, else double-quoted with escapes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    s = value if isinstance(value, str) else str(value)
    if s and not any(c in s for c in ' ="\\,{}') and s.isprintable():
        return s
    out = (
        s.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{out}"'


def logfmt_key(key: str) -> str:
    """A key with no space, ``=`` or quote in it (those become ``_``)."""
    k = "".join("_" if (c in ' ="\\,{}' or not c.isprintable()) else c for c in key)
    return k or "_"


def logfmt_pairs(pairs: Iterable[tuple[str, Any]], sep: str = " ") -> str:
    return sep.join(f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs)


def _ts(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _level(record: logging.LogRecord) -> str:
    return _LEVELS.get(record.levelname, record.levelname.lower())


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("ts", _ts(record)),
        ("level", _level(record)),
        ("logger", record.name),
        ("msg", record.getMessage()),
    ]
    for k, v in vars(record).items():
        if k not in _STANDARD and not k.startswith("_"):
            fields.append((k, v))
    if record.exc_info:
        fields.append(("exc", formatter.formatException(record.exc_info)))
    elif record.exc_text:
        fields.append(("exc", record.exc_text))
    if record.stack_info:
        fields.append(("stack", formatter.formatStack(record.stack_info)))
    return fields


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=oklog.node.root msg="..." key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        return logfmt_pairs(_fields(self, record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``{"ts": ..., "level": ..., "logger": ..., "msg": ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(dict(_fields(self, record)), default=str, ensure_ascii=False)


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "logfmt":
        return LogfmtFormatter()
    if fmt == "json":
        return JSONFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r} (choose one of {', '.join(FORMATS)})")


def configure_logging(fmt: str = "text", level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Send the root logger to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
