"""Vectorised parsing and checks shared by event and item cleaning (polars expressions only).

Timestamps (:func:`add_timestamp_us`) are accepted as

* Unix seconds, integer or decimal (``1767225600``, ``1767225600.25``), exact to the microsecond;
* ISO 8601 date-times ``YYYY-MM-DD[T| ]HH:MM[:SS[.ffffff]][Z|±HH[:MM]]`` (no offset = UTC), or a
  bare date ``YYYY-MM-DD`` (midnight UTC).

Everything else (``"yesterday"``, ``2026-13-40``, a milliseconds epoch) parses to null.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

__all__ = [
    "Check",
    "add_timestamp_us",
    "id_checks",
    "quoted",
    "split_checks",
    "us_to_iso",
]

#: Latest accepted Unix second (9999-12-31T23:59:59Z); larger numbers are not seconds.
MAX_UNIX_SECONDS = 253_402_300_799
_UNIX_RE = r"^([+-]?)(\d+)(?:\.(\d*))?$"
_FAST_ISO = "%Y-%m-%dT%H:%M:%S%.f%#z"  # 2026-01-04T10:00:00[.123]Z / +01:00 / +0100 / -05
_ISO_RE = (
    r"^(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$"
)


def _frac_us(frac: pl.Expr) -> pl.Expr:
    """Fraction-of-second digits ("25", "123456789") as whole microseconds (truncated)."""
    return frac.fill_null("").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64)


#: The shapes most sources write, parsed by cheap paths first: whole Unix seconds, and
#: ``YYYY-MM-DDTHH:MM:SS`` then ``Z`` or an offset ``±HH:MM``, every field in range (polars'
#: fixed-width parser on the first 19 characters, the offset by arithmetic: about 15x faster
#: than the general ISO parse). Both give exactly what the general paths give for them.
_WHOLE_SECONDS_RE = r"^[0-9]{1,12}$"  # ASCII digits (\d takes any script's)
_PLAIN_RE = (
    r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)


def add_timestamp_us(df: pl.DataFrame, src: str, out: str) -> pl.DataFrame:
    """Add ``out``: microseconds since the Unix epoch (UTC) of string column ``src``, null if
    not parseable. The common shapes first over every row (whole Unix seconds, plain UTC
    date-times with ``Z`` or a ``±HH:MM`` offset), then only over the rows left: Unix seconds,
    the common ISO form (one strptime), then a regex for the other ISO forms."""
    # each step a column of its own, so that no part is computed twice (an expression used in
    # several places is evaluated in each)
    s, p = pl.col("_ts_s"), pl.col("_ts_p")
    df = df.with_columns(pl.col(src).str.strip_chars().alias("_ts_s")).with_columns(
        pl.when(s.str.contains(_PLAIN_RE)).then(s).alias("_ts_p")
    )
    whole = pl.when(s.str.contains(_WHOLE_SECONDS_RE)).then(s).cast(pl.Int64, strict=False)
    offset_min = pl.when(p.str.len_bytes() == 25).then(
        pl.when(p.str.slice(19, 1) == "-").then(-1).otherwise(1)
        * (p.str.slice(20, 2).cast(pl.Int64) * 60 + p.str.slice(23, 2).cast(pl.Int64))
    )
    plain = (
        p.str.slice(0, 19)
        .str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", strict=False, cache=False)
        .dt.epoch("us")
        - offset_min.fill_null(0) * 60_000_000
    )
    quick = pl.coalesce(pl.when(whole <= MAX_UNIX_SECONDS).then(whole * 1_000_000), plain)
    df = df.with_columns(quick.alias(out)).drop("_ts_p")
    rest = (
        df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_i"), s.alias("_s"), out)
        .filter(pl.col(out).is_null() & pl.col("_s").is_not_null())
        .with_columns(_unix_or_common_iso_us(pl.col("_s")).alias(out))
        .with_columns(pl.coalesce(out, _other_iso_us(pl.when(pl.col(out).is_null()).then("_s"))))
        .filter(pl.col(out).is_not_null())
    )
    df = df.drop("_ts_s")
    if not rest.height:
        return df
    return df.with_columns(df.get_column(out).scatter(rest.get_column("_i"), rest.get_column(out)))


def _unix_or_common_iso_us(s: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch of stripped strings ``s``: Unix seconds (integer or
    decimal), else the common ISO form (one strptime)."""
    u = s.str.extract_groups(_UNIX_RE)
    whole = u.struct.field("2").cast(pl.Int64, strict=False)
    sign = pl.when(u.struct.field("1") == "-").then(-1).otherwise(1)
    unix = pl.when(whole <= MAX_UNIX_SECONDS).then(
        sign * (whole * 1_000_000 + _frac_us(u.struct.field("3")))
    )
    fast = (
        pl.when(u.struct.field("2").is_null())
        .then(s)
        .str.to_datetime(_FAST_ISO, time_unit="us", strict=False)
        .dt.epoch("us")
    )
    return pl.coalesce(unix, fast)


