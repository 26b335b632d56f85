"""A whole nightly at scale: cold and warm nights on 1M, 3M and 10M synthetic events.

For each size (``--sizes 1,3,10``, millions of events) a synthetic landing zone is generated once
into ``benchmarks/_cache/nightly_<N>M/`` (gitignored) with the generator's own formats and dirt:
``DAYS`` days, about ``USERS_PER_M`` users and ``ITEMS_PER_M`` items per million events (the 10M
landing: ~203,000 users x 20,000 items). Then, in a fresh temporary warehouse:

* **cold night** (run date = the landing's last day but one): everything is ingested, cleaned,
  embedded, tuned (``tune_calls`` per candidate), fit, gated and scored;
* **warm night** (run date = the last day, one new day landed): only that day is ingested and
  cleaned, unchanged item embeddings and the stored tuning (younger than ``tune_max_age_days``)
  are reused, the challenger is refit, gated and scored.

Each night runs in its own fresh process (``python -m``-style worker of this file) so that its
figures include what a ``recsys run`` pays (imports, model loads) and nothing left warm by an
earlier night. Per step the worker prints wall seconds and **peak RSS sampled by a psutil thread
every 20 ms during that step** (the process's resident set, so a step's figure includes what the
process already held; the night's peak is the process's ``ru_maxrss``).

The candidates are ``popularity`` and whichever of EASE or ALS fits the catalogue: EASE keeps a
dense ``n_items x n_items`` matrix (8 n^2 bytes, an n^3 inversion per fit), so above
``EASE_MAX_ITEMS`` items the candidate is ALS.

Two ways of running the same nights, side by side in one run:

* ``direct``: the core step functions (``recsys_core.pipeline.*_step``) called in order, as
  ``flows.nightly.run_pipeline`` wires them, with no Prefect at all;
* ``flow`` (``--prefect``, always on the sizes in ``--prefect-sizes``): the ``recsys-nightly``
  Prefect flow. In local mode (no ``PREFECT_API_URL``) Prefect starts its own API in each
  process: the worker first runs an empty flow and reports that as ``api_start`` (it includes
  the start of the local API server and the first flow run's set-up), then the nightly; the
  ratio flow / direct excludes ``api_start``. With ``PREFECT_API_URL`` set the running API is
  used and nothing starts.

Printed: a table per size and night (wall s and peak RSS per step), warm / cold, the growth of
each night's cost against the smallest size, and Prefect's overhead ratio. Benchmarks print
ratios measured in one run; they are not tests.

    python benchmarks/bench_nightly.py                      # 1M: cold + warm, direct + flow
    python benchmarks/bench_nightly.py --sizes 1,3,10       # the 10M size too (~8 GiB budget)
    python benchmarks/bench_nightly.py --sizes 0.05 --prefect-sizes 0.05   # the demo size
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(__file__).resolve().parent / "_cache"
END_DATE = dt.date(2026, 1, 31)
DAYS = 15
#: The generator draws ~3.28 events per user per day (98.4 over 30 days, measured).
EVENTS_PER_USER_DAY = 98.4 / 30
USERS_PER_M = math.ceil(1e6 / (EVENTS_PER_USER_DAY * DAYS))  # 20,326
ITEMS_PER_M = 2_000
EASE_MAX_ITEMS = 5_000
#: The demo's landing (``recsys demo``): 400 users x 200 items x 30 days.
DEMO = {"users": 400, "items": 200, "days": 30}
STEPS = ("ingest", "clean", "embed", "train", "evaluate", "score", "report")


# ---- landing --------------------------------------------------------------------------------------
def shape_for(size: str) -> dict[str, int]:
    if size == "demo":
        return dict(DEMO)
    m = float(size)
    return {
        "users": math.ceil(m * USERS_PER_M),
        "items": max(200, round(m * ITEMS_PER_M)),
        "days": DAYS,
    }


def landing_for(size: str, seed: int) -> tuple[Path, dict[str, Any]]:
    """The cached landing zone for ``size`` (generated on first use) and its summary."""
    from recsys_core.landing import generate_synthetic

    out = CACHE / (f"nightly_{size}" if size == "demo" else f"nightly_{float(size):g}M")
    summary_path = out / "_summary.json"
    if summary_path.is_file():
        return out, json.loads(summary_path.read_text())
    if out.exists():  # an interrupted generation: start over
        shutil.rmtree(out)
    t0 = time.perf_counter()
    summary = generate_synthetic(out, **shape_for(size), seed=seed, end_date=END_DATE)
    summary["generate_seconds"] = round(time.perf_counter() - t0, 1)
    summary_path.write_text(json.dumps(summary, indent=2))  # "_" files are skipped by ingest
    return out, summary


def model_for(items: int) -> str:
    return "ease" if items <= EASE_MAX_ITEMS else "als"


def write_config(
    path: Path,
    landing: Path,
    warehouse: Path,
    model: str,
    tune_calls: int,
    embed: bool,
    tune_max_users: int | None = None,
) -> None:
    cap = "" if tune_max_users is None else f"tune_max_users = {tune_max_users}\n"
    path.write_text(
        f'landing = "{landing}"\nwarehouse = "{warehouse}"\n\n'
        f'[train]\nmodels = ["popularity", "{model}"]\ntune_calls = {tune_calls}\n{cap}\n'
        f"[embedding]\nenabled = {str(embed).lower()}\n"
    )


# ---- the worker: one night in this process --------------------------------------------------------
class StepMeter:
    """Wall seconds, CPU seconds (the process's user + system time, all threads: what a loaded
    machine inflates least) and peak RSS (psutil, sampled every ``interval`` s) per named step."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rows: dict[str, dict[str, float]] = {}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._proc.memory_info().rss
            with self._lock:
                self._peak = max(self._peak, rss)

    def start(self) -> None:
        with self._lock:
            self._peak = self._proc.memory_info().rss
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def stop(self, name: str) -> None:
        sec = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        with self._lock:
            peak = max(self._peak, self._proc.memory_info().rss)
        row = self.rows.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_gib": 0.0})
        row["seconds"] += sec
        row["cpu_seconds"] += cpu
        row["peak_rss_gib"] = max(row["peak_rss_gib"], peak / 2**30)

    def close(self) -> None:
        self._stop.set()


