"""The contract engine: field descriptions as data, and the one routine that applies them.

A :class:`Contract` is an ordered tuple of :class:`Field` rows. :func:`check_object`
walks the rows in order and stops at the first failure, so the error a client sees is
always the earliest field that is wrong. For each field it does, in this order:

1. presence (an alias such as ``ip`` stands for its field; ``null`` counts as absent for
   an optional field and as the wrong type for a required one),
2. type, with the exact texts the cloud may match on (:data:`TYPE_TEXTS`),
3. size (strings, lists and objects, before anything iterates over them),
4. items of a list (a kind per item, or a nested contract per item),
5. the field's meaning check, which sees the fields normalised before it.

After the rows, the contract's ``post`` check sees the whole normalised object.
Error texts: ``Missing required field: 'Missing key: <name>'``,
``Invalid field type: Value must be <kind>``, ``Validation error: <path>: <reason>``.
A non-string where a non-empty string is required is ``... must be a string.``, as the
original says; ``... must be a non-empty string.`` is for blank strings only.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.gateway.validators import DEFAULT_STRING_MAX, Check, Invalid

PostCheck = Callable[[dict[str, Any]], None]


class ContractError(Exception):
    """A cloud command broke its contract. ``text`` is the ack's ``error`` verbatim."""

    def __init__(self, text: str, field: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.field = field


class Kind(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    NONEMPTY_STRING = "non-empty string"
    BOOLEAN = "boolean"
    LIST = "list"
    DATETIME = "datetime"
    OBJECT = "object"
    ANY = "any"


# Kinds whose type failure has a wording the cloud knows; the others fall back to
# a ``Validation error``.
TYPE_TEXTS: Mapping[Kind, str] = {
    Kind.NUMBER: "Invalid field type: Value must be a number.",
    Kind.STRING: "Invalid field type: Value must be a string.",
    Kind.NONEMPTY_STRING: "Invalid field type: Value must be a non-empty string.",
    Kind.BOOLEAN: "Invalid field type: Value must be a boolean.",
    Kind.LIST: "Invalid field type: Value must be a list.",
    Kind.DATETIME: "Invalid field type: Value must be a valid ISO datetime string.",
}

_DATETIME_MAX = 64


def missing_text(name: str) -> str:
    return f"Missing required field: 'Missing key: {name}'"


def validation_text(path: str, reason: str) -> str:
    return f"Validation error: {path}: {reason}" if path else f"Validation error: {reason}"


@dataclass(frozen=True)
class Field:
    """One key of a message. ``default`` must be immutable; use ``default_factory``
    for lists and dicts so no two commands share a container."""

    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    aliases: tuple[str, ...] = ()
    max_len: int | None = DEFAULT_STRING_MAX
    item_kind: Kind | None = None
    item_contract: Contract | None = None
    check: Check | None = None
    doc: str = ""

    def absent_value(self) -> Any:
        return self.default_factory() if self.default_factory else self.default


@dataclass(frozen=True)
class Contract:
    name: str
    fields: tuple[Field, ...]
    post: PostCheck | None = None
    doc: str = ""


def is_kind(kind: Kind, value: Any) -> bool:
    if kind is Kind.NUMBER:
        # JSON has no separate booleans-as-numbers; Python's bool is an int subclass.
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is Kind.STRING:
        return isinstance(value, str)
    if kind is Kind.NONEMPTY_STRING:
        return isinstance(value, str) and bool(value.strip())
    if kind is Kind.BOOLEAN:
        return isinstance(value, bool)
    if kind is Kind.LIST:
        return isinstance(value, list)
    if kind is Kind.OBJECT:
        return isinstance(value, dict)
    if kind is Kind.DATETIME:
        return _is_iso_datetime(value)
    return True


def _is_iso_datetime(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > _DATETIME_MAX:
        return False
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _type_error(kind: Kind, path: str, value: Any) -> ContractError:
    if kind is Kind.NONEMPTY_STRING and not isinstance(value, str):
        kind = Kind.STRING  # the original's text: only a blank string is "non-empty"
    text = TYPE_TEXTS.get(kind)
    if text is None:
        return ContractError(validation_text(path, f"must be {_article(kind)}"), path)
    return ContractError(text, path)


def _article(kind: Kind) -> str:
    return "an object" if kind is Kind.OBJECT else f"a {kind.value}"


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


_ABSENT = object()


def _lookup(obj: Mapping[str, Any], field: Field, path: str) -> Any:
    """The field's value, honouring aliases: ``_ABSENT`` when no key is there, ``None``
    when only nulls are."""
    keys = [key for key in (field.name, *field.aliases) if key in obj]
    found = [(key, obj[key]) for key in keys if obj[key] is not None]
    if not found:
        return None if keys else _ABSENT
    if any(value != found[0][1] for _, value in found[1:]):
        names = " and ".join(key for key, _ in found)
        raise ContractError(validation_text(path, f"{names} disagree"), path)
    return found[0][1]


def check_object(contract: Contract, obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate ``obj`` against ``contract``; return the normalised fields in order."""
    out: dict[str, Any] = {}
    for field in contract.fields:
        path = _join(prefix, field.name)
        value = _lookup(obj, field, path)
        if value is _ABSENT and field.required:
            raise ContractError(missing_text(field.name), path)
        if value is _ABSENT or (value is None and not field.required):
            # An optional null means "not given", as the cloud's optional fields do.
            out[field.name] = field.absent_value()
            continue
        out[field.name] = _check_value(field, value, out, path)
    if contract.post is not None:
        try:
            contract.post(out)
        except Invalid as exc:
            path = _join(prefix, exc.field) if exc.field else prefix
            raise ContractError(validation_text(path, exc.reason), path) from None
    return out


def _check_value(field: Field, value: Any, siblings: Mapping[str, Any], path: str) -> Any:
    if not is_kind(field.kind, value):
        raise _type_error(field.kind, path, value)
    sized = isinstance(value, (str, list, dict))
    if sized and field.max_len is not None and len(value) > field.max_len:
        unit = "characters" if isinstance(value, str) else "entries"
        reason = f"has more than {field.max_len} {unit}"
        raise ContractError(validation_text(path, reason), path)
    if isinstance(value, list):
        value = _check_items(field, value, path)
    if field.check is None:
        return value
    try:
        return field.check(value, siblings)
    except Invalid as exc:
        where = _join(path, exc.field) if exc.field else path
        raise ContractError(validation_text(where, exc.reason), where) from None


def _check_items(field: Field, items: list[Any], path: str) -> list[Any]:
    if field.item_kind is not None:
        for i, item in enumerate(items):
            if not is_kind(field.item_kind, item):
                raise _type_error(field.item_kind, f"{path}[{i}]", item)
            if isinstance(item, str) and len(item) > DEFAULT_STRING_MAX:
                where = f"{path}[{i}]"
                reason = f"has more than {DEFAULT_STRING_MAX} characters"
                raise ContractError(validation_text(where, reason), where)
        return list(items)
    if field.item_contract is not None:
        out = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]"
            if not isinstance(item, dict):
                raise ContractError(validation_text(where, "must be an object"), where)
            out.append(check_object(field.item_contract, item, where))
        return out
    return list(items)
