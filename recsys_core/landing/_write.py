"""Atomic writers of landing files (CSV, JSON lines, Parquet)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.io import atomic_path

__all__ = ["write_frame", "write_json_lines", "write_text_lines"]


def write_frame(df: pl.DataFrame, path: Path, fmt: str) -> Path:
    """Write ``df`` to ``path`` as ``csv``, ``jsonl`` or ``parquet`` (zstd), atomically."""
    with atomic_path(path) as tmp:
        if fmt == "csv":
            df.write_csv(tmp)
        elif fmt == "jsonl":
            df.write_ndjson(tmp)
        elif fmt == "parquet":
            df.write_parquet(tmp, compression="zstd", statistics=True)
        else:
            raise ValueError(f"landing format {fmt!r} is not one of csv, jsonl, parquet")
    return path


def write_json_lines(records: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """One JSON object per line (keys in the order given; mixed value types allowed)."""
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_text_lines(lines: Iterable[str], path: Path) -> Path:
    """Lines of text, each ended by a newline, as UTF-8."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
