"""The recent log in memory, for the dashboard's admin view (`GET /api/v1/log`): a logging handler that keeps the
last LOG_RECORDS records, each numbered, its message cut to MAX_MESSAGE_CHARS. The daemon installs it on the root
logger while it runs; records come from any thread (the store's writer, the frame clock's pacer)."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from gateway.twin import rfc3339

LOG_RECORDS = 500  # records kept: a few minutes of a busy box at info
MAX_MESSAGE_CHARS = 2000  # a message (with its traceback) is cut here


class LogRing(logging.Handler):
    def __init__(self, size: int = LOG_RECORDS) -> None:
        super().__init__()
        self._records: deque[tuple[int, float, str, str, str]] = deque(maxlen=size)
        self.last = 0  # the sequence number of the newest record (0: none yet)
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Called with the handler's lock held (`Handler.handle`)."""
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the format itself, rather than nothing
            message = str(record.msg)
        if record.exc_info:
            if not record.exc_text:  # as a Formatter does: the text is kept on the record for every handler
                record.exc_text = self._formatter.formatException(record.exc_info)
            message = f"{message}\n{record.exc_text}"
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS - 1] + "…"
        self.last += 1
        self._records.append((self.last, record.created, record.levelname, record.name, message))

    def after(self, seq: int) -> dict[str, Any]:
        """The records kept after sequence number `seq`, oldest first; `seq` above the newest (a number from before
        the daemon restarted) is taken as 0: every record kept."""
        assert self.lock is not None  # (made by Handler.__init__)
        with self.lock:
            records, last = list(self._records), self.last
        if seq > last:
            seq = 0
        return {"last": last, "oldest": records[0][0] if records else None,
                "records": [{"seq": n, "time": rfc3339(created), "level": level, "logger": name, "message": message}
                            for n, created, level, name, message in records if n > seq]}
