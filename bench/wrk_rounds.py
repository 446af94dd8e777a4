"""The table of bench/overhead.sh and bench/owners_overhead.sh: each target's wrk rounds,
read from WORK/wrk-TARGET-ROUND.txt and WORK/cpu-TARGET-ROUND.txt (the CPU nanoseconds its
spender ran), as median requests/s, latency p50/p99 and CPU per call.

Usage: python3 bench/wrk_rounds.py WORK ROUNDS HEADING TARGET=NAME...
"""
import re
import statistics
import sys


def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run(work, target, r):
    text = open(f"{work}/wrk-{target}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    calls = int(re.search(r"(\d+) requests in", text).group(1))
    cpu_us = int(open(f"{work}/cpu-{target}-{r}.txt").read()) / 1000 / calls
    return rps, p50, p99, cpu_us


def main():
    work, rounds, heading = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    names = dict(arg.split("=", 1) for arg in sys.argv[4:])
    rows = {}
    for target in names:
        runs = [run(work, target, r) for r in range(1, rounds + 1)]
        rows[target] = [statistics.median(x[i] for x in runs) for i in range(4)] + [
            ", ".join(f"{x[0]:,.0f}" for x in runs)
        ]
    print(f"\n{heading} (each target {rounds} times, taking turns; medians)\n")
    print("| path | requests/s | each round | latency p50 | latency p99 | CPU per call |")
    print("|---|---|---|---|---|---|")
    for target, (rps, p50, p99, cpu_us, each) in rows.items():
        print(f"| {names[target]} | **{rps:,.0f}** | {each} | {p50:.2f} ms | {p99:.2f} ms "
              f"| {cpu_us:.1f} µs |")
    print()
    # Every path but the two it is measured against, against nginx: the targets.
    for target in [t for t in names if t not in ("direct", "nginx")]:
        ratio = rows[target][0] / rows["nginx"][0]
        cpu_ratio = rows[target][3] / rows["nginx"][3]
        print(f"- {names[target]} / nginx requests/s: **{ratio:.2f}** (target >= 1.00: "
              f"{'met' if ratio >= 1 else 'missed'}); CPU per call / nginx's: "
              f"**{cpu_ratio:.2f}** (target <= 1.00: {'met' if cpu_ratio <= 1 else 'missed'})"
              + (f"; / direct requests/s: {ratio * rows['nginx'][0] / rows['direct'][0]:.2f}"
                 if "direct" in rows else ""))


if __name__ == "__main__":
    main()
