"""The ``recsys`` command line. It starts flows (and a few read-only core lookups).

Exit status is 0 only when the command completed; otherwise the reason goes to stderr and the
status is 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.parameters import RunOptions
from flows.runtime import (
    as_date,
    configure_environment,
    explain_startup_failure,
    with_task_runner,
)
from recsys_core.results import EmbedResult, RunSummary

if TYPE_CHECKING:
    from recsys_core.config import Settings

__all__ = ["main"]


# ---- argument groups ------------------------------------------------------------------------------
def _doc(field: str) -> str:
    """The help of a run flag: the description of its :class:`RunOptions` field."""
    return RunOptions.model_fields[field].description or field


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=_doc("config_path"))
    p.add_argument("--landing", help=_doc("landing"))
    p.add_argument("--warehouse", help=_doc("warehouse"))


def _add_run_options(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--force", action="store_true", help=_doc("force"))
    p.add_argument("--k", type=int, help=_doc("k"))
    p.add_argument("--models", help="comma-separated candidate models, e.g. popularity,ease")
    p.add_argument("--tune-calls", type=int, help=_doc("tune_calls"))
    p.add_argument("--task-runner", help=_doc("task_runner"))
    p.add_argument("--sql-url", help="SQLAlchemy URL of the serving database (also RECSYS_SQL_URL)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="recsys", description="Nightly batch recommendations on Prefect."
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the nightly pipeline for one date")
    p.add_argument("--date", help="run date YYYY-MM-DD (default: yesterday, UTC)")
    _add_run_options(p)

    p = sub.add_parser("backfill", help="run every date in a range, skipping complete ones")
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    _add_run_options(p)

    p = sub.add_parser("demo", help="synthetic landing data + one nightly run, with a summary")
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--days", type=int, default=21)
    p.add_argument("--seed", type=int, default=7)
    _add_run_options(p)

    land = sub.add_parser("landing", help="write landing-zone data").add_subparsers(
        dest="source", required=True
    )
    p = land.add_parser("synthetic", help="deterministic synthetic events and catalog")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end-date", help="last partition date (default 2026-01-31)")
    p = land.add_parser("movielens", help="replay MovieLens latest-small into daily partitions")
    p.add_argument("--data", required=True, help="folder with ratings.csv, movies.csv, tags.csv")
    p.add_argument("--overviews", help="ml-latest-small_tmdb_overviews.csv for item descriptions")
    p.add_argument("--out", required=True)
    p.add_argument("--since", help="first date to write")
    p.add_argument("--until", help="last date to write")

    p = sub.add_parser(
        "simulate",
        help="closed-loop A/B simulation: users react to last night's lists, the nightly runs daily",
    )
    p.add_argument("--out", required=True, help="empty folder for landing/ and warehouse/")
    p.add_argument("--days", type=int, default=10, help="simulated days of feedback")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--arms", default="control=popularity,treatment=ease", help="NAME=MODEL,...")
    p.add_argument("--shares", help="traffic shares in arm order, e.g. 0.5,0.5 (default equal)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tune-calls", type=int, default=3, help="search budget per model")

    p = sub.add_parser("embed", help="embed the catalog as of a date (incremental)")
    p.add_argument("--date", help="catalog date (default: yesterday)")
    _add_common(p)

    p = sub.add_parser("similar", help="nearest items by text embedding")
    p.add_argument("item_id")
    p.add_argument("-k", type=int, default=10)
    _add_common(p)

    p = sub.add_parser("models", help="list registered models and the champion")
    _add_common(p)
    p = sub.add_parser("promote", help="make a registered model the champion")
    p.add_argument("model_id")
    p.add_argument("--reason", default="promoted by hand")
    _add_common(p)
    p = sub.add_parser("rollback", help="return to the previous champion")
    _add_common(p)

    p = sub.add_parser(
        "serve",
        help="serve the deployments (nightly cron, manual, backfill); needs PREFECT_API_URL",
    )
    _add_common(p)
    p.add_argument("--cron", default="0 2 * * *", help="nightly schedule, UTC")
    p.add_argument("--limit", type=int, help="max concurrent runs in this process (>= 3)")
    p.add_argument(
        "--reports-port",
        type=int,
        default=4201,
        help="serve the local warehouse's reports/ on this port so the UI's report links open "
        "(0: do not serve them)",
    )
    p = sub.add_parser("deploy", help="register the deployments on a work pool")
    p.add_argument(
        "--pool", required=True, help="work pool name (`prefect work-pool create NAME` first)"
    )
    p.add_argument("--cron", default="0 2 * * *", help="nightly schedule, UTC")
    p.add_argument(
        "--image",
        help="container image with this project installed, for a Docker, Kubernetes or ECS pool "
        "(used as it is: nothing is built or pushed)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable of every flow run, e.g. AWS_REGION=eu-west-1 (repeatable); "
        "keep secrets in the pool's job template or a role",
    )
    _add_common(p)

    p = sub.add_parser(
        "experiment", help="tune, fit and evaluate models on explicit train/test files"
    )
    p.add_argument("--train", required=True, help="train file (.csv, .tsv or .parquet)")
    p.add_argument("--test", required=True, help="test file, read only after all tuning")
    p.add_argument("--items", help="catalog file; a 'vector' column feeds the hybrid")
    p.add_argument("--models", default="popularity,itemknn,ease,rp3beta,als")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--tune-calls", default="20", help="search budget: 20, or per model: 20,ease=30,als=12"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--validation",
        choices=["per-user", "per-item", "temporal"],
        default="per-user",
        help="how validation is carved from train: each user's pairs, each item's pairs, or "
        "the newest events (default per-user)",
    )
    p.add_argument(
        "--valid-fraction", type=float, default=0.2, help="share of train held out (default 0.2)"
    )
    p.add_argument("--out", required=True)
    return ap


# ---- commands -------------------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> RunOptions:
    """The run options given by the flags (commands without run flags: config and paths only)."""
    models = getattr(args, "models", None)
    return RunOptions(
        force=getattr(args, "force", False),
        k=getattr(args, "k", None),
        models=models.split(",") if models else None,
        tune_calls=getattr(args, "tune_calls", None),
        config_path=args.config,
        landing=args.landing,
        warehouse=args.warehouse,
        task_runner=getattr(args, "task_runner", None),
    )


def _settings(args: argparse.Namespace) -> Settings:
    import os

    if getattr(args, "sql_url", None):
        # the flows resolve their settings again (also in Dask workers): pass it the same way as
        # RECSYS_SQL_URL, never as a flow parameter, so the password stays out of the Prefect API
        os.environ["RECSYS_SQL_URL"] = args.sql_url
    return _options(args).settings(sql_url=getattr(args, "sql_url", None))


def _flow_options(args: argparse.Namespace, settings: Settings) -> RunOptions:
    """The flow's options: the flags, landing and warehouse as ``settings`` resolved them."""
    return _options(args).located(settings)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.nightly import nightly

    settings = _settings(args)
    day = as_date(args.date)
    started = time.perf_counter()
    options = _flow_options(args, settings)
    summary = with_task_runner(nightly, settings.runner)(run_date=day, options=options)
    _print_summary(settings, day, summary, time.perf_counter() - started)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from flows.nightly import backfill

    options = _flow_options(args, _settings(args))
    out = backfill(start=as_date(args.start), end=as_date(args.end), options=options)
    print(
        f"backfill {args.start}..{args.end}: completed {out['completed']}, skipped {out['skipped']}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.nightly import nightly
    from recsys_core.ingest import landing_dates
    from recsys_core.landing import generate_synthetic

    settings = _settings(args)
    if not landing_dates(settings.landing, "events"):
        print(
            f"writing synthetic landing data to {settings.landing} "
            f"({args.users} users, {args.items} items, {args.days} days, seed {args.seed})"
        )
        generate_synthetic(
            settings.landing, users=args.users, items=args.items, days=args.days, seed=args.seed
        )
    day = landing_dates(settings.landing, "events")[-1]
    started = time.perf_counter()
    options = _flow_options(args, settings)
    summary = with_task_runner(nightly, settings.runner)(run_date=day, options=options)
    _print_summary(settings, day, summary, time.perf_counter() - started)
    return 0


def _print_summary(settings, day, summary: RunSummary, seconds: float) -> None:
    from recsys_core.io import Warehouse

    wh = Warehouse(settings.warehouse)
    steps = summary.steps
    clean, train, ev = steps.clean, steps.train, steps.evaluate
    d = ev.decision
    cm = ev.challenger_metrics.metrics if ev.challenger_metrics else {}
    lines = [
        f"recsys nightly {day} completed in {seconds:.1f}s",
        f"  clean      {len(clean.dates_cleaned)} date(s) cleaned; "
        f"events {clean.events.model_dump()}",
        f"  embed      {_short(steps.embed)}",
        "  candidates "
        + ", ".join(
            f"{c.model} {settings.train.metric}@{settings.k}={c.validation_score:.4f}"
            + (" (reused params)" if c.reused else "")
            for c in train.candidates
        )
        + " (validation)",
        f"  train      challenger {train.challenger} params={train.params}",
        "  evaluate   "
        + ", ".join(
            f"{m}@{settings.k}={cm[m]:.4f}"
            for m in ("precision", "recall", "ndcg", "map")
            if m in cm
        ),
        f"  decision   {'PROMOTED' if d.promote else 'KEPT CHAMPION'}: {d.reason}",
        f"  score      {steps.score.rows} recommendations for {steps.score.users} users "
        f"by {steps.score.model_id}",
        "outputs:",
        f"  recommendations  {wh.recommendations(day)}",
        f"  report           {summary.report}",
        f"  manifest         {wh.manifest(day)}",
        f"  quarantine       {wh.quarantine(day)}",
        f"  models           {wh.models_dir}",
    ]
    for label, paths in (
        ("late files", steps.ingest.late),
        ("unrecognised", steps.ingest.unrecognised),
    ):
        if paths:  # named, so that nothing is picked up or skipped without a word
            lines.insert(2, f"  {label:<10} {', '.join(paths)}")
    print("\n".join(lines))


def _short(embed: EmbedResult | None) -> str:
    d = embed.model_dump() if embed else {}
    keys = ("model_id", "n_items", "n_embedded", "n_reused", "n_truncated", "seconds", "skipped")
    return ", ".join(f"{k}={d[k]}" for k in keys if k in d)


def cmd_landing(args: argparse.Namespace) -> int:
    if args.source == "synthetic":
        from recsys_core.landing import generate_synthetic

        kwargs: dict[str, Any] = {}
        if args.end_date:
            kwargs["end_date"] = as_date(args.end_date)
        out = generate_synthetic(
            Path(args.out),
            users=args.users,
            items=args.items,
            days=args.days,
            seed=args.seed,
            **kwargs,
        )
    else:
        from recsys_core.landing import replay_movielens

        out = replay_movielens(
            Path(args.data),
            Path(args.out),
            overviews=Path(args.overviews) if args.overviews else None,
            since=as_date(args.since) if args.since else None,
            until=as_date(args.until) if args.until else None,
        )
    print(json.dumps(out, indent=2, default=str))
    return 0


def _parse_arms(text: str) -> dict[str, str]:
    arms: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, model = part.partition("=")
        if not sep or not name or not model:
            raise ValueError(f"--arms {text!r}: {part!r} is not NAME=MODEL")
        if name in arms:
            raise ValueError(f"--arms {text!r}: arm {name!r} given twice")
        arms[name.strip()] = model.strip()
    return arms


def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys_core.abtest import simulate

    arms = _parse_arms(args.arms)
    shares = None
    if args.shares:
        values = [float(v) for v in args.shares.split(",")]
        if len(values) != len(arms):
            raise ValueError(f"--shares {args.shares!r}: {len(values)} values for {len(arms)} arms")
        shares = dict(zip(arms, values, strict=True))
    out = simulate(
        Path(args.out),
        days=args.days,
        arms=arms,
        users=args.users,
        items=args.items,
        seed=args.seed,
        shares=shares,
        tune_calls=args.tune_calls,
    )
    print(format_simulation(out))
    return 0


def format_simulation(out: dict[str, Any]) -> str:
    """The read-out of a simulation as text (also shown in the README)."""
    r = out["readout"]
    lines = [
        f"A/B read-out of {r.experiment} as of {r.as_of} "
        f"({r.nights_with_feedback} nights with feedback, unit = user):"
    ]
    for a in r.arms:
        ci = a.ci or (0.0, 0.0)
        rate = "-" if a.hit_rate is None else f"{a.hit_rate:.3f}"
        lines.append(
            f"  {a.name:<10} {a.model:<11} users {a.users:>5}  hit rate {rate} "
            f"(95% {ci[0]:.3f} to {ci[1]:.3f})"
        )
    if r.difference is not None and r.ci is not None and r.p_value is not None:
        lines.append(
            f"  {r.comparison}: {r.difference:+.3f} (95% interval {r.ci[0]:+.3f} to "
            f"{r.ci[1]:+.3f}), p = {r.p_value:.2g}"
        )
    lines.append(f"  sample-ratio check p = {r.srm_p_value:.3f}{'  MISMATCH' if r.srm else ''}")
    lines.append(f"  decision: {r.decision}")
    off = out["offline_validation"]
    if off:
        lines.append(
            f"offline ({out['metric']}@10 on validation): "
            + " > ".join(f"{m} {v:.4f}" for m, v in sorted(off.items(), key=lambda kv: -kv[1]))
        )
    if out.get("orderings_agree") is not None:
        lines.append(
            f"offline and online orderings agree: {'yes' if out['orderings_agree'] else 'NO'}"
        )
    lines.append(
        "planted truth, share of recommendations the user likes: "
        + ", ".join(f"{a} {v:.2f}" for a, v in out["liked_share_of_recommendations"].items())
    )
    lines.append(f"read-out {r.path}")
    if out.get("report"):
        lines.append(f"report   {out['report']}")
    lines.append(f"({out['seconds']:.0f} s)")
    return "\n".join(lines)


def cmd_embed(args: argparse.Namespace) -> int:
    from recsys_core.pipeline import embed_step

    settings = _settings(args)
    out = embed_step(settings, as_date(args.date), log=print)
    print(json.dumps(out.model_dump(), indent=2, default=str))
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from recsys_core.embeddings import similar_items
    from recsys_core.ingest import load_catalog
    from recsys_core.io import Warehouse

    settings = _settings(args)
    wh = Warehouse(settings.warehouse)
    dates = wh.clean_dates("items")
    catalog = load_catalog(wh, as_of=dates[-1]) if dates else None
    res = similar_items(wh.item_embeddings, args.item_id, args.k, catalog=catalog)
    with _wide():
        print(res)
    return 0


def _wide():
    import polars as pl

    return pl.Config(tbl_rows=100, fmt_str_lengths=80, tbl_width_chars=160)


def cmd_models(args: argparse.Namespace) -> int:
    from recsys_core.io import Warehouse
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(Warehouse(_settings(args).warehouse).models_dir)
    champ = reg.champion()
    for e in reg.list():
        mark = "*" if champ and e["model_id"] == champ["model_id"] else " "
        val = json.dumps(e.get("metrics", {}), default=str)
        print(f"{mark} {e['model_id']:<40} {e['name']:<10} run_date={e.get('run_date')} {val}")
    if not champ:
        print("(no champion yet)")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from recsys_core.io import Warehouse
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(Warehouse(_settings(args).warehouse).models_dir)
    reg.promote(args.model_id, args.reason)
    print(f"champion is now {args.model_id}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys_core.io import Warehouse
    from recsys_core.registry import ModelRegistry

    reg = ModelRegistry(Warehouse(_settings(args).warehouse).models_dir)
    entry = reg.rollback()
    print(f"champion is now {entry['model_id'] if isinstance(entry, dict) else entry}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from recsys_core.experiment import ExperimentConfig, parse_tune_calls, run_experiment

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    config = ExperimentConfig(
        models=models,
        k=args.k,
        tune_calls=parse_tune_calls(args.tune_calls, models),
        seed=args.seed,
        validation=args.validation,
        valid_fraction=args.valid_fraction,
    )
    out = run_experiment(
        Path(args.train),
        Path(args.test),
        Path(args.out),
        config,
        items_path=Path(args.items) if args.items else None,
    )
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from deployments.serve import serve_all

    serve_all(
        _options(args),
        cron=args.cron,
        limit=args.limit,
        reports_port=args.reports_port,
    )
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from deployments.serve import deploy_all

    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--env {item!r}: expected NAME=VALUE, e.g. AWS_REGION=eu-west-1")
        env[name.strip()] = value
    ids = deploy_all(args.pool, _options(args), cron=args.cron, image=args.image, env=env)
    print("\n".join(str(i) for i in ids))
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "deploy": cmd_deploy,
    "run": cmd_run,
    "backfill": cmd_backfill,
    "demo": cmd_demo,
    "landing": cmd_landing,
    "simulate": cmd_simulate,
    "embed": cmd_embed,
    "similar": cmd_similar,
    "models": cmd_models,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "experiment": cmd_experiment,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_environment()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the reason goes to stderr, the status says it failed
        why = explain_startup_failure(exc) or f"{type(exc).__name__}: {exc}"
        print(f"recsys {args.command}: failed: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
