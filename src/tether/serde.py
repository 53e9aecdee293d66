"""Typed JSON for everything tether stores: never pickle.

State values may hold JSON types (None, bool, int, float, str, list, dict with str keys) and
`Message`s. A message is written as `{"$message": {...}}`; a dict whose keys start with `$` is
escaped as `{"$dict": {...}}`, so stored data can never be mistaken for a tagged value. Decoding
builds only these known types, so whoever can write to the database cannot make tether run code.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from .errors import CorruptRecordError, UserError
from .messages import Message

__all__ = ["decode_value", "dumps", "encode_value", "loads"]


def encode_value(value: Any, *, where: str = "state") -> Any:
    """Turn `value` into plain JSON data, tagging messages; raise `UserError` for other types."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Message):
        try:
            data = value.model_dump(mode="json")
        except ValueError as exc:  # e.g. metadata holding an object JSON cannot carry
            raise UserError(f"{where} holds a message that cannot be stored: {exc}") from None
        return {"$message": data}
    if isinstance(value, list | tuple):
        return [encode_value(v, where=where) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UserError(f"{where} has the dict key {k!r}; stored dict keys must be strings")
            out[k] = encode_value(v, where=f"{where}[{k!r}]")
        if any(k.startswith("$") for k in out):
            return {"$dict": out}
        return out
    raise UserError(
        f"{where} holds {value!r} of type {type(value).__name__}, which tether cannot store; "
        "use JSON types (dict, list, str, int, float, bool, None) or Message"
    )


def decode_value(data: Any) -> Any:
    """The inverse of `encode_value`; raises `ValueError` on malformed tags."""
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if isinstance(data, dict):
        if len(data) == 1:
            ((key, inner),) = data.items()
            if key == "$message":
                return Message.model_validate(inner)
            if key == "$dict":
                if not isinstance(inner, dict):
                    raise ValueError(f"$dict holds {type(inner).__name__}, not an object")
                return {k: decode_value(v) for k, v in inner.items()}
        if any(k.startswith("$") for k in data):
            raise ValueError(f"unknown tag in keys {sorted(data)!r}")
        return {k: decode_value(v) for k, v in data.items()}
    return data


def dumps(value: Any, *, where: str = "state") -> str:
    """Encode `value` as typed JSON text."""
    return json.dumps(encode_value(value, where=where), ensure_ascii=False, separators=(",", ":"))


def loads(text: str | bytes, *, row: str) -> Any:
    """Decode typed JSON text; `row` names the stored row in the error if it is corrupt."""
    try:
        return decode_value(json.loads(text))
    except (ValueError, ValidationError, TypeError) as exc:
        raise CorruptRecordError(f"{row} does not hold valid tether JSON: {exc}") from None
