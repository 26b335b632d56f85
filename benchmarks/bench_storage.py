"""Storage benchmark: the nightly on local disk against the same on an S3-compatible server, and a
backfill of 8 dates on the thread runner against Dask with 2 worker processes.

Same synthetic landing for every phase, same process, one Prefect test harness (its start-up is
not timed). The S3 server is ``$AWS_ENDPOINT_URL`` / ``$RECSYS_TEST_S3_ENDPOINT`` if set, else a
``moto_server`` started here on 127.0.0.1 (an in-memory Python server: a real S3 endpoint has more
latency per request and more bandwidth).

1. nightly, local: landing and warehouse in a temporary folder; best of ``--repeats`` fresh runs
   (after one untimed run that pays the imports).
2. nightly, S3: landing and warehouse under ``s3://<new bucket>/``; best of ``--repeats``.
   Printed: seconds of each and the ratio S3 / local (target: at most 1.5), for the cold night
   (``--days`` dates to catch up) and for the warm night after it on the same warehouse (one new
   date; the process's object cache emptied first, as on a fresh worker), and the CPU seconds
   of this process and of the S3 server it started (steadier than wall time on a shared
   machine); each S3 night's requests by operation, and their latencies summed by operation.
3. with ``--steps``: where the S3 night's extra time goes. The same cold and warm nights through
   the core step functions called directly (no Prefect, as ``bench_nightly``'s direct mode), on
   local disk and on S3, ``--repeats`` times: per step the median wall seconds of each, the
   extra CPU seconds of this process and the S3 server's CPU seconds on S3, and the requests.
4. backfill of 8 dates (a fresh S3 warehouse each) with the thread runner, then with a 2-worker
   Dask ``LocalCluster`` (processes, one for the whole backfill): seconds and the ratio Dask /
   threads (on 2 cores Dask cannot win: it adds serialisation and a second copy of the model). The recommendations
   of every phase are checked equal.

    python benchmarks/bench_storage.py                 # ~1,500 users x 400 items x 20 days
    python benchmarks/bench_storage.py --users 5000 --repeats 1
    python benchmarks/bench_storage.py --no-backfill   # the nightly only (each S3 night prints its requests)
    python benchmarks/bench_storage.py --no-backfill --steps --repeats 3   # + the per-step table
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

END = dt.date(2026, 1, 31)
WARM = END + dt.timedelta(days=1)
CONFIG = """
landing = "{landing}"
warehouse = "{warehouse}"
k = 10
seed = 7
[train]
models = ["popularity", "ease"]
tune_calls = 3
tune_initial_points = 2
validation_days = 1
[evaluation]
holdout_days = 1
bootstrap_samples = 100
[embedding]
enabled = false
[scoring]
shards = {shards}
[runner]
retries = 0
dask_workers = 2
"""


def s3_endpoint() -> tuple[str, subprocess.Popen | None]:
    url = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("RECSYS_TEST_S3_ENDPOINT")
    if url:
        return url, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return url, proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"moto_server did not start on {url}")


def new_bucket() -> str:
    import s3fs

    name = f"recsys-bench-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"


def upload(local: Path, url: str) -> None:
    import s3fs

    s3fs.S3FileSystem(use_listings_cache=False).put(
        str(local), url.removeprefix("s3://"), recursive=True
    )


def write_config(folder: Path, landing: str, warehouse: str, shards: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "recsys.toml"
    cfg.write_text(CONFIG.format(landing=landing, warehouse=warehouse, shards=shards))
    return cfg


def recs(warehouse: str, day: dt.date):
    from recsys_core.io import Warehouse, read_parquet

    return read_parquet(Warehouse(warehouse).recommendations(day))


class Requests(collections.Counter):
    """Requests by operation, and ``seconds``: each operation's request latencies summed (from
    the call to its answer; requests that overlap each count whole)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: collections.Counter = collections.Counter()

    def clear(self) -> None:
        super().clear()
        self.seconds.clear()

    def latency(self) -> str:
        """``op s, ...``, the largest first."""
        return ", ".join(f"{op} {sec:.2f} s" for op, sec in self.seconds.most_common())


