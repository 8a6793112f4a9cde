"""Time the stratified bootstrap of AUC: 10,000 predictions x 2,000 resamples.

Run: python benchmarks/bootstrap_speed.py  (target: under 2 s on a laptop-class CPU)
"""

from __future__ import annotations

import time

import numpy as np

from medlens.evaluate import auc_score, bootstrap_ci


def main(n: int = 10_000, n_resamples: int = 2_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    score = y * 1.0 + rng.normal(size=n)
    bootstrap_ci(auc_score, y[:200], score[:200], n_resamples=10)  # warm-up (imports, caches)
    start = time.perf_counter()
    est = bootstrap_ci(auc_score, y, score, n_resamples=n_resamples, seed=seed)
    elapsed = time.perf_counter() - start
    print(f"AUC bootstrap, {n} predictions x {n_resamples} resamples: {elapsed:.3f} s  -> {est}")
    return elapsed


if __name__ == "__main__":
    main()
