"""Entry point of the FATAL listener (run by supervisord as an event listener)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TextIO


def parse_tokens(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def listen(stdin: TextIO, stdout: TextIO, stderr: TextIO, supervisor_pid: int) -> int:
    while True:
        stdout.write("READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return 0  # supervisord closed our stdin: it is going away anyway
        headers = parse_tokens(line)
        payload = stdin.read(int(headers.get("len", "0")))
        if headers.get("eventname") == "PROCESS_STATE_FATAL":
            details = parse_tokens(payload.splitlines()[0] if payload else "")
            stderr.write(
                f"fatalwatch: program {details.get('processname', '?')} is FATAL; "
                "stopping supervisord so the container restarts\n")
            stderr.flush()
            os.kill(supervisor_pid, signal.SIGTERM)
        stdout.write("RESULT 2\nOK")
        stdout.flush()


def main() -> int:
    # supervisord stops its listener with SIGTERM; that is a normal end, not a failure.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    return listen(sys.stdin, sys.stdout, sys.stderr, os.getppid())


if __name__ == "__main__":
    sys.exit(main())