def run_direct(settings: Any, day: dt.date, meter: StepMeter) -> Any:
    """The nightly's steps as ``flows.nightly.run_pipeline`` wires them, without Prefect (one
    score shard); the night's :class:`~recsys_core.results.RunSummary`."""
    from benchmarks._direct import run_night

    def timed(name: str, fn: Any, *args: Any) -> Any:
        meter.start()
        out = fn(*args)
        meter.stop(name)
        return out

    return run_night(settings, day, timed, shards=1)


def run_flow(config: Path, day: dt.date, meter: StepMeter) -> Any:
    """The ``recsys-nightly`` flow, timed as one step (``flow``) after ``import_prefect`` and
    ``api_start`` (an empty flow: the local API's start when ``PREFECT_API_URL`` is unset)."""
    from prefect import flow

    @flow(name="bench-api-start", persist_result=False)
    def _empty() -> int:
        return 0

    meter.start()
    from flows.nightly import nightly
    from flows.parameters import RunOptions

    meter.stop("import_prefect")
    meter.start()
    _empty()
    meter.stop("api_start")
    inner = _time_core_steps()
    meter.start()
    summary = nightly(run_date=day, options=RunOptions(config_path=str(config)))
    meter.stop("flow")
    inner.close()
    meter.rows["flow"]["core_seconds"] = sum(r["seconds"] for r in inner.rows.values())
    meter.rows.update({f"core:{k}": v for k, v in inner.rows.items()})
    return summary


def _time_core_steps() -> StepMeter:
    """Time the core step functions as the flow's tasks call them (``pipeline.<name>``), so that
    Prefect's own overhead is the flow's time less its steps', measured in one process."""
    from recsys_core import pipeline

    inner = StepMeter()
    names = {
        "ingest_step": "ingest",
        "clean_step": "clean",
        "embed_step": "embed",
        "train_step": "train",
        "evaluate_step": "evaluate",
        "score_shard": "score",
        "merge_scores": "score",
        "finalize_step": "report",
    }
    for attr, step in names.items():
        fn = getattr(pipeline, attr)

        def timed(*args: Any, _fn: Any = fn, _step: str = step, **kw: Any) -> Any:
            inner.start()
            try:
                return _fn(*args, **kw)
            finally:
                inner.stop(_step)

        setattr(pipeline, attr, timed)
    return inner


