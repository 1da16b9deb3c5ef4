#!/usr/bin/env python3
"""Helper of scripts/compare.sh.

compare-parse.py SERVER SIZE CONNECTIONS SECONDS CLK_TCK HOST_TICKS NIC_TICKS IDLE_RSS_KIB LOAD_RSS_KIB < wrk output
    prints one JSON result line.
compare-parse.py --report RESULTS.jsonl PREFIX
    writes PREFIX.json (all results), PREFIX.md (tables) and PREFIX.gnuplot (the chart's script, for PREFIX.png).
"""
import json
import re
import sys

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
TIME = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def size_bytes(text):
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?B)", text).groups()
    return float(number) * UNITS[unit]


def milliseconds(text):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * TIME[unit]


def parse(args, wrk):
    server, size, connections, seconds, tick, host_ticks, nic_ticks, idle_rss, load_rss = args
    size, connections, seconds, tick = int(size), int(connections), float(seconds), float(tick)
    requests, elapsed, read = 0, seconds, 0.0
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+[KMGT]?B) read", wrk)
    if match:
        requests = int(match.group(1))
        elapsed = milliseconds(match.group(2) + match.group(3)) / 1000
        read = size_bytes(match.group(4))
    latency = {}
    for percentile in ("50", "99"):
        found = re.search(r"^\s+%s%%\s+([\d.]+(?:us|ms|s|m))" % percentile, wrk, re.M)
        latency[percentile] = milliseconds(found.group(1)) if found else None
    errors = 0
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
    if found:
        errors = sum(int(value) for value in found.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
    gigabytes = read / 1e9
    host_seconds, nic_seconds = int(host_ticks) / tick, int(nic_ticks) / tick
    return {
        "server": server,
        "size": size,
        "connections": connections,
        "seconds": elapsed,
        "requests": requests,
        "requests_per_second": requests / elapsed if elapsed else 0,
        "gbps": read * 8 / elapsed / 1e9 if elapsed else 0,
        "latency_p50_ms": latency["50"] if latency["50"] is not None else -1,
        "latency_p99_ms": latency["99"] if latency["99"] is not None else -1,
        "host_cpu_seconds": host_seconds,
        "nic_cpu_seconds": nic_seconds,
        "host_cpu_seconds_per_gb": host_seconds / gigabytes if gigabytes else -1,
        "nic_cpu_seconds_per_gb": nic_seconds / gigabytes if gigabytes else 0,
        "memory_kib_per_connection": max(int(load_rss) - int(idle_rss), 0) / connections,
        "socket_errors": errors,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def report(results_path, prefix):
    results = [json.loads(line) for line in open(results_path) if line.strip()]
    with open(prefix + ".json", "w") as out:
        json.dump(results, out, indent=1)
    servers = list(dict.fromkeys(r["server"] for r in results))
    sizes = sorted({r["size"] for r in results})
    conns = sorted({r["connections"] for r in results})
    lines = ["| server | file | conns | Gbps | req/s | p50 ms | p99 ms | host CPU s/GB | NIC CPU s/GB | KiB/conn | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        for connections in conns:
            for r in results:
                if r["size"] == size and r["connections"] == connections:
                    lines.append("| %s | %s | %d | %.2f | %.0f | %.2f | %.2f | %.2f | %s | %.1f | %d |" % (
                        r["server"], label(size), connections, r["gbps"], r["requests_per_second"], r["latency_p50_ms"],
                        r["latency_p99_ms"], r["host_cpu_seconds_per_gb"],
                        "%.2f" % r["nic_cpu_seconds_per_gb"] if r["server"].startswith("iotcp") else "-",
                        r["memory_kib_per_connection"], r["socket_errors"] + r["non_2xx"]))
    with open(prefix + ".md", "w") as out:
        out.write("\n".join(lines) + "\n")
    # The chart: host-side CPU seconds per GB at the most connections, per file size and server (log scale).
    most = conns[-1]
    data = prefix + ".dat"
    with open(data, "w") as out:
        out.write("size " + " ".join(servers) + "\n")
        for size in sizes:
            row = []
            for server in servers:
                match = [r for r in results if r["server"] == server and r["size"] == size and r["connections"] == most]
                row.append("%.4f" % match[0]["host_cpu_seconds_per_gb"] if match and match[0]["host_cpu_seconds_per_gb"] > 0 else "?")
            out.write(label(size) + " " + " ".join(row) + "\n")
    with open(prefix + ".gnuplot", "w") as out:
        out.write('set terminal pngcairo size 900,500 noenhanced\nset output "%s.png"\n' % prefix)
        out.write('set title "Host-side CPU seconds per GB served, %d connections (lower is better)"\n' % most)
        out.write("set style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n")
        out.write('set logscale y\nset ylabel "CPU s / GB"\nset key top left\nset datafile missing "?"\nset grid ytics\n')
        out.write('plot ' + ", ".join('"%s" using %d:xtic(1) title columnheader(%d)' % (data, i + 2, i + 2)
                                      for i in range(len(servers))) + "\n")


def label(size):
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return "%d%s" % (size // unit, name)
    if size >= 1000 and size % 1000 == 0:
        return "%dKB" % (size // 1000)
    return "%dB" % size


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps(parse(sys.argv[1:], sys.stdin.read())))