def _other_iso_us(s: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch of the other ISO forms (a regex)."""
    g = s.str.extract_groups(_ISO_RE)
    naive = pl.concat_str(
        [
            g.struct.field("1"),
            pl.lit(" "),
            g.struct.field("2").fill_null("00"),
            pl.lit(":"),
            g.struct.field("3").fill_null("00"),
            pl.lit(":"),
            g.struct.field("4").fill_null("00"),
        ]
    ).str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
    offset_min = pl.when(g.struct.field("7").is_not_null()).then(
        pl.when(g.struct.field("7") == "-").then(-1).otherwise(1)
        * (
            g.struct.field("8").cast(pl.Int64) * 60
            + g.struct.field("9").fill_null("0").cast(pl.Int64)
        )
    )
    return (
        naive.dt.epoch("us") + _frac_us(g.struct.field("5")) - offset_min.fill_null(0) * 60_000_000
    )


def us_to_iso(us: pl.Expr) -> pl.Expr:
    """Microseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    return pl.from_epoch(us, time_unit="us").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")


def quoted(col: pl.Expr, limit: int = 60) -> pl.Expr:
    """A value for a message: quoted, control characters shown as '?', cut at ``limit`` chars."""
    text = col.str.replace_all(r"\p{Cc}", "?")
    cut = pl.when(text.str.len_chars() > limit).then(
        pl.concat_str([text.str.slice(0, limit), pl.lit("...")])
    )
    return pl.concat_str([pl.lit("'"), cut.otherwise(text), pl.lit("'")])


@dataclass(frozen=True)
class Check:
    """One validation rule: rows where ``failed`` is true get ``category`` and ``message``."""

    category: str
    failed: pl.Expr
    message: pl.Expr


#: Start of an id the reader marked as a JSON object/array/boolean (see ``_read.BAD_ID_MARK``).
_MARKED = r"^\x00([a-z]+)\x00"


def id_checks(name: str, col: pl.Expr, max_len: int, prefix: str = "") -> list[Check]:
    """Checks of a stripped id column: present, a string or number (not a JSON object, array or
    boolean), not too long, no control characters."""
    marked = col.str.contains(_MARKED)
    return [
        Check(f"{prefix}missing_{name}", col.is_null() | (col == ""), pl.lit(f"{name} is missing")),
        Check(
            f"{prefix}bad_{name}",
            marked,
            pl.concat_str(
                [
                    pl.lit(f"{name} is a JSON "),
                    col.str.extract(_MARKED, 1),
                    pl.lit(" "),
                    quoted(col.str.replace(_MARKED, "")),
                    pl.lit(", expected a string or a number"),
                ]
            ),
        ),
        Check(
            f"{prefix}bad_{name}",
            col.str.len_chars() > max_len,
            pl.format(
                "{} is {} characters long, more than max_id_length {}",
                pl.lit(name),
                col.str.len_chars(),
                pl.lit(max_len),
            ),
        ),
        Check(
            f"{prefix}bad_{name}",
            col.str.contains(r"\p{Cc}") & ~marked,
            pl.concat_str(
                [pl.lit(f"{name} "), quoted(col), pl.lit(" contains control characters")]
            ),
        ),
    ]


def split_checks(
    df: pl.DataFrame, checks: list[Check], suspect: pl.Expr | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid rows, invalid rows)``, each in ``df``'s order; invalid rows get
    ``reason_category`` (the first failed check) and ``reason`` (every failed check's message,
    joined by "; ").

    ``suspect``, if given, must be true (or null) on every row that fails a check: the checks are
    then evaluated on those rows only, and the other rows are valid without them (a few cheap
    conditions over a million rows instead of every check). Messages are built for the invalid
    rows only, so validating a million rows stays cheap.
    """
    fails = pl.any_horizontal([c.failed.fill_null(False) for c in checks])
    if suspect is None:
        invalid = df.select(fails).to_series()
    else:
        maybe = df.select(suspect.fill_null(True)).to_series()
        invalid = maybe.clear(df.height).fill_null(False)
        if maybe.any():
            invalid = invalid.scatter(maybe.arg_true(), df.filter(maybe).select(fails).to_series())
    good = df.filter(~invalid)
    flags = [f"_fail{i}" for i in range(len(checks))]
    bad = (
        df.filter(invalid)
        .with_columns(
            [c.failed.fill_null(False).alias(f) for c, f in zip(checks, flags, strict=True)]
        )
        .with_columns(
            pl.coalesce(
                [pl.when(f).then(pl.lit(c.category)) for c, f in zip(checks, flags, strict=True)]
            )
            .cast(pl.String)
            .alias("reason_category"),
            pl.concat_str(
                [pl.when(f).then(c.message) for c, f in zip(checks, flags, strict=True)],
                separator="; ",
                ignore_nulls=True,
            ).alias("reason"),
        )
        .drop(*flags)
    )
    return good, bad
