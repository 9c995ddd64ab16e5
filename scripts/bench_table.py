#!/usr/bin/env python3
"""Turns Google Benchmark JSON files into one markdown table per benchmark group.

A group is every benchmark sharing the same operation suffix and arguments, e.g.
BM_RcuCell_Read/threads:2 beside BM_RawAtomic_Read/threads:2. The first row of each group
whose name contains "keel's" component names (RcuCell, TimerWheel, ...) is the subject; each
row shows its time and its ratio to the subject. Groups are formed within one file (one
binary, one run): when a later file holds the same operation and arguments as an earlier one
(BM_RawAtomic_Read in rcu_cell_bench and in remote_term_bench), its group's label names its
binary.

A binary whose benchmarks report custom counters (state.counters: latency percentiles,
republish counts, ...) gets a second table after the main one, one column per counter. When
rows report p999_ns, a benchmark BM_<C>_<Op>_While<Load> is also compared with its quiet
counterpart BM_<C>_<Op> at the same thread count (column "p999 vs quiet").
"""
import json
import re
import sys
from collections import OrderedDict

KEEL = ("RcuCell", "TimerWheel", "Runtime", "Tracker", "Keeper", "Leader", "RemoteTerm", "Term",
        "S3Fetcher", "HttpFetcher",
        "Idempotency")

# Keys Google Benchmark writes for every run; any other numeric key is a user counter.
STANDARD_KEYS = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type",
    "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
    "time_unit", "items_per_second", "bytes_per_second", "label", "aggregate_name",
    "aggregate_unit", "error_occurred", "error_message",
}
# Keys Google Benchmark writes in the context; the others were added by the binary
# (benchmark::AddCustomContext) and are printed under the machine line.
STANDARD_CONTEXT = {
    "date", "host_name", "executable", "num_cpus", "mhz_per_cpu", "cpu_scaling_enabled",
    "caches", "load_avg", "library_build_type", "json_schema_version",
}


def counters(b):
    return [k for k, v in b.items() if k not in STANDARD_KEYS and
            isinstance(v, (int, float)) and not isinstance(v, bool)]


# Counters shown first, in this order, when present; the others follow in the order seen.
COUNTER_ORDER = ("p50_ns", "p99_ns", "p999_ns", "max_ns", "median_ms", "max_ms", "target_ms")


def format_counter(v):
    if v is None:
        return ""
    if float(v).is_integer() and abs(v) < 1e15:
        return "%d" % v
    return "%.3g" % v if abs(v) >= 1000 else "%.2f" % v


def group_key(name):
    # BM_<Component>_<Op>[/args] -> (<Op>, args)
    m = re.match(r"BM_([A-Za-z0-9]+)_([A-Za-z0-9_]+?)(/.*)?$", name)
    if not m:
        return (name, "")
    return (m.group(2), m.group(3) or "")


def main(paths):
    rows = []
    context = None
    extra_context = OrderedDict()
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        binary = re.sub(r"\.json$", "", path.rsplit("/", 1)[-1])
        context = context or data.get("context", {})
        for k, v in data.get("context", {}).items():
            if k not in STANDARD_CONTEXT:
                extra_context["%s: %s" % (binary, k)] = v
        for b in data.get("benchmarks", []):
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "mean":
                continue
            rows.append((binary, b))
    groups = OrderedDict()
    for binary, b in rows:
        groups.setdefault((binary,) + group_key(b["name"]), []).append(b)
    # A label names the binary when an earlier file already has the same operation and
    # arguments; the first file's labels stay as they were.
    first_file = {}
    for binary, op, args in groups:
        first_file.setdefault((op, args), binary)

    def label(binary, op, args):
        prefix = "" if first_file[(op, args)] == binary else "%s: " % binary
        return "%s%s%s" % (prefix, op, args)

    def subject_of(members):
        return next((b for b in members if any(k in b["name"] for k in KEEL)), members[0])

    out = []
    if context:
        out.append("Machine: %s CPUs at %s MHz, libbenchmark built as %s, %s" % (
            context.get("num_cpus"), context.get("mhz_per_cpu"),
            context.get("library_build_type"), context.get("date")))
        for k, v in extra_context.items():
            out.append("%s = %s" % (k, v))
        out.append("")
    out.append("| group | benchmark | time (ns) | CPU (ns) | items/s | vs keel |")
    out.append("|---|---|---:|---:|---:|---:|")
    for (binary, op, args), members in groups.items():
        base = subject_of(members)["real_time"]
        for b in members:
            ratio = b["real_time"] / base if base else float("nan")
            ips = b.get("items_per_second")
            out.append("| %s | %s | %.2f | %.2f | %s | %.2fx |" % (
                label(binary, op, args), b["name"], b["real_time"], b["cpu_time"],
                ("%.3g" % ips) if ips else "", ratio))

    # Per binary with counters: a second table, one column per counter.
    def threads_of(b):
        m = re.search(r"/threads:(\d+)", b["name"])
        return m.group(1) if m else "1"

    def quiet_key(b):
        # BM_<C>_<Op>_While<Load>[/args] -> (<C>, <Op>, threads); None for a quiet row.
        m = re.match(r"BM_([A-Za-z0-9]+)_([A-Za-z0-9_]+?)_While[A-Za-z0-9]+(/.*)?$", b["name"])
        return (m.group(1), m.group(2), threads_of(b)) if m else None

    for binary in OrderedDict((binary, None) for binary, _ in rows):
        mine = [b for file, b in rows if file == binary]
        seen = [k for b in mine for k in counters(b)]
        if not seen:
            continue
        names = [k for k in COUNTER_ORDER if k in seen]
        names += [k for k in OrderedDict((k, None) for k in seen) if k not in names]
        quiet_p999 = {}
        for b in mine:
            m = re.match(r"BM_([A-Za-z0-9]+)_([A-Za-z0-9_]+?)(/.*)?$", b["name"])
            if m and "p999_ns" in b and quiet_key(b) is None:
                quiet_p999[(m.group(1), m.group(2), threads_of(b))] = b["p999_ns"]
        compare = any(quiet_key(b) in quiet_p999 for b in mine)
        out.append("")
        out.append("%s, counters:" % binary)
        out.append("")
        out.append("| group | benchmark | time (ns) | vs keel | %s%s |" % (
            " | ".join(names), " | p999 vs quiet" if compare else ""))
        out.append("|---|---|---:|---:|%s" % ("---:|" * (len(names) + (1 if compare else 0))))
        for (file, op, args), members in groups.items():
            if file != binary:
                continue
            base = subject_of(members)["real_time"]
            for b in members:
                ratio = b["real_time"] / base if base else float("nan")
                cells = [format_counter(b.get(k)) for k in names]
                if compare:
                    quiet = quiet_p999.get(quiet_key(b))
                    cells.append("%.2fx" % (b["p999_ns"] / quiet)
                                 if quiet and "p999_ns" in b else "")
                out.append("| %s | %s | %.2f | %.2fx | %s |" % (
                    label(file, op, args), b["name"], b["real_time"], ratio, " | ".join(cells)))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
