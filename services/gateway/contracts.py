"""The cloud command contracts: one table, one entry point.

The gateway calls :func:`validate` for every cloud command before anything reaches a
backend process. It returns a frozen :class:`Command` or raises
:class:`~services.gateway.schema.ContractError`, whose ``text`` is the ack's ``error``
verbatim and whose ``field`` names the offending key (``vnic_configs[1].mac_address``).

Every topic starts with the common optional fields ``correlation_id`` (number),
``action`` (string) and ``requested_at`` (ISO-8601, trailing ``Z`` accepted); they are
carried on the :class:`Command` itself, never in ``params``. A JSON ``null`` in an optional
field counts as absent; in a required one it is the wrong type. Unknown keys are ignored
and never forwarded.

Decisions beyond the protocol text:

* ``cpuPeriod`` / ``memoryPeriod`` are required strings on both consumption topics, as
  the original has them (``Missing required field: 'Missing key: cpuPeriod'``); an
  unparsable one still means the last hour (metrics decides).
* A non-string where a (non-empty) string is required is ``... must be a string.``;
  ``... a non-empty string.`` is kept for blank strings.
* ``correlation_id`` is echoed in every ack as received (see
  :func:`echo_correlation_id`), even when it fails its own type check.
* ``runtime_version`` ``""`` means ``latest``.
* ``device_id`` of an existing device follows Docker's name rule (up to 255 characters);
  a new ``container_name`` is held to 54 so that ``<name>_internal`` fits in 63.
* ``run_command``: ``method`` is upper-cased but not restricted (an unsupported method is
  answered by the executor with an HTTP 400); ``api`` always starts with ``/``; header
  values that are numbers are turned into strings; ``files[*].content_type`` defaults
  to ``application/octet-stream``.
* A missing key inside a vNIC is reported with its own name, as the cloud knows it
  (``Missing required field: 'Missing key: name'``); ``field`` carries the full path.
* vNICs (normalised shape in :mod:`common.vnic_rules`): at least one; an
  ``ip_address`` must also lie inside ``parent_subnet`` when both are given; two vNICs
  whose parent subnet is unknown count as the same MACVLAN network when they share a
  parent, since detection would give both the same one.
* Size limits (see :mod:`services.gateway.validators`): strings 256 characters unless
  stated, ``method`` 32, 16 vNICs, 8 DNS servers, 64 headers, 256 query parameters,
  16 files, ``api`` 4096, ``data`` 32 levels deep and 100 000 values, integers within
  64 bits. Lengths are checked before anything iterates, so an oversized payload costs
  little; the gateway caps the raw size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common import serial_rules
from common import vnic_rules as rules
from services.gateway import validators as v
from services.gateway.schema import (
    Contract,
    ContractError,
    Field,
    Kind,
    check_object,
    validation_text,
)

__all__ = [
    "CONTRACTS",
    "TOPICS",
    "Command",
    "ContractError",
    "echo_correlation_id",
    "echo_value",
    "safe_correlation_id",
    "validate",
]

DEFAULT_PORT = 8443
# The longest correlation_id echoed back as received (as JSON text).
ECHO_MAX = 1024

COMMON: tuple[Field, ...] = (
    Field("correlation_id", Kind.NUMBER, check=v.correlation_id, doc="echoed in the ack"),
    Field("action", Kind.STRING, check=v.plain_text, doc="the topic name, informative"),
    Field("requested_at", Kind.DATETIME, max_len=None, doc="when the cloud sent it"),
)


def _device(check: v.Check = rules.device_id) -> Field:
    return Field(
        "device_id",
        Kind.NONEMPTY_STRING,
        required=True,
        max_len=rules.EXISTING_NAME_MAX,
        check=check,
        doc="runtime container name",
    )


def _period(name: str) -> Field:
    return Field(
        name,
        Kind.STRING,
        required=True,
        max_len=v.PERIOD_MAX,
        doc="'<start>,<end>', '<N>h|m|d' or seconds; parsed by metrics",
    )


VNIC = Contract(
    "vnic",
    (
        Field("name", Kind.NONEMPTY_STRING, required=True, check=rules.vnic_name),
        Field("parent_interface", Kind.NONEMPTY_STRING, required=True, check=rules.interface_name),
        Field("network_mode", Kind.STRING, required=True, check=rules.network_mode),
        Field("parent_subnet", Kind.STRING, check=rules.parent_subnet),
        Field("parent_gateway", Kind.STRING, check=rules.parent_gateway),
        Field("ip_address", Kind.STRING, aliases=("ip",), check=rules.ip_address),
        Field("subnet", Kind.STRING, check=rules.subnet),
        Field("gateway", Kind.STRING, check=rules.gateway),
        Field(
            "dns",
            Kind.LIST,
            item_kind=Kind.STRING,
            max_len=rules.DNS_SERVERS_MAX,
            default_factory=list,
            check=rules.dns_servers,
        ),
        Field("mac_address", Kind.STRING, aliases=("mac",), check=rules.mac_address),
        Field("dedicated_interface", Kind.STRING, check=rules.dedicated_interface),
    ),
    post=rules.vnic_post,
    doc="one virtual NIC of a runtime, bridged to the LAN through MACVLAN, or a host NIC "
        "moved into it (dedicated_interface)",
)


SERIAL = Contract(
    "serial_config",
    (
        Field("name", Kind.NONEMPTY_STRING, required=True, check=serial_rules.serial_name),
        Field("device_id", Kind.NONEMPTY_STRING, required=True,
              max_len=serial_rules.PATH_MAX, check=serial_rules.device_path),
        Field("container_path", Kind.NONEMPTY_STRING, required=True,
              max_len=serial_rules.PATH_MAX, check=serial_rules.container_path),
    ),
    doc="one USB serial adapter (by its /dev/serial/by-id path) given to a runtime",
)


def _contract(name: str, *fields: Field, doc: str) -> Contract:
    return Contract(name, COMMON + fields, doc=doc)


CONTRACTS: Mapping[str, Contract] = {
    c.name: c
    for c in (
        _contract(
            "create_new_runtime",
            Field(
                "container_name",
                Kind.NONEMPTY_STRING,
                required=True,
                check=rules.new_container_name,
            ),
            Field(
                "vnic_configs",
                Kind.LIST,
                required=True,
                item_contract=VNIC,
                max_len=rules.VNICS_MAX,
                check=rules.vnic_set,
            ),
            Field(
                "runtime_version",
                Kind.STRING,
                default=rules.DEFAULT_IMAGE_TAG,
                check=rules.image_tag,
            ),
            Field(
                "serial_configs",
                Kind.LIST,
                item_contract=SERIAL,
                max_len=serial_rules.SERIAL_CONFIGS_MAX,
                default_factory=list,
                check=serial_rules.serial_set,
            ),
            doc="create a runtime container and its networks (runs in the background)",
        ),
        _contract("delete_device", _device(), doc="stop and remove a managed runtime"),
        _contract("start_device", _device(), doc="start a managed runtime"),
        _contract("stop_device", _device(), doc="stop a managed runtime"),
        _contract("restart_device", _device(), doc="restart a managed runtime"),
        _contract(
            "get_device_status",
            _device(rules.device_id_or_orchestrator),
            doc="state of a runtime, or self-destruct progress for __orchestrator__",
        ),
        _contract(
            "run_command",
            _device(),
            Field("method", Kind.STRING, required=True, max_len=32, check=v.http_method),
            Field("api", Kind.STRING, required=True, max_len=v.API_PATH_MAX, check=v.api_path),
            Field("port", Kind.NUMBER, default=DEFAULT_PORT, check=v.tcp_port),
            Field(
                "headers",
                Kind.OBJECT,
                default_factory=dict,
                max_len=v.HEADERS_MAX,
                check=v.headers,
            ),
            Field(
                "params",
                Kind.OBJECT,
                default_factory=dict,
                max_len=v.QUERY_PARAMS_MAX,
                check=v.query_params,
            ),
            Field("data", Kind.ANY, max_len=None, check=v.json_body),
            Field(
                "files",
                Kind.OBJECT,
                default_factory=dict,
                max_len=v.FILES_MAX,
                check=v.files,
            ),
            doc="proxy one HTTP request to a runtime's internal address",
        ),
        _contract(
            "get_consumption_device",
            _device(),
            _period("cpuPeriod"),
            _period("memoryPeriod"),
            doc="limits and usage history of one runtime",
        ),
        _contract(
            "get_consumption_orchestrator",
            _period("cpuPeriod"),
            _period("memoryPeriod"),
            doc="host facts and usage history",
        ),
        _contract(
            "get_host_interfaces",
            Field("include_virtual", Kind.BOOLEAN, default=False),
            Field("detailed", Kind.BOOLEAN, default=True),  # as the original
            doc="the host's interfaces from the network monitor's cache",
        ),
        _contract("get_serial_devices",
                  doc="the USB serial adapters the network monitor sees under by-id"),
        _contract("delete_orchestrator", doc="remove every managed object, then the agent"),
    )
}

TOPICS: tuple[str, ...] = tuple(CONTRACTS)


@dataclass(frozen=True)
class Command:
    """A validated cloud command. ``params`` holds the topic's own fields, normalised,
    every one present (defaults filled in), in contract order."""

    topic: str
    correlation_id: int | float | None
    params: dict[str, Any]
    action: str | None = None
    requested_at: str | None = None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def validate(topic: str, payload: Any) -> Command:
    """Check ``payload`` against the contract of ``topic``; the first failure wins."""
    contract = CONTRACTS.get(topic)
    if contract is None:
        raise ContractError(validation_text("", f"unknown command {topic[:64]!r}"))
    if not isinstance(payload, dict):
        reason = f"payload must be a JSON object, not {_describe(payload)}"
        raise ContractError(validation_text("", reason))
    params = check_object(contract, payload)
    return Command(
        topic=topic,
        correlation_id=params.pop("correlation_id"),
        action=params.pop("action"),
        requested_at=params.pop("requested_at"),
        params=params,
    )


def echo_correlation_id(payload: Any) -> Any:
    """The payload's ``correlation_id`` as received, for every ack — including those of
    payloads that failed validation, since the cloud matches acks by it, and the
    original echoes it unchecked.

    Only what the cloud could not read back is replaced by ``None``: a value that is not
    strict JSON (NaN, infinities, which Python's decoder lets through) or whose JSON is
    longer than :data:`ECHO_MAX` characters.
    """
    if not isinstance(payload, dict):
        return None
    return echo_value(payload.get("correlation_id"))


def echo_value(value: Any) -> Any:
    """`value` if the cloud can read it back as JSON and it is short, else ``None``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return value if len(text) <= ECHO_MAX else None


def safe_correlation_id(value: Any) -> int | float | None:
    """``value`` if it is a number JSON and msgpack can both carry, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not v.INT_MIN <= value <= v.INT_MAX:
        return None
    return value
