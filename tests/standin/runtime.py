"""State of the runtime stand-in: users, the PLC state machine, compilation, logs.

Everything the REST layer needs, free of HTTP so it can be exercised directly.
Users, the JWT secret and the installed program live in the data directory so
that a restarted container behaves like a restarted runtime (same accounts,
the installed program starts at boot).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Runtime PLC states as reported by /api/status ("STATUS:<state>").
EMPTY = "EMPTY"
INIT = "INIT"
STOPPED = "STOPPED"
RUNNING = "RUNNING"
ERROR = "ERROR"
TRANSITIONING = "TRANSITIONING"

# Compilation states as reported by /api/compilation-status.
C_IDLE = "IDLE"
C_UNZIPPING = "UNZIPPING"
C_COMPILING = "COMPILING"
C_SUCCESS = "SUCCESS"
C_FAILED = "FAILED"

# A program archive containing a member with this name fails to compile:
# the stand-in's way to let tests exercise the failure path.
FAIL_MARKER = "FAIL"
MAX_PROGRAM_BYTES = 32 * 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_PBKDF2_ROUNDS = 20_000


class UserError(Exception):
    """A user operation was refused; carries the HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    salt: str
    password_hash: str


def _hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac(
        "sha256", password.encode(), bytes.fromhex(salt), _PBKDF2_ROUNDS
    ).hex()


