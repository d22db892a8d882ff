"""The rules of `create_new_runtime.serial_configs`, shared by the gateway and the executor.

A serial config is `{"name", "device_id", "container_path"}`: `device_id` is the adapter's
stable `/dev/serial/by-id/...` path on the host, `container_path` where the runtime sees
it.  The gateway checks the shapes below; the executor checks them again and adds what
only it knows (that `device_id` lies in the configured by-id directory).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from common.vnic_rules import Invalid

SERIAL_CONFIGS_MAX = 16
SERIAL_NAME_MAX = 64
PATH_MAX = 255
FIELDS = ("name", "device_id", "container_path")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PATH_CHARS = re.compile(r"[A-Za-z0-9_.:+@=,/-]+")


def serial_name(value: str, _ctx: Mapping[str, Any]) -> str:
    name = value.strip()
    if len(name) > SERIAL_NAME_MAX:
        raise Invalid(f"serial port name is longer than {SERIAL_NAME_MAX} characters")
    if not _NAME.fullmatch(name):
        raise Invalid(f"{name!r} is not a valid serial port name (letters, digits, '_', "
                      "'.', '-', starting with a letter or digit)")
    return name


def _absolute(value: str, what: str) -> str:
    path = value.strip()
    if len(path) > PATH_MAX:
        raise Invalid(f"{what} is longer than {PATH_MAX} characters")
    if not path.startswith("/") or not _PATH_CHARS.fullmatch(path):
        raise Invalid(f"{what} {path!r} must be an absolute path of plain characters")
    if posixpath.normpath(path) != path or "/../" in path + "/" or path.endswith("/"):
        raise Invalid(f"{what} {path!r} must be a normalised path (no '..', '//', or "
                      "trailing '/')")
    return path


def device_path(value: str, _ctx: Mapping[str, Any]) -> str:
    return _absolute(value, "device_id")


def container_path(value: str, _ctx: Mapping[str, Any]) -> str:
    path = _absolute(value, "container_path")
    if not path.startswith("/dev/") or path.startswith(("/dev/pts/", "/dev/shm/",
                                                         "/dev/mqueue/")):
        raise Invalid(f"container_path {path!r} must be a device path under /dev "
                      "(not /dev/pts, /dev/shm or /dev/mqueue)")
    return path


def serial_set(value: list[dict[str, Any]], _ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """No two configs share a name, an adapter or a container path."""
    for key in FIELDS:
        seen: set[str] = set()
        for item in value:
            if item[key] in seen:
                raise Invalid(f"two serial configs with the same {key} {item[key]!r}")
            seen.add(item[key])
    return value


def in_by_id_dir(path: str, by_id_dir: str) -> bool:
    """`path` names an entry directly inside `by_id_dir`."""
    return posixpath.dirname(path) == posixpath.normpath(by_id_dir)
