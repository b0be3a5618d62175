"""Forecast Monte Carlo benchmark: 100,000 open deals x 10,000 trials, time and peak memory.

``python -m tests.bench.forecast_bench [--deals N] [--trials T] [--seed S] [--chunk-trials C]``
prints one line: deals, trials, seconds, peak traced memory (MiB) and the P10/P50/P90.

Every deal gets a win probability in (0, 1) and a close share of 1, the worst case (a deal
that cannot close in the period is dropped before the kernel), plus a new-deal source, so
the time is that of the whole kernel.  Peak memory is traced with tracemalloc (numpy
reports its buffers to it) around :func:`streams.forecast.monte_carlo` alone; the inputs
are allocated before tracing starts.  Timing runs separately, untraced.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np

from streams.forecast import MIN_TRIALS, MonteCarlo, NewDeals, monte_carlo


def inputs(deals: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[NewDeals]]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, deals)
    amounts = rng.integers(100_000, 20_000_000, deals)  # 1,000.00 .. 200,000.00
    new = [NewDeals("bench", 40.0, 0.2, 5_000_000.0, 30, 60.0, rng.integers(100_000, 20_000_000, 500))]
    return p, amounts, new


def run(deals: int, trials: int, seed: int, chunk_trials: int | None) -> tuple[float, int, MonteCarlo]:
    p, amounts, new = inputs(deals, seed)
    t0 = time.perf_counter()
    result = monte_carlo(p, amounts, new=new, trials=trials, seed=seed, chunk_trials=chunk_trials)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    monte_carlo(p, amounts, new=new, trials=trials, seed=seed, chunk_trials=chunk_trials)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=MIN_TRIALS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-trials", type=int, default=None)
    args = parser.parse_args(argv)
    seconds, peak, r = run(args.deals, args.trials, args.seed, args.chunk_trials)
    sys.stdout.write(
        f"forecast monte carlo: deals={args.deals} trials={args.trials} seconds={seconds:.2f} "
        f"peak_mib={peak / 2**20:.1f} p10={r.p10_cents} p50={r.p50_cents} p90={r.p90_cents}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