def count_s3_requests() -> Requests:
    """Requests sent to S3 by this process, by operation (cleared before each S3 nightly)."""
    import s3fs
    from fsspec.asyn import sync_wrapper

    counts = Requests()
    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        op = method if isinstance(method, str) else getattr(method, "__name__", "?")
        counts[op] += 1
        t0 = time.perf_counter()
        try:
            return await call(self, method, *args, **kwargs)
        finally:
            counts.seconds[op] += time.perf_counter() - t0

    s3fs.S3FileSystem._call_s3 = counted
    # s3fs's blocking ``call_s3`` (conditional writes: locks, leases, the champion pointer) was
    # bound to the original coroutine when the class was made: count it too
    s3fs.S3FileSystem.call_s3 = sync_wrapper(counted)

    # whole-object uploads, downloads and listings go through obstore (recsys_core.io._s3)
    from recsys_core.io import _s3

    def through(op: str, fn):
        def timed_call(*args, **kwargs):
            counts[op] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                counts.seconds[op] += time.perf_counter() - t0

        return timed_call

    _s3.put = through("put_object", _s3.put)
    _s3.get = through("get_object", _s3.get)
    _s3.list_prefix = through("list_objects_v2", _s3.list_prefix)  # one request per 1,000 keys
    return counts


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_seconds(server: subprocess.Popen | None) -> float:
    """CPU seconds used so far by this process (every thread) and by the S3 server the bench
    started (none when ``$AWS_ENDPOINT_URL`` names one)."""
    return time.process_time() + server_seconds(server)


def server_seconds(server: subprocess.Popen | None) -> float:
    """CPU seconds used so far by the S3 server the bench started (0 without one)."""
    import psutil

    if server is None:
        return 0.0
    t = psutil.Process(server.pid).cpu_times()
    return t.user + t.system


def timed_night(run_date: dt.date, cfg: Path) -> tuple[float, float]:
    """``(seconds until nightly() returned, seconds until its flow run was Completed)``.

    The two differ by Prefect's wait for its flow-run heartbeat thread, which sleeps in whole
    seconds and is joined when the flow ends: every nightly() call returns on a whole second
    after its start (a run that needs 3.2 s takes 4.0), whatever the storage. The second figure
    is the state's own timestamp, so it is what the run itself cost, to the millisecond.

    The garbage collector runs a full collection first, untimed: the nights share this process
    (a deployment runs each in a fresh one), and the garbage earlier nights left would otherwise
    make a full collection of every object here (0.4-0.6 s, measured) land inside about one
    night in four, on either side.
    """
    from flows.nightly import nightly
    from flows.parameters import RunOptions

    gc.collect()
    start = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    state = nightly(run_date=run_date, options=RunOptions(config_path=str(cfg)), return_state=True)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"nightly {run_date} ended {state.type.value}: {state.message}")
    return wall, (state.timestamp - start).total_seconds()


def direct_night(cfg: Path, day: dt.date, server, requests: collections.Counter) -> dict:
    """One night through the core step functions (:func:`benchmarks._direct.run_night`: the
    score shards on threads, no Prefect, no lock): ``{step: (wall s, CPU s of this process, CPU
    s of the S3 server, requests by op)}``."""
    from benchmarks._direct import run_night
    from recsys_core.config import load_settings

    rows: dict[str, tuple[float, float, float, collections.Counter]] = {}
    gc.collect()  # untimed, as before each timed flow night (see timed_night)

    def server_cpu() -> float:  # the S3 server's CPU seconds so far (0 without one)
        return cpu_seconds(server) - time.process_time()

    def step(name: str, fn, *args):
        requests.clear()
        c0, s0, t0 = time.process_time(), server_cpu(), time.perf_counter()
        out = fn(*args)
        wall, own = time.perf_counter() - t0, time.process_time() - c0
        rows[name] = (wall, own, server_cpu() - s0, requests.copy())
        return out

    run_night(load_settings(cfg), day, step)
    return rows


