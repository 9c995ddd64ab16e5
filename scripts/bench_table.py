#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into one markdown table per benchmark group.

A group is every benchmark sharing the same operation suffix and arguments, e.g.
BM_RcuCell_Read/threads:2 beside BM_RawAtomic_Read/threads:2. The first row of each group
whose name contains "keel's" component names (RcuCell, TimerWheel, ...) is the subject; each
row shows its time and its ratio to the subject.
"""
import json
import re
import sys
from collections import OrderedDict

KEEL = ("RcuCell", "TimerWheel", "Runtime", "Tracker", "Keeper", "Leader", "Term")


def group_key(name):
    # BM_<Component>_<Op>[/args] -> (<Op>, args)
    m = re.match(r"BM_([A-Za-z0-9]+)_([A-Za-z0-9_]+?)(/.*)?$", name)
    if not m:
        return (name, "")
    return (m.group(2), m.group(3) or "")


def main(paths):
    rows = []
    context = None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        context = context or data.get("context", {})
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "mean":
                continue
            rows.append(b)
    groups = OrderedDict()
    for b in rows:
        groups.setdefault(group_key(b["name"]), []).append(b)
    out = []
    if context:
        out.append("Machine: %s CPUs at %s MHz, libbenchmark built as %s, %s" % (
            context.get("num_cpus"), context.get("mhz_per_cpu"),
            context.get("library_build_type"), context.get("date")))
        out.append("")
    out.append("| group | benchmark | time (ns) | CPU (ns) | items/s | vs keel |")
    out.append("|---|---|---:|---:|---:|---:|")
    for (op, args), members in groups.items():
        subject = next((b for b in members if any(k in b["name"] for k in KEEL)), members[0])
        base = subject["real_time"]
        for b in members:
            ratio = b["real_time"] / base if base else float("nan")
            ips = b.get("items_per_second")
            out.append("| %s%s | %s | %.2f | %.2f | %s | %.2fx |" % (
                op, args, b["name"], b["real_time"], b["cpu_time"],
                ("%.3g" % ips) if ips else "", ratio))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
