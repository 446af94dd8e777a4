#!/usr/bin/env python3
"""The most any schedule can send beside a client that sends blocks on a fixed period.

HubSpot counts every arrival in a rolling window. Another client sends `block` calls at
once every `period` seconds; hubgate may send whenever it likes, even knowing exactly when
every future block lands. This solves that as a linear programme over one period (the
block pattern repeats, so the best schedule can be taken to repeat too), in `dt`-second
bins, and prints the share of "what the other client leaves" (the limit per window less the
other client's average use per window, as bench/outside.sh counts it) that the best
schedule uses.

`--jitter`: a block may land anywhere within that many seconds of its nominal time, and
the schedule must be safe wherever it lands. `--margin`: slots the schedule never uses.

Usage: bench/outside_bound.py [--limit 110] [--window 10] [--block 33] [--period 7]
       [--dt 0.05] [--jitter 0 0.25 ...] [--margin 0 2 ...]
"""
import argparse
import subprocess
import sys


def scipy_modules():
    """numpy and scipy.optimize, installed into the user's site when missing."""
    try:
        import numpy
        from scipy.optimize import linprog
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--user", "numpy", "scipy"])
        import site
        import importlib
        importlib.reload(site)
        import numpy
        from scipy.optimize import linprog
    return numpy, linprog


def best_share(limit, window, block, period, dt, jitter, margin):
    np, linprog = scipy_modules()
    bins = int(round(period / dt))
    span = int(round(window / dt))
    slack = int(round(jitter / dt))
    rows, bounds = [], []
    for start in range(bins):
        row = np.zeros(bins)
        for k in range(start, start + span):
            row[k % bins] += 1
        # A block counts in this window if any time it may land at falls inside it.
        periods_reached = span // bins + 2
        blocks = sum(
            1
            for j in range(-periods_reached, periods_reached + 1)
            if any(start <= j * bins + e < start + span for e in range(-slack, slack + 1))
        )
        rows.append(row)
        bounds.append(limit - margin - blocks * block)
    if min(bounds) < 0:
        return 0.0
    res = linprog(-np.ones(bins), A_ub=np.array(rows), b_ub=np.array(bounds), bounds=[(0, None)] * bins, method="highs")
    if res.status != 0:
        raise SystemExit(f"the linear programme failed: {res.message}")
    ours_per_window = -res.fun * window / period
    left_per_window = limit - block * window / period
    return ours_per_window / left_per_window


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=110)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--block", type=int, default=33)
    p.add_argument("--period", type=float, default=7.0)
    p.add_argument("--dt", type=float, default=0.05)
    p.add_argument("--jitter", type=float, nargs="+", default=[0.0, 0.25, 1.0])
    p.add_argument("--margin", type=int, nargs="+", default=[0, 2])
    a = p.parse_args()
    print(f"limit {a.limit} per {a.window:g} s; another client sends {a.block} at once every {a.period:g} s")
    print("| block landing within | slots never used | best share of what is left |")
    print("|---|---|---|")
    for jitter in a.jitter:
        for margin in a.margin:
            share = best_share(a.limit, a.window, a.block, a.period, a.dt, jitter, margin)
            print(f"| ±{jitter:g} s | {margin} | {100 * share:.1f} % |")
    # Knowing nothing of when the next block lands, every window may hold the most blocks
    # a window can: the schedule can only send what is left beside that many.
    most = int(a.window // a.period) + 1
    blind = (a.limit - most * a.block) / (a.limit - a.block * a.window / a.period)
    print(f"not knowing when blocks land (any window may hold {most}): {100 * max(blind, 0):.1f} %")

if __name__ == "__main__":
    main()