def step_breakdown(landing: Path, tmp: Path, repeats: int, server, requests) -> None:
    """Print, per core step, what the S3 night costs beyond the local one (see module doc)."""
    from recsys_core.io import forget_cached_objects

    runs: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for i in range(repeats):
        wh = str(tmp / f"steps-local-{i}" / "warehouse")
        cfg = write_config(tmp / f"steps-local-{i}", str(landing), wh, shards=2)
        for name, day in (("cold", END), ("warm", WARM)):
            runs["local", name].append(direct_night(cfg, day, None, requests))
        bucket = new_bucket()
        upload(landing, f"{bucket}/landing")
        cfg = write_config(tmp / f"steps-s3-{i}", f"{bucket}/landing", f"{bucket}/warehouse", 2)
        for name, day in (("cold", END), ("warm", WARM)):
            forget_cached_objects()  # as a fresh worker
            runs["S3", name].append(direct_night(cfg, day, server, requests))
    med = statistics.median
    for name in ("cold", "warm"):
        local, remote = runs["local", name], runs["S3", name]
        print(
            f"\n{name} night by core step, no Prefect (median of {repeats}; extra = S3 - local; "
            "server = the S3 server's CPU):"
        )
        print(
            f"  {'step':9s} {'local s':>8s} {'S3 s':>7s} {'extra s':>8s} {'our CPU +s':>10s} "
            f"{'server s':>9s}  requests"
        )
        totals = [0.0] * 5
        for step in local[0]:
            lo = med(r[step][0] for r in local)
            so = med(r[step][0] for r in remote)
            cpu = med(r[step][1] for r in remote) - med(r[step][1] for r in local)
            srv = max(0.0, med(r[step][2] for r in remote))  # no "-0.00" from clock steps
            ops = remote[-1][step][3]
            n = sum(ops.values())
            for j, v in enumerate((lo, so, so - lo, cpu, srv)):
                totals[j] += v
            per_op = ", ".join(
                f"{op.replace('_objects_v2', '').replace('_objects', 's').replace('_object', '')} {k}"
                for op, k in ops.most_common()
            )
            print(
                f"  {step:9s} {lo:8.2f} {so:7.2f} {so - lo:+8.2f} {cpu:+10.2f} {srv:9.2f}  "
                f"{n}{f' ({per_op})' if n else ''}"
            )
        lo, so, extra, cpu, srv = totals
        print(
            f"  {'night':9s} {lo:8.2f} {so:7.2f} {extra:+8.2f} {cpu:+10.2f} {srv:9.2f}  "
            f"ratio {so / lo:.2f}x"
        )


