"""What the search's user cap (``train.tune_max_users``) saves: one search call on every user
against the same call on the seeded sample, on a synthetic matrix of the 10M nightly's shape.

The matrix: ``--users`` users x ``--items`` items, about ``--per-user`` distinct items per user
drawn from a Zipf-like popularity (seeded), and one held-out item per user as the validation
truth. For each model (``--models``) ``recsys_core.tuning.tune`` runs ``n_calls = 1`` (the
defaults: one fit, one scoring of every validation user) without a cap and with ``--cap``; the
table prints seconds and their ratio, beside the share of users and interactions searched.
A benchmark, not a test: it prints ratios measured in one run.

    python benchmarks/bench_search_sample.py                      # 203,000 x 20,000, cap 50,000
    python benchmarks/bench_search_sample.py --users 60000 --items 6000 --cap 15000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys_core.interactions import Interactions  # noqa: E402
from recsys_core.tuning import sample_users, tune  # noqa: E402


def synthetic(
    users: int, items: int, per_user: int, seed: int
) -> tuple[Interactions, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    pop /= pop.sum()
    counts = np.maximum(2, rng.poisson(per_user, users))
    rows = np.repeat(np.arange(users), counts)
    cols = rng.choice(items, size=rows.size, p=pop)
    mat = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(users, items))
    mat.sum_duplicates()
    mat.data[:] = 1.0
    # hold out one random item of each user as the validation truth
    last = mat.indptr[:-1] + (rng.random(users) * np.diff(mat.indptr)).astype(np.int64)
    truth_cols = mat.indices[last]
    keep = np.ones(mat.nnz, bool)
    keep[last] = False
    coo = mat.tocoo()
    train = sp.csr_matrix(
        (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=(users, items), dtype=np.float32
    )
    user_ids = np.array([f"u{u:07d}" for u in range(users)], dtype=object)
    item_ids = np.array([f"i{i:06d}" for i in range(items)], dtype=object)
    valid = pl.DataFrame({"user_id": user_ids.tolist(), "item_id": item_ids[truth_cols].tolist()})
    return Interactions(matrix=train, user_ids=user_ids, item_ids=item_ids), valid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=203_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--per-user", type=int, default=40)
    p.add_argument("--cap", type=int, default=50_000)
    p.add_argument("--models", default="popularity,als")
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    train, valid = synthetic(a.users, a.items, a.per_user, a.seed)
    sample = sample_users(train, a.cap, a.seed)
    print(
        f"{train.n_users:,} users x {train.n_items:,} items, {train.nnz:,} interactions "
        f"(built in {time.perf_counter() - t0:.1f} s); the cap keeps {sample.n_users:,} users "
        f"({sample.n_users / train.n_users:.2f}) and {sample.nnz:,} interactions "
        f"({sample.nnz / train.nnz:.2f})"
    )
    print(
        f"{'model':10s} {'all users s':>11s} {'sample s':>9s} {'sample/all':>10s} {'ndcg all':>9s} {'ndcg sample':>11s}"
    )
    tune("popularity", sample_users(train, 200, a.seed), valid, n_calls=1, seed=a.seed)  # imports
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        full = tune(model, train, valid, n_calls=1, seed=a.seed)
        capped = tune(model, train, valid, n_calls=1, seed=a.seed, max_users=a.cap)
        print(
            f"{model:10s} {full.seconds:11.1f} {capped.seconds:9.1f} "
            f"{capped.seconds / full.seconds:10.2f} {full.best_score:9.4f} {capped.best_score:11.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
