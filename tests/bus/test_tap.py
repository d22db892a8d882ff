"""The tap CLI against a publisher the test controls: formatting and sequence gaps."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from common import wire
from common.bus import Endpoints, prepare_run_dir
from testkit.helpers import ROOT, agent_env


class LineReader:
    """Reads a child's stdout lines in a thread, so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream],
                         daemon=True).start()

    def next(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None


def _tap(base: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "services.tap", *args], cwd=ROOT,
                            env=agent_env(base), stdout=subprocess.PIPE, text=True)


def _send(sock: zmq.Socket[bytes], topic: str, seq: int, body: dict) -> None:
    header = wire.Header(wire.PROTOCOL_VERSION, f"m{seq}", time.time(), "netbridge", seq)
    sock.send_multipart(wire.encode(topic, header, body))


def _publish_until_seen(sock: zmq.Socket[bytes], reader: LineReader, topic: str) -> str:
    """Publish numbered messages until the tap shows one (it has then joined)."""
    for seq in range(1, 200):
        _send(sock, topic, seq, {"n": seq})
        line = reader.next(0.1)
        if line:
            return line
    raise AssertionError("the tap never showed a message")


def _run(base: Path, *args: str) -> tuple[zmq.Socket[bytes], subprocess.Popen[str], LineReader]:
    prepare_run_dir(base / "run")
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(Endpoints(base / "run").pub("netbridge"))
    proc = _tap(base, *args)
    return pub, proc, LineReader(proc)


def test_tap_reports_a_sequence_gap_as_json(base_dir: Path) -> None:
    pub, proc, reader = _run(base_dir, "--json", "net.")
    try:
        first = json.loads(_publish_until_seen(pub, reader, "net.change"))
        last = first["seq"]
        assert first["source"] == "netbridge" and first["topic"] == "net.change"
        # Drain what was in flight, then skip three numbers.
        while (line := reader.next(0.3)) is not None:
            last = json.loads(line)["seq"]
        _send(pub, "net.change", last + 4, {"after": "gap"})
        record = json.loads(reader.next(5) or "{}")
        assert record["seq"] == last + 4 and record["gap"] == 3
        assert record["body"] == {"after": "gap"}
        # Filters: a topic outside the prefix is not shown.
        _send(pub, "svc.netbridge.alive", 1, {"x": 1})
        _send(pub, "net.change", last + 5, {"n": "next"})
        shown = json.loads(reader.next(5) or "{}")
        assert shown["topic"] == "net.change" and "gap" not in shown
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        pub.close()


def test_tap_text_lines_and_source_filter(base_dir: Path) -> None:
    pub, proc, reader = _run(base_dir, "--source", "netbridge")
    try:
        line = _publish_until_seen(pub, reader, "net.discovery")
        assert "netbridge" in line and "net.discovery" in line and '{"n":' in line
        while reader.next(0.3) is not None:
            pass
        _send(pub, "net.discovery", 1000, {"jump": True})
        gap_line = reader.next(5) or ""
        assert "GAP(" in gap_line and "#1000" in gap_line
    finally:
        proc.terminate()
        proc.wait(10)
        pub.close()


def test_tap_without_a_bus_says_so(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "services.tap", "--run-dir",
                             str(tmp_path / "absent")], cwd=ROOT, capture_output=True,
                            text=True, timeout=30, env=agent_env(tmp_path))
    assert result.returncode == 2 and "no bus" in result.stderr