class UserStore:
    """Accounts persisted as JSON in the data directory."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._users: list[User] = []
        if path.exists():
            self._users = [User(**u) for u in json.loads(path.read_text())]

    def has_users(self) -> bool:
        with self._lock:
            return bool(self._users)

    def get(self, user_id: int) -> User | None:
        with self._lock:
            return next((u for u in self._users if u.id == user_id), None)

    def create(self, username: str, password: str, role: str | None) -> User:
        with self._lock:
            if any(u.username == username for u in self._users):
                raise UserError(409, "Username already exists")
            # The first account is always the administrator.
            if not self._users:
                role = "admin"
            salt = secrets.token_hex(16)
            user = User(
                id=max((u.id for u in self._users), default=0) + 1,
                username=username,
                role=role or "user",
                salt=salt,
                password_hash=_hash_password(password, salt),
            )
            self._users.append(user)
            self._save()
            return user

    def authenticate(self, username: str, password: str) -> User | None:
        with self._lock:
            user = next((u for u in self._users if u.username == username), None)
        if user is None:
            return None
        if hmac.compare_digest(user.password_hash, _hash_password(password, user.salt)):
            return user
        return None

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps([u.__dict__ for u in self._users]))
        os.replace(tmp, self._path)


class RuntimeLog:
    """Bounded in-memory runtime log, served by /api/runtime-logs."""

    def __init__(self, capacity: int = 1000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._next_id = 1

    def add(self, level: str, message: str) -> None:
        with self._lock:
            self._entries.append(
                {
                    "id": self._next_id,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                    "level": level,
                    "message": message,
                }
            )
            self._next_id += 1
        log.info("runtime log %s: %s", level, message)

    def query(self, after_id: int | None, min_level: str | None) -> list[dict[str, Any]]:
        """Entries newer than `after_id` at `min_level` or more severe."""
        floor = LOG_LEVELS.index(min_level) if min_level in LOG_LEVELS else 0
        with self._lock:
            return [
                dict(e)
                for e in self._entries
                if (after_id is None or e["id"] > after_id)
                and LOG_LEVELS.index(e["level"]) >= floor
            ]


class Plc:
    """PLC state machine and program compilation."""

    def __init__(self, data_dir: Path, logs: RuntimeLog, compile_seconds: float) -> None:
        self._program_path = data_dir / "program.zip"
        self._logs = logs
        self._compile_seconds = compile_seconds
        self._lock = threading.Lock()
        self._state = INIT
        self._compile_status = C_IDLE
        self._compile_logs: list[str] = []
        self._exit_code: int | None = None
        self._compile_thread: threading.Thread | None = None
        self._shutting_down = threading.Event()

    def boot(self) -> None:
        """At start the installed program runs; without one the PLC is EMPTY."""
        with self._lock:
            if self._program_path.exists():
                self._state = RUNNING
                message = "Installed program started at boot"
            else:
                self._state = EMPTY
                message = "No program installed"
        self._logs.add("INFO", message)

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def _busy(self) -> bool:
        return self._compile_status in (C_UNZIPPING, C_COMPILING) or self._state == TRANSITIONING

    def start(self) -> str:
        with self._lock:
            if self._busy():
                return "COMMAND:BUSY"
            if self._state == RUNNING:
                return "START:ERROR_ALREADY_RUNNING"
            if not self._program_path.exists():
                return "START:ERROR"
            self._state = RUNNING
        self._logs.add("INFO", "PLC started")
        return "START:OK"

    def stop(self) -> str:
        with self._lock:
            if self._busy():
                return "COMMAND:BUSY"
            if self._state != RUNNING:
                return "STOP:ERROR"
            self._state = STOPPED
        self._logs.add("INFO", "PLC stopped")
        return "STOP:OK"

    def compilation(self) -> dict[str, Any]:
        with self._lock:
            return {
                "status": self._compile_status,
                "logs": list(self._compile_logs),
                "exit_code": self._exit_code,
            }

    def upload(self, filename: str, data: bytes) -> dict[str, Any]:
        """Accept a program archive; compilation continues in the background."""

        def refused(reason: str) -> dict[str, Any]:
            self._logs.add("WARNING", "Upload refused: " + reason)
            return {"UploadFileFail": reason, "CompilationStatus": C_FAILED}

        if len(data) > MAX_PROGRAM_BYTES:
            return refused("File too large")
        if not zipfile.is_zipfile(io.BytesIO(data)):
            return refused("Invalid file: not a zip archive")
        with self._lock:
            if self._busy():
                return {
                    "UploadFileFail": "Runtime is busy compiling",
                    "CompilationStatus": C_FAILED,
                }
            # Compiling replaces the program: the running one stops first.
            self._state = TRANSITIONING
            self._compile_status = C_UNZIPPING
            self._compile_logs = ["Received " + (filename or "program.zip")]
            self._exit_code = None
            self._compile_thread = threading.Thread(
                target=self._compile, args=(data,), name="standin-compile", daemon=True
            )
            self._compile_thread.start()
        return {"UploadFileFail": "", "CompilationStatus": C_COMPILING}

    def _compile(self, data: bytes) -> None:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
                unpacked = sum(i.file_size for i in archive.infolist())
            ok = (
                bool(names)
                and unpacked <= MAX_PROGRAM_BYTES
                and not any(os.path.basename(n) == FAIL_MARKER for n in names)
            )
        except zipfile.BadZipFile:
            names, ok = [], False
        with self._lock:
            self._compile_logs.append(f"Unzipped {len(names)} file(s)")
            self._compile_status = C_COMPILING
        # Stand-in for the compiler's run time, cut short by shutdown.
        self._shutting_down.wait(self._compile_seconds)
        with self._lock:
            if ok:
                tmp = self._program_path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, self._program_path)
                self._compile_logs.append("Compilation finished successfully")
                self._compile_status = C_SUCCESS
                self._exit_code = 0
                self._state = STOPPED
            else:
                self._compile_logs.append("Compilation failed")
                self._compile_status = C_FAILED
                self._exit_code = 1
                # The previously installed program (if any) is still there.
                self._state = STOPPED if self._program_path.exists() else EMPTY
        self._logs.add(
            "INFO" if ok else "ERROR", "Compilation " + ("succeeded" if ok else "failed")
        )

    def shutdown(self) -> None:
        """Finish a running compilation at once (the server is stopping)."""
        self._shutting_down.set()

    def wait_compiled(self, timeout: float) -> bool:
        """Join the background compilation (tests and shutdown)."""
        thread = self._compile_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()


class Runtime:
    """The whole observable runtime state, rooted in one data directory."""

    def __init__(
        self, data_dir: Path, token_ttl: float = 900.0, compile_seconds: float = 0.5
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.token_ttl = token_ttl
        self.logs = RuntimeLog()
        self.users = UserStore(data_dir / "users.json")
        self.plc = Plc(data_dir, self.logs, compile_seconds)
        self.jwt_secret = self._load_secret(data_dir / "jwt_secret")

    @staticmethod
    def _load_secret(path: Path) -> bytes:
        if path.exists():
            return bytes.fromhex(path.read_text().strip())
        secret = secrets.token_bytes(32)
        path.write_text(secret.hex())
        path.chmod(0o600)
        return secret
