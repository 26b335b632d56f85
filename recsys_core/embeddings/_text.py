"""Item text: render each catalog row through a template, clean it, hash it, count what was odd.

A template is a :meth:`str.format` string over catalog columns, for example
``"{title}. {categories}. {tags}. {description}"``. The literal text before a field is that field's
*separator*: when a field is empty, it is dropped together with its separator, so a missing
``categories`` gives ``"Heat (1995). heist. A cop hunts a thief."`` and never ``"Heat (1995). . ..."``.
The literal text before the first field and after the last one is kept whenever any field is
non-empty. ``{overview}`` is an alias of ``{description}`` when the catalog has no ``overview``.

Cleaning, in order: lists are joined with ``", "``; other non-string values are converted with
``str`` (and counted); ``|``-separated categories/tags become ``", "``-separated; the text is
Unicode NFC-normalised; control characters become spaces; runs of whitespace become one space.

``content_hash`` is the hex sha256 of the UTF-8 cleaned text: the same text always gets the same
hash, whichever model embeds it.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

__all__ = [
    "TEMPLATE_FIELDS",
    "DataCoercionWarning",
    "TextStats",
    "build_item_texts",
    "content_hash",
    "render_template",
]

#: Catalog columns a template may name even when the catalog lacks them (they render as empty).
TEMPLATE_FIELDS: tuple[str, ...] = ("title", "description", "categories", "tags", "overview")
_ALIASES = {"overview": "description"}
_LIST_FIELDS = ("categories", "tags")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u2028\u2029\ufeff]")
_SPACE_RE = re.compile(r"\s+")


class DataCoercionWarning(UserWarning):
    """Catalog values were coerced (non-strings converted, duplicate ids dropped)."""


@dataclass(frozen=True)
class TextStats:
    """What :func:`build_item_texts` found.

    ``n_items``: rows out (unique item ids). ``n_empty``: items whose rendered text is empty (they
    get no vector). ``n_missing_fields``: items with at least one template field empty or missing.
    ``n_non_string``: values that were not strings and were converted. ``n_cleaned``: texts
    changed by Unicode/control-character/whitespace cleaning. ``n_mixed_script``: texts mixing
    letters of two or more scripts (Latin and Cyrillic, say). ``n_duplicate_ids``: catalog rows
    dropped because a later row had the same ``item_id``.
    """

    n_items: int = 0
    n_empty: int = 0
    n_missing_fields: int = 0
    n_non_string: int = 0
    n_cleaned: int = 0
    n_mixed_script: int = 0
    n_duplicate_ids: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _parse_template(template: str) -> tuple[str, list[tuple[str, str]], str]:
    """Split ``template`` into (prefix, [(separator, field), ...], suffix)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"embedding template {template!r} is not a valid format string: {exc}"
        ) from None
    prefix, fields, suffix = "", [], ""
    for literal, field, spec, conv in parts:
        if field is None:  # trailing literal
            suffix = literal
            continue
        if not field or not field.isidentifier():
            raise ValueError(
                f"embedding template {template!r}: field {{{field}}} is not a column name; "
                f"expected names such as {', '.join(TEMPLATE_FIELDS)}"
            )
        if spec or conv:
            raise ValueError(
                f"embedding template {template!r}: field {{{field}}} has a format spec or "
                "conversion, which templates do not support"
            )
        if not fields:
            prefix = literal
            fields.append(("", field))
        else:
            fields.append((literal, field))
    if not fields:
        raise ValueError(f"embedding template {template!r} names no field, e.g. '{{title}}'")
    return prefix, fields, suffix


def render_template(template: str, values: dict[str, str]) -> str:
    """Render ``template`` with ``values``, dropping empty fields with their separators.

    >>> render_template("{title}. {categories}. {description}", {"title": "Heat", "description": "Cops."})
    'Heat. Cops.'
    """
    prefix, fields, suffix = _parse_template(template)
    return _render(prefix, fields, suffix, values)


def _render(prefix: str, fields: list[tuple[str, str]], suffix: str, values: dict[str, str]) -> str:
    out: list[str] = []
    for sep, field in fields:
        value = values.get(field) or ""
        if not value:
            continue
        if out:
            out.append(sep)
        out.append(value)
    if not out:
        return ""
    return (prefix + "".join(out) + suffix).strip()