def _runs(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backfill-days", type=int, default=8)
    ap.add_argument("--no-backfill", action="store_true", help="the nightly comparison only")
    ap.add_argument(
        "--steps", action="store_true", help="also time each core step on local disk and on S3"
    )
    args = ap.parse_args()
    requests = count_s3_requests()

    url, server = s3_endpoint()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix="recsys-bench-storage-"))
    os.environ.setdefault("PREFECT_HOME", str(tmp / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    from prefect.testing.utilities import prefect_test_harness

    from flows.nightly import backfill
    from flows.parameters import RunOptions
    from recsys_core.io import forget_cached_objects
    from recsys_core.landing import generate_synthetic

    try:
        landing = tmp / "landing"
        generate_synthetic(  # the cold night catches up --days dates; the warm night adds one
            landing, users=args.users, items=args.items, days=args.days + 1, seed=3, end_date=WARM
        )
        print(
            f"landing: {args.users} users x {args.items} items x {args.days} days (+1 for the "
            f"warm night); S3 server {url}"
        )
        with prefect_test_harness(server_startup_timeout=120):
            # 1-2: one nightly, local disk vs S3 (landing and warehouse), fresh each repeat, after
            # one untimed run that pays the imports (scikit-optimize, torch, ...) for both
            warm = write_config(tmp / "warm-up", str(landing), str(tmp / "warm-up" / "wh"), 2)
            timed_night(END, warm)
            times: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
            cpu: dict[tuple[str, str], list[float]] = collections.defaultdict(list)

            served: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)

            def night(side: str, name: str, day: dt.date, cfg: Path) -> None:
                c0, s0 = cpu_seconds(server), server_seconds(server)
                times[side, name].append(timed_night(day, cfg))
                cpu[side, name].append(cpu_seconds(server) - c0)
                if side == "S3":  # (the server's CPU seconds, requests) of this night
                    served[name].append((server_seconds(server) - s0, sum(requests.values())))

            for i in range(args.repeats):
                wh = str(tmp / f"local-{i}" / "warehouse")
                cfg = write_config(tmp / f"local-{i}", str(landing), wh, shards=2)
                night("local", "cold", END, cfg)
                local_recs = recs(wh, END)
                night("local", "warm", WARM, cfg)
                local_warm = recs(wh, WARM)

                bucket = new_bucket()
                upload(landing, f"{bucket}/landing")
                cfg = write_config(
                    tmp / f"s3-{i}", f"{bucket}/landing", f"{bucket}/warehouse", shards=2
                )
                for name, day in (("cold", END), ("warm", WARM)):
                    forget_cached_objects()  # as a fresh worker: nothing this process read
                    requests.clear()
                    night("S3", name, day, cfg)
                    per_op = ", ".join(f"{op} {n}" for op, n in requests.most_common())
                    print(
                        f"S3 {name} night {i + 1}: {sum(requests.values())} requests ({per_op}); "
                        f"summed request time: {requests.latency()}"
                    )
                assert recs(f"{bucket}/warehouse", END).equals(local_recs), "S3 != local"
                assert recs(f"{bucket}/warehouse", WARM).equals(local_warm), "S3 != local"
            for name in ("cold", "warm"):
                for col, what in (
                    (1, "until the flow run is Completed"),
                    (0, "until nightly() returns"),
                ):
                    lo = min(r[col] for r in times["local", name])
                    so = min(r[col] for r in times["S3", name])
                    print(f"{name} nightly, {what} (best of {args.repeats}):")
                    for side, label, best in (
                        ("local", "local disk", lo),
                        ("S3", "S3 (moto) ", so),
                    ):
                        runs = _runs([r[col] for r in times[side, name]])
                        print(f"  {label}: {best:7.2f} s   (runs: {runs})")
                    print(f"  ratio S3 / local: {so / lo:5.2f}x   (target <= 1.5x)")
                    paired = sorted(
                        s[col] / loc[col]
                        for loc, s in zip(times["local", name], times["S3", name], strict=True)
                    )
                    print(
                        f"  paired ratios (each repeat's S3 run over its own local run, seconds "
                        f"apart): median {statistics.median(paired):.2f}x, "
                        f"range {paired[0]:.2f}x to {paired[-1]:.2f}x"
                    )
            if server is not None:
                for name in ("cold", "warm"):
                    lo, so = min(cpu["local", name]), min(cpu["S3", name])
                    print(
                        f"{name} nightly, CPU seconds of this process and the S3 server (best of "
                        f"{args.repeats}; steadier than wall time on a shared machine): local "
                        f"{lo:.2f}, S3 {so:.2f}, ratio {so / lo:.2f}x"
                    )
                for name in ("cold", "warm"):
                    # the server answers one request at a time (its CPU per request does not
                    # fall with more clients): while it works, the night waits on it
                    srv = statistics.median(s for s, _ in served[name])
                    n = served[name][0][1]
                    lo = min(r[1] for r in times["local", name])
                    print(
                        f"{name} nightly, the S3 server's own CPU: {srv:.2f} s for {n} requests "
                        f"({1000 * srv / n:.1f} ms each, median of {args.repeats}); the local "
                        f"night plus that alone is {(lo + srv) / lo:.2f}x the local night"
                    )
            print(
                "(nightly() returns on a whole second after its start: Prefect joins its flow-run "
                "heartbeat thread, which sleeps in 1 s steps; the first figure is the run's own cost)"
            )
            if args.steps:
                step_breakdown(landing, tmp, args.repeats, server, requests)
            if args.no_backfill:
                return

            # 3: backfill of N dates, threads vs Dask with 2 workers, warehouse on S3
            start = END - dt.timedelta(days=args.backfill_days - 1)
            results = {}
            for runner in ("threads", "dask"):
                bucket = new_bucket()
                upload(landing, f"{bucket}/landing")
                cfg = write_config(
                    tmp / f"bf-{runner}", f"{bucket}/landing", f"{bucket}/warehouse", shards=2
                )

                def run(cfg=cfg, runner=runner) -> None:
                    # each date's nightly runs on the runner (dask: a 2-process LocalCluster)
                    out = backfill(
                        start=start,
                        end=END,
                        options=RunOptions(config_path=str(cfg), task_runner=runner),
                    )
                    assert len(out["completed"]) == args.backfill_days, out

                results[runner] = (timed(run), f"{bucket}/warehouse")
            t_threads, wh_threads = results["threads"]
            t_dask, wh_dask = results["dask"]
            assert recs(wh_threads, END).equals(recs(wh_dask, END)), "Dask != threads"
            print(f"backfill {args.backfill_days} dates, threads:          {t_threads:7.2f} s")
            print(f"backfill {args.backfill_days} dates, Dask (2 workers): {t_dask:7.2f} s")
            print(f"ratio Dask / threads:             {t_dask / t_threads:7.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.terminate()


if __name__ == "__main__":
    main()
