"""Logging for every agent process, configured once in `main()`.

Three destinations:

* stderr at the configured level — supervisord forwards it to the container's stdout, so
  it is what `docker logs` shows;
* `<state>/logs/orchestrator-logs-YYYY-MM-DD.log` at the configured level;
* `<state>/debug/orchestrator-debug-YYYY-MM-DD.log` at DEBUG.

All processes append to the same daily files.  Each record is written with one `write()`
on an `O_APPEND` descriptor, so lines of different processes interleave but never tear.
A file that reaches its size cap stops taking records for the day (with one marker line),
and files older than the retention period are deleted at each day change, so the logs
cannot fill a disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from pathlib import Path

from common.config import Config

FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
# How long a daily file's size, as this process counts it, is trusted before it is read
# again (other processes append to the same file): the cap may be overshot by what all
# of them write in that time.
SIZE_RECHECK = 1.0


class OnceFormatter(logging.Formatter):
    """Formats a record once for all the handlers that share this formatter: every record
    goes to stderr and to two files, and formatting (its time stamp above all) was most of
    a log line's cost."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_formatted")
        if cached is not None and cached[0] is self:
            return str(cached[1])
        line = super().format(record)
        record._formatted = (self, line)
        return line


class DailyFileHandler(logging.Handler):
    """Appends records to `<dir>/<prefix>-YYYY-MM-DD.log`, one file per local day."""

    def __init__(
        self,
        directory: Path,
        prefix: str,
        retention_days: int,
        max_bytes: int,
        level: int = logging.NOTSET,
        shared: bool = False,
    ) -> None:
        super().__init__(level)
        # Processes of several users append to the same daily file (the agent group's
        # directory, docs/images.md): whoever creates it opens it to the group.
        self.shared = shared
        self.directory = directory
        self.prefix = prefix
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self._day: dt.date | None = None
        self._day_ends = 0.0  # the next local midnight, as a time stamp
        self._fd: int | None = None
        self._full = False
        self._size = 0  # the file's size when last read, plus what was written since
        self._size_read_at = 0.0
        self._io_lock = threading.Lock()

    def path_for(self, day: dt.date) -> Path:
        return self.directory / f"{self.prefix}-{day.isoformat()}.log"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
            with self._io_lock:
                fd = self._current_fd(record.created)
                if fd is None:
                    return
                now = time.monotonic()
                if self._size + len(line) > self.max_bytes or \
                        now - self._size_read_at > SIZE_RECHECK:
                    self._size, self._size_read_at = os.fstat(fd).st_size, now
                if self._size + len(line) > self.max_bytes:
                    if not self._full:
                        self._full = True
                        os.write(fd, b"--- size cap reached, further records dropped today ---\n")
                    return
                os.write(fd, line)
                self._size += len(line)
        except Exception:  # logging must never take a process down
            self.handleError(record)

    def _current_fd(self, created: float) -> int | None:
        if created < self._day_ends and self._fd is not None:
            return self._fd
        today = dt.date.today()
        if today != self._day or self._fd is None:
            self._close_fd()
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path_for(today), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            if self.shared and os.fstat(self._fd).st_uid == os.geteuid():
                os.fchmod(self._fd, 0o660)
            self._day = today
            self._day_ends = dt.datetime.combine(today + dt.timedelta(days=1),
                                                 dt.time()).timestamp()
            self._full = False
            self._size_read_at = 0.0  # read at the first write
            self.prune(today)
        return self._fd

    def prune(self, today: dt.date) -> None:
        """Delete this handler's files older than the retention period."""
        oldest = today - dt.timedelta(days=self.retention_days)
        for path in self.directory.glob(f"{self.prefix}-*.log"):
            stamp = path.stem[len(self.prefix) + 1 :]
            try:
                day = dt.date.fromisoformat(stamp)
            except ValueError:
                continue
            if day < oldest:
                path.unlink(missing_ok=True)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._io_lock:
            self._close_fd()
        super().close()


def setup_logging(config: Config, process_name: str, files: bool = True) -> None:
    """Configure the root logger for one agent process."""
    # The program's name goes into the format itself: naming the process through
    # multiprocessing would load that package (about 0.2 MB) into every program.
    logging.logMultiprocessing = False
    level = getattr(logging, config.log_level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if files else level)
    name = process_name.replace("%", "%%")
    formatter = OnceFormatter(FORMAT.replace("%(processName)s", name))

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(level)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)

    if files:
        cap = config.log_max_file_mb * 1024 * 1024
        shared = config.agent_gid() is not None
        main_file = DailyFileHandler(
            config.log_dir(), "orchestrator-logs", config.log_retention_days, cap, level, shared
        )
        debug_file = DailyFileHandler(
            config.debug_log_dir(), "orchestrator-debug", config.log_retention_days, cap,
            shared=shared
        )
        for handler in (main_file, debug_file):
            handler.setFormatter(formatter)
            root.addHandler(handler)
    # Third-party chatter at DEBUG would drown ours and fill the debug file.
    for noisy in ("asyncio", "urllib3", "docker", "engineio", "socketio", "aiohttp", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