def worker(mode: str, config: Path, day: dt.date, out: Path, profile: Path | None) -> int:
    from flows.parameters import RunOptions
    from flows.runtime import configure_environment

    configure_environment()
    meter = StepMeter()
    t0 = time.perf_counter()
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    with warnings.catch_warnings():  # the planted dirt warns; the figures are what matters here
        warnings.simplefilter("ignore")
        if mode == "direct":
            settings = RunOptions(config_path=str(config)).settings()
            summary = run_direct(settings, day, meter)
        else:
            summary = run_flow(config, day, meter)
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    total = time.perf_counter() - t0
    meter.close()
    steps = summary.steps
    train = steps.train
    doc = {
        "mode": mode,
        "run_date": day.isoformat(),
        "steps": meter.rows,
        "total_seconds": total,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "events_cleaned": steps.clean.events.model_dump(),
        "dates_cleaned": len(steps.clean.dates_cleaned),
        "challenger": train.challenger,
        "tuning_reused": [c.reused for c in train.candidates],
        "search_users": _search_users(config, train),
        "embed": {
            k: v
            for k, v in (steps.embed.model_dump() if steps.embed else {}).items()
            if isinstance(v, int | str)
        },
        "recommendations": steps.score.rows,
    }
    out.write_text(json.dumps(doc, indent=2, default=str))
    return 0


def _search_users(config: Path, train: Any) -> dict[str, str]:
    """Per candidate: ``"<search users>/<training users>"`` from its ``best.json``."""
    from flows.parameters import RunOptions
    from recsys_core.io import Warehouse
    from recsys_core.tuning import load_best

    tuning = Warehouse(RunOptions(config_path=str(config)).settings().warehouse).tuning_dir
    out = {}
    for c in train.candidates:
        best = load_best(tuning / c.model) or {}
        out[c.model] = f"{best.get('search_users', '?')}/{best.get('train_users', '?')}"
    return out