def content_hash(text: str) -> str:
    """Hex sha256 of the UTF-8 text: the key that decides whether a vector can be reused."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


def _scripts(text: str) -> set[str]:
    """Scripts of the letters in ``text`` (first word of each letter's Unicode name)."""
    found: set[str] = set()
    for ch in text:
        if ch.isascii():
            if ch.isalpha():
                found.add("LATIN")
            continue
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            if name:
                found.add(name.split(" ", 1)[0])
    return found


def _value_to_str(value: Any, field: str) -> tuple[str, bool]:
    """(string value, whether it had to be converted from a non-string)."""
    if value is None:
        return "", False
    if isinstance(value, str):
        return value, False
    if isinstance(value, float) and value != value:  # NaN
        return "", True
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace"), True
    if isinstance(value, Iterable):
        items = [_value_to_str(v, field)[0] for v in value]
        return ", ".join(s for s in items if s.strip()), True
    return str(value), True


def _field_values(catalog: pl.DataFrame, field: str) -> tuple[list[str], int]:
    """The strings of ``field`` for every row, and how many values were not strings."""
    column = field if field in catalog.columns else _ALIASES.get(field)
    if column is None or column not in catalog.columns:
        return [""] * catalog.height, 0
    series = catalog[column]
    if series.dtype == pl.String:
        values = ["" if v is None else v for v in series.to_list()]
        converted = 0
    else:
        pairs = [_value_to_str(v, field) for v in series.to_list()]
        values = [s for s, _ in pairs]
        converted = sum(c for _, c in pairs)
    if field in _LIST_FIELDS:
        values = [
            ", ".join(p.strip() for p in v.split("|") if p.strip()) if "|" in v else v
            for v in values
        ]
    return values, converted


def build_item_texts(catalog: pl.DataFrame, template: str) -> tuple[pl.DataFrame, TextStats]:
    """One cleaned text per item: ``(item_id, text, content_hash)`` sorted by ``item_id``, and stats.

    ``catalog`` needs an ``item_id`` column (non-null); the fields the template names are read
    from same-named columns (missing columns render as empty; unknown names that are not columns
    are an error). When an ``item_id`` repeats, its last row wins and a
    :class:`DataCoercionWarning` says how many rows were dropped. Empty texts are kept with
    ``text == ""`` so callers can count them.
    """
    if "item_id" not in catalog.columns:
        raise ValueError(f"catalog has no 'item_id' column; columns are {catalog.columns}")
    prefix, fields, suffix = _parse_template(template)
    for _, field in fields:
        if field not in catalog.columns and field not in TEMPLATE_FIELDS:
            raise ValueError(
                f"embedding template {template!r} names {{{field}}}, which is not a catalog "
                f"column; columns are {catalog.columns}"
            )
    ids = catalog["item_id"]
    if ids.dtype != pl.String:
        ids = ids.cast(pl.String)
    n_null = ids.null_count()
    if n_null:
        row = int(ids.is_null().arg_max() or 0)
        raise ValueError(
            f"catalog row {row}: item_id is null ({n_null} rows in all); every item needs an id"
        )
    catalog = catalog.with_columns(ids.alias("item_id"))
    n_dupes = catalog.height - ids.n_unique()
    if n_dupes:
        warnings.warn(
            f"catalog has {n_dupes} rows whose item_id repeats a later row; kept the last row of "
            "each item",
            DataCoercionWarning,
            stacklevel=2,
        )
        catalog = catalog.unique(subset="item_id", keep="last", maintain_order=True)

    names = list(dict.fromkeys(f for _, f in fields))
    columns: dict[str, list[str]] = {}
    n_non_string = 0
    for name in names:
        columns[name], converted = _field_values(catalog, name)
        n_non_string += converted

    texts: list[str] = []
    n_missing = n_cleaned = n_mixed = 0
    for i in range(catalog.height):
        values = {name: columns[name][i] for name in names}
        raw = _render(prefix, fields, suffix, {k: v.strip() for k, v in values.items()})
        if any(not v.strip() for v in values.values()):
            n_missing += 1
        text = _clean(raw)
        if text != raw:
            n_cleaned += 1
        if not text.isascii() and len(_scripts(text)) > 1:
            n_mixed += 1
        texts.append(text)

    out = (
        pl.DataFrame(
            {"item_id": catalog["item_id"], "text": pl.Series(texts, dtype=pl.String)},
        )
        .with_columns(pl.Series("content_hash", [content_hash(t) for t in texts], dtype=pl.String))
        .sort("item_id")
    )
    stats = TextStats(
        n_items=out.height,
        n_empty=sum(1 for t in texts if not t),
        n_missing_fields=n_missing,
        n_non_string=n_non_string,
        n_cleaned=n_cleaned,
        n_mixed_script=n_mixed,
        n_duplicate_ids=n_dupes,
    )
    return out, stats