# ---- the driver -----------------------------------------------------------------------------------
def night(mode: str, config: Path, day: dt.date, profile: Path | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--worker", mode, "--config", str(config)]
    cmd += ["--date", day.isoformat(), "--out", str(out)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise RuntimeError(f"{mode} night {day} failed (exit {proc.returncode}); see above")
    doc = json.loads(out.read_text())
    out.unlink()
    doc["process_seconds"] = wall
    return doc


def nights(
    mode: str,
    landing: Path,
    model: str,
    tune_calls: int,
    embed: bool,
    keep: bool,
    profile_dir: Path | None,
    tune_max_users: int | None = None,
    warm_night: bool = True,
) -> tuple[dict, dict]:
    from recsys_core.ingest import landing_dates

    dates = landing_dates(landing, "events")
    cold_day, warm_day = dates[-2], dates[-1]
    root = Path(tempfile.mkdtemp(prefix=f"bench_nightly_{mode}_"))
    try:
        config = root / "recsys.toml"
        write_config(config, landing, root / "warehouse", model, tune_calls, embed, tune_max_users)
        prof = (lambda n: profile_dir / f"{mode}_{n}.prof") if profile_dir else (lambda n: None)
        cold = night(mode, config, cold_day, prof("cold"))
        print(f"    {mode} cold {cold_day}: {cold['total_seconds']:.1f} s", flush=True)
        warm: dict[str, Any] = {}
        if warm_night:
            warm = night(mode, config, warm_day, prof("warm"))
            print(f"    {mode} warm {warm_day}: {warm['total_seconds']:.1f} s", flush=True)
        for a, b in ((cold, "cold"), (warm, "warm")):
            if not a:
                continue
            a["recs_sha"] = _recs_digest(root / "warehouse", a["run_date"])
            a["night"] = b
    finally:
        if keep:
            print(f"    warehouse kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return cold, warm


def _recs_digest(warehouse: Path, run_date: str) -> str:
    import hashlib

    path = warehouse / "recommendations" / f"run_date={run_date}" / "part-0.parquet"
    if not path.is_file():
        return "?"
    import polars as pl

    df = pl.read_parquet(path).select("user_id", "item_id", "rank")
    return hashlib.sha256(df.write_csv().encode()).hexdigest()[:12]


def cost(doc: dict[str, Any], key: str = "seconds") -> float:
    """A night's cost: its steps' wall (or ``cpu_seconds``) seconds, Prefect's local API start
    excluded. 0 for a night that was not run."""
    return sum(r.get(key, 0.0) for k, r in doc.get("steps", {}).items() if k not in ("api_start",))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def print_size(label: str, summary: dict, model: str, cold: dict, warm: dict) -> None:
    """Per step: wall s, CPU s and peak RSS, cold and (unless ``--cold-only``) warm."""
    print(
        f"\n== {label}: {summary['event_rows']:,} event rows, {summary['users']:,} users x "
        f"{summary['items']:,} items x {summary['days']} days; candidates popularity + {model}"
    )
    print(
        f"{'step':10s} {'cold s':>8s} {'cold CPU s':>10s} {'cold GiB':>9s} {'warm s':>8s} "
        f"{'warm CPU s':>10s} {'warm GiB':>9s}"
    )
    zero = {"seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_gib": 0.0}
    for step in cold["steps"]:
        c, w = cold["steps"][step], warm.get("steps", {}).get(step, zero)
        print(
            f"{step:10s} {c['seconds']:8.1f} {c.get('cpu_seconds', 0):10.1f} "
            f"{c['peak_rss_gib']:9.2f} {w['seconds']:8.1f} {w.get('cpu_seconds', 0):10.1f} "
            f"{w['peak_rss_gib']:9.2f}"
        )
    print(
        f"{'night':10s} {cost(cold):8.1f} {cost(cold, 'cpu_seconds'):10.1f} "
        f"{cold['peak_rss_gib']:9.2f} {cost(warm):8.1f} {cost(warm, 'cpu_seconds'):10.1f} "
        f"{warm.get('peak_rss_gib', 0):9.2f}"
    )
    if not warm:
        print(f"cold only (process wall incl. interpreter start: {cold['process_seconds']:.1f} s)")
        return
    print(
        f"warm / cold: {cost(warm) / cost(cold):.2f}x, CPU "
        f"{_ratio(cost(warm, 'cpu_seconds'), cost(cold, 'cpu_seconds'))} (process wall incl. "
        f"interpreter start: cold {cold['process_seconds']:.1f} s, warm "
        f"{warm['process_seconds']:.1f} s); "
        f"warm cleaned {warm['dates_cleaned']} date(s), tuning reused {warm['tuning_reused']}, "
        f"embed {warm['embed']}; search users (sample/training) {cold.get('search_users')}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1", help="comma-separated millions of events, or 'demo'")
    p.add_argument(
        "--prefect-sizes",
        default="demo,1",
        help="sizes also run through the Prefect flow for the overhead ratio ('' for none)",
    )
    p.add_argument("--tune-calls", type=int, default=8, help="search budget per candidate")
    p.add_argument(
        "--tune-max-users",
        type=int,
        default=None,
        help="train.tune_max_users: the search's seeded user sample (default: the config's "
        "default, 50,000; 0 = every user, the behaviour before the cap)",
    )
    p.add_argument(
        "--no-embed",
        dest="embed",
        action="store_false",
        help="skip the embedding step (EASE and ALS do not use the item vectors; the encoder "
        "runs on CPU at about 10-20 items/s on 2 cores)",
    )
    p.add_argument(
        "--flow-only",
        action="store_true",
        help="run only the flow nights of --prefect-sizes (Prefect's cost is measured inside "
        "each flow process: its wall time less its own core steps')",
    )
    p.add_argument(
        "--cold-only",
        action="store_true",
        help="run only the cold night of each size (direct mode; growth needs no warm night)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", action="store_true", help="keep the warehouses")
    p.add_argument("--profile", type=Path, help="write cProfile stats of each night here")
    p.add_argument("--worker", choices=("direct", "flow"), help=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--date", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        profile = Path(a.profile) if a.profile else None
        return worker(a.worker, a.config, dt.date.fromisoformat(a.date), a.out, profile)

    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    flow_sizes = {s.strip() for s in a.prefect_sizes.split(",") if s.strip()}
    order = ([s for s in ("demo",) if s in flow_sizes and s not in sizes]) + sizes
    if a.flow_only:
        order = [s for s in order if s in flow_sizes]
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
    print(f"PREFECT_API_URL={os.environ.get('PREFECT_API_URL') or '(unset: local mode)'}")
    results: dict[str, dict[str, Any]] = {}
    for size in order:
        landing, summary = landing_for(size, a.seed)
        model = model_for(summary["items"])
        label = "demo" if size == "demo" else f"{float(size):g}M"
        print(f"\n{label}: landing {landing} (generated in {summary.get('generate_seconds')} s)")
        res: dict[str, Any] = {"summary": summary, "model": model}
        prof = a.profile / label if a.profile else None
        if prof:
            prof.mkdir(exist_ok=True)
        common = (landing, model, a.tune_calls, a.embed, a.keep, prof, a.tune_max_users)
        if not a.flow_only:
            res["direct"] = nights("direct", *common, warm_night=not a.cold_only)
        if size in flow_sizes:
            res["flow"] = nights("flow", *common)
        results[label] = res
        if "direct" in res:
            print_size(label, summary, model, *res["direct"])
    if not a.flow_only:
        print_direct_summary(results)
    print_prefect(results)
    return 0


def print_direct_summary(results: dict[str, dict[str, Any]]) -> None:
    print("\n== summary (direct: core steps, each night in a fresh process)")
    print(
        f"{'size':6s} {'events':>11s} {'model':6s} {'cold s':>8s} {'cold CPU':>9s} {'warm s':>8s} "
        f"{'warm CPU':>9s} {'warm/cold':>9s} {'cold GiB':>9s} {'warm GiB':>9s}"
    )
    for label, r in results.items():
        c, w = r["direct"]
        print(
            f"{label:6s} {r['summary']['event_rows']:11,} {r['model']:6s} {cost(c):8.1f} "
            f"{cost(c, 'cpu_seconds'):9.1f} {cost(w):8.1f} {cost(w, 'cpu_seconds'):9.1f} "
            f"{_ratio(cost(w), cost(c)):>9s} {c['peak_rss_gib']:9.2f} "
            f"{w.get('peak_rss_gib', 0):9.2f}"
        )
    scaled = [lb for lb in results if lb != "demo"]
    if len(scaled) > 1:
        base = scaled[0]
        bc, bw = results[base]["direct"]
        for label in scaled[1:]:
            c, w = results[label]["direct"]
            ev = results[label]["summary"]["event_rows"] / results[base]["summary"]["event_rows"]
            print(
                f"growth {label} / {base} ({ev:.1f}x the events): cold wall "
                f"{_ratio(cost(c), cost(bc))}, CPU "
                f"{_ratio(cost(c, 'cpu_seconds'), cost(bc, 'cpu_seconds'))}; warm wall "
                f"{_ratio(cost(w), cost(bw))}, CPU "
                f"{_ratio(cost(w, 'cpu_seconds'), cost(bw, 'cpu_seconds'))} (goal at 10M / 1M: "
                "<= 12x; CPU time is what a loaded machine inflates least)"
            )


def print_prefect(results: dict[str, dict[str, Any]]) -> None:
    """Prefect's cost per size and night; with ``--flow-only`` the direct columns are blank."""
    flows_run = [lb for lb in results if "flow" in results[lb]]
    if flows_run:
        print("\n== Prefect's cost: the same nights through the recsys-nightly flow")
        print(
            f"{'size':6s} {'night':5s} {'direct s':>9s} {'flow s':>8s} {'flow/direct':>11s} "
            f"{'Prefect s':>9s} {'flow/own steps':>14s} {'import s':>9s} {'API start s':>11s} {'same recs':>9s}"
        )
        for label in flows_run:
            directs = results[label].get("direct") or (None, None)
            for d, f in zip(directs, results[label]["flow"], strict=True):
                flow_s = f["steps"]["flow"]["seconds"]
                print(
                    f"{label:6s} {f['night']:5s} "
                    + (f"{cost(d):9.1f} " if d else f"{'-':>9s} ")
                    + f"{flow_s:8.1f} "
                    + (f"{flow_s / cost(d):11.2f}" if d else f"{'-':>11s}")
                    + f" {f['steps']['flow']['seconds'] - f['steps']['flow']['core_seconds']:9.1f}"
                    f" {f['steps']['flow']['seconds'] / f['steps']['flow']['core_seconds']:14.2f}"
                    f" {f['steps']['import_prefect']['seconds']:9.1f}"
                    f" {f['steps']['api_start']['seconds']:11.1f}"
                    f" {str(d['recs_sha'] == f['recs_sha']) if d else '-':>9s}"
                )
        print(
            "flow s excludes the Prefect import and the local API start (columns beside it); "
            "Prefect s is the flow's time less its own core steps' time in the same process "
            "(Prefect's overhead, free of the noise between processes); the goal is flow/direct "
            "<= 1.10x at 1M."
        )


if __name__ == "__main__":
    raise SystemExit(main())
