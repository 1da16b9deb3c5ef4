#!/usr/bin/env python3
"""Helper of scripts/compare.sh.

compare-parse.py SERVER SIZE CONNECTIONS SECONDS CLK_TCK HOST_TICKS NIC_TICKS CORE_TICKS CLIENT_CORE_TICKS \
                 IDLE_RSS_KIB LOAD_RSS_KIB COPIED_BYTES READ_BYTES SENT_BYTES SCENARIO < wrk output
    prints one JSON result line (COPIED/READ/SENT: the NIC's counters over the run, -1 when unknown).
compare-parse.py --report RESULTS.jsonl PREFIX
    writes PREFIX.json (every run), PREFIX.md (tables, ratios to nginx, IPv6 against IPv4; medians when a cell
    was measured in several rounds) and PREFIX.gnuplot (the chart).
"""
import json
import re
import statistics
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
    (server, size, connections, seconds, tick, host_ticks, nic_ticks, core_ticks, client_ticks, idle_rss, load_rss,
     copied, read, sent, scenario) = args
    size, connections, seconds, tick = int(size), int(connections), float(seconds), float(tick)
    requests, elapsed, received = 0, seconds, 0.0
    match = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+[KMGT]?B) read", wrk)
    if match:
        requests = int(match.group(1))
        elapsed = milliseconds(match.group(2) + match.group(3)) / 1000
        received = size_bytes(match.group(4))
    latency = {}
    for percentile in ("50", "99"):
        found = re.search(r"^\s+%s%%\s+([\d.]+(?:us|ms|s|m))" % percentile, wrk, re.M)
        latency[percentile] = milliseconds(found.group(1)) if found else -1
    found = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+(?:us|ms|s|m))", wrk, re.M)
    latency["max"] = milliseconds(found.group(1)) if found else -1
    if requests == 0:
        # No request finished within the run (10 MiB to 1,600 connections needs longer): wrk's latency
        # lines then say 0, which is no latency at all.
        latency = {key: -1 for key in latency}
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
    if found:
        errors = dict(zip(errors, map(int, found.groups())))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
    gigabytes = received / 1e9
    host, nic, core, client = (int(t) / tick for t in (host_ticks, nic_ticks, core_ticks, client_ticks))
    copied, read, sent = int(copied), int(read), int(sent)

    def per_gb(value):
        return value / gigabytes if gigabytes else -1

    return {
        "scenario": scenario,
        "server": server,
        "size": size,
        "connections": connections,
        "seconds": elapsed,
        "requests": requests,
        "requests_per_second": requests / elapsed if elapsed else 0,
        "gbps": received * 8 / elapsed / 1e9 if elapsed else 0,
        "latency_p50_ms": latency["50"],
        "latency_p99_ms": latency["99"],
        "latency_max_ms": latency["max"],
        "host_cpu_seconds": host,
        "nic_cpu_seconds": nic,
        "core_cpu_seconds": core,
        "client_core_cpu_seconds": client,
        "host_cpu_seconds_per_gb": per_gb(host),
        "nic_cpu_seconds_per_gb": per_gb(nic) if nic else 0,
        "core_cpu_seconds_per_gb": per_gb(core),
        "core_busy_fraction": core / elapsed if elapsed else 0,
        "host_cpu_us_per_request": host * 1e6 / requests if requests else -1,
        "nic_cpu_us_per_request": nic * 1e6 / requests if requests and nic else 0,
        "core_cpu_us_per_request": core * 1e6 / requests if requests else -1,
        "user_copies_per_byte": copied / sent if sent > 0 and copied >= 0 else None,
        "disk_reads_per_byte": read / sent if sent > 0 and read >= 0 else None,
        "memory_kib_per_connection": max(int(load_rss) - int(idle_rss), 0) / connections,
        "socket_errors": sum(errors.values()),
        "timeouts": errors["timeout"],
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def label(size):
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return "%d%s" % (size // unit, name)
    if size >= 1000 and size % 1000 == 0:
        return "%dKB" % (size // 1000)
    return "%dB" % size


def milliseconds_cell(value, digits):
    return "%.*f" % (digits, value) if value >= 0 else "-"


def medians(results):
    """One row per server, file and connection count: each figure the median of its rounds, with the range of
    the rate. Single runs pass through unchanged."""
    groups = {}
    for r in results:
        groups.setdefault((r["server"], r["size"], r["connections"]), []).append(r)
    if all(len(group) == 1 for group in groups.values()):
        return results
    merged = []
    for group in groups.values():
        row = dict(group[0])
        for field, value in group[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and field not in ("size", "connections"):
                values = [g[field] for g in group if isinstance(g.get(field), (int, float))]
                row[field] = statistics.median(values)
        row["rounds"] = len(group)
        row["gbps_range"] = [min(g["gbps"] for g in group), max(g["gbps"] for g in group)]
        merged.append(row)
    return merged


def ipv6_against_ipv4(results, runs):
    """Each NAME-ipv6 row beside NAME's: the issue's bar is IPv6 within 5 % of IPv4 in the same run.

    With rounds, the k-th IPv6 run of a cell is paired with its k-th IPv4 run (back to back against the same
    process in the paired scenario), and the bar is read on the median of those rounds' ratios: the machine's
    minute-to-minute drift (a fifth, here) moves both runs of a round together and the ratio of the two
    medians not."""
    lines = ["", "IPv6 against IPv4, the same server given both families in the same run: Gbps (with the rounds' range),",
             "IPv6 / IPv4 for Gbps (of the medians; with rounds also the median and range of the rounds' own ratios,",
             "and the ratio of the rounds' sums), p99 and whole-core CPU per GB. The bar: IPv6 at most 5 % behind",
             "IPv4, read on the rounds' ratios when there are rounds. (Gbps, not requests a second: at 10 MiB and",
             "1,600 connections few downloads finish within a run.)", "",
             "| server | file | conns | Gbps IPv4 | Gbps IPv6 | IPv6 / IPv4 | rounds' ratios | summed | p99 | core s/GB | within 5 % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    found = False
    for r in results:
        if not r["server"].endswith("-ipv6"):
            continue
        base = next((b for b in results if b["server"] == r["server"][:-len("-ipv6")] and b["size"] == r["size"]
                     and b["connections"] == r["connections"]), None)
        if not base or base["gbps"] <= 0:
            continue
        found = True
        def rate(row):
            spread = row.get("gbps_range")
            return "%.2f" % row["gbps"] + (" (%.2f-%.2f)" % tuple(spread) if spread else "")
        ratio = r["gbps"] / base["gbps"]
        def cell_runs(server):
            return [g["gbps"] for g in runs if g["server"] == server and g["size"] == r["size"]
                    and g["connections"] == r["connections"]]
        ipv4_runs, ipv6_runs = cell_runs(base["server"]), cell_runs(r["server"])
        paired = [six / four for four, six in zip(ipv4_runs, ipv6_runs) if four > 0]
        rounds_cell, summed = "-", "-"
        judged = ratio
        if len(paired) > 1:
            judged = statistics.median(paired)
            rounds_cell = "%.3f (%.2f-%.2f)" % (judged, min(paired), max(paired))
            summed = "%.3f" % (sum(ipv6_runs[:len(paired)]) / sum(ipv4_runs[:len(paired)]))
        lines.append("| %s | %s | %d | %s | %s | %.3f | %s | %s | %s | %s | %s |" % (
            base["server"], label(r["size"]), r["connections"], rate(base), rate(r), ratio, rounds_cell, summed,
            "%.2f" % (r["latency_p99_ms"] / base["latency_p99_ms"]) if base["latency_p99_ms"] > 0 and r["latency_p99_ms"] > 0 else "-",
            "%.2f" % (r["core_cpu_seconds_per_gb"] / base["core_cpu_seconds_per_gb"]) if base["core_cpu_seconds_per_gb"] > 0 else "-",
            "yes" if judged >= 0.95 else "no"))
    return lines if found else []


def report(results_path, prefix):
    runs = [json.loads(line) for line in open(results_path) if line.strip()]
    with open(prefix + ".json", "w") as out:
        json.dump(runs, out, indent=1)
    results = medians(runs)
    rounds = max(r.get("rounds", 1) for r in results)
    servers = list(dict.fromkeys(r["server"] for r in results))
    sizes = sorted({r["size"] for r in results})
    conns = sorted({r["connections"] for r in results})
    lines = ["| server | file | conns | Gbps | req/s | p50 ms | p99 ms | max ms | host s/GB | NIC s/GB | core s/GB | core busy | KiB/conn | errors (timeouts) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = ["", "Ratios to nginx (same file, same connections): Gbps, p99, whole-core CPU per GB, host CPU per GB.", "",
              "| server | file | conns | Gbps | p99 | core s/GB | host s/GB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        for connections in conns:
            row = [r for r in results if r["size"] == size and r["connections"] == connections]
            nginx = next((r for r in row if r["server"] == "nginx"), None)
            for r in row:
                lines.append("| %s | %s | %d | %.2f | %.0f | %s | %s | %s | %.3f | %s | %.3f | %.0f%% | %.1f | %d (%d) |" % (
                    r["server"], label(size), connections, r["gbps"], r["requests_per_second"],
                    milliseconds_cell(r["latency_p50_ms"], 2), milliseconds_cell(r["latency_p99_ms"], 1),
                    milliseconds_cell(r["latency_max_ms"], 0), r["host_cpu_seconds_per_gb"],
                    "%.3f" % r["nic_cpu_seconds_per_gb"] if "iotcp" in r["server"] else "-",
                    r["core_cpu_seconds_per_gb"], 100 * r["core_busy_fraction"], r["memory_kib_per_connection"],
                    r["socket_errors"] + r["non_2xx"], r["timeouts"]))
                if nginx and r is not nginx and nginx["gbps"] > 0 and nginx["core_cpu_seconds_per_gb"] > 0:
                    ratios.append("| %s | %s | %d | %.2fx | %s | %.2fx | %s |" % (
                        r["server"], label(size), connections, r["gbps"] / nginx["gbps"],
                        "%.2fx" % (r["latency_p99_ms"] / nginx["latency_p99_ms"])
                        if nginx["latency_p99_ms"] > 0 and r["latency_p99_ms"] > 0 else "-",
                        r["core_cpu_seconds_per_gb"] / nginx["core_cpu_seconds_per_gb"],
                        "1/%.1f" % (nginx["host_cpu_seconds_per_gb"] / r["host_cpu_seconds_per_gb"])
                        if r["host_cpu_seconds_per_gb"] > 0 else "-"))
    if not any(r["server"] == "nginx" for r in results):
        ratios = []  # no nginx serving files in this run (the proxy scenario compares against HAProxy below)
    patched = [r for r in results if r["server"].startswith("lighttpd-iotcp")]
    if patched and any(r["server"] == "lighttpd" for r in results):
        ratios += ["", "lighttpd on iotcp against stock lighttpd on Linux (same file, same connections): Gbps, p99,",
                   "whole-core CPU per GB, host CPU per GB.", "",
                   "| server | file | conns | Gbps | p99 | core s/GB | host s/GB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in patched:
            stock = next((s for s in results if s["server"] == "lighttpd" and s["size"] == r["size"]
                          and s["connections"] == r["connections"]), None)
            if not stock or stock["gbps"] <= 0 or stock["core_cpu_seconds_per_gb"] <= 0:
                continue
            ratios.append("| %s | %s | %d | %.2fx | %s | %.2fx | %s |" % (
                r["server"], label(r["size"]), r["connections"], r["gbps"] / stock["gbps"],
                "%.2fx" % (r["latency_p99_ms"] / stock["latency_p99_ms"])
                if stock["latency_p99_ms"] > 0 and r["latency_p99_ms"] > 0 else "-",
                r["core_cpu_seconds_per_gb"] / stock["core_cpu_seconds_per_gb"],
                "1/%.1f" % (stock["host_cpu_seconds_per_gb"] / r["host_cpu_seconds_per_gb"])
                if r["host_cpu_seconds_per_gb"] > 0 else "-"))
    if any(r["scenario"] == "short" for r in results):
        ratios += ["", "Short connections (a new connection per request, `Connection: close`): CPU microseconds per request",
                   "on the host side, the NIC stack and the whole server core, and the host's and the core's against stock",
                   "lighttpd's in the same run (lower is better).", "",
                   "| server | file | conns | req/s | host us/req | NIC us/req | core us/req | host vs lighttpd | core vs lighttpd |",
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            stock = next((s for s in results if s["server"] == "lighttpd" and s["size"] == r["size"]
                          and s["connections"] == r["connections"]), None)
            def versus(key):
                if not stock or stock[key] <= 0 or r[key] <= 0:
                    return "-"
                return "1/%.1f" % (stock[key] / r[key]) if r[key] < stock[key] else "%.2fx" % (r[key] / stock[key])
            ratios.append("| %s | %s | %d | %.0f | %.1f | %s | %.1f | %s | %s |" % (
                r["server"], label(r["size"]), r["connections"], r["requests_per_second"], r["host_cpu_us_per_request"],
                "%.1f" % r["nic_cpu_us_per_request"] if "iotcp" in r["server"] else "-", r["core_cpu_us_per_request"],
                versus("host_cpu_us_per_request"), versus("core_cpu_us_per_request")))
    if any(r["scenario"] == "proxy" for r in results):
        ratios += ["", "The proxies against HAProxy (splicing on) in the same mode, same body, same connections: Gbps, p99,",
                   "whole-core CPU per GB, host CPU per GB (the proxy's process; for iotcp-proxy without its NIC stack).", "",
                   "| proxy | body | conns | Gbps | p99 | core s/GB | host s/GB |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            mode = "-close" if r["server"].endswith("-close") else ""
            haproxy = next((s for s in results if s["server"] == "haproxy" + mode and s["size"] == r["size"]
                            and s["connections"] == r["connections"]), None)
            if not haproxy or r is haproxy or haproxy["gbps"] <= 0 or haproxy["core_cpu_seconds_per_gb"] <= 0:
                continue
            ratios.append("| %s | %s | %d | %.2fx | %s | %.2fx | %s |" % (
                r["server"], label(r["size"]), r["connections"], r["gbps"] / haproxy["gbps"],
                "%.2fx" % (r["latency_p99_ms"] / haproxy["latency_p99_ms"])
                if haproxy["latency_p99_ms"] > 0 and r["latency_p99_ms"] > 0 else "-",
                r["core_cpu_seconds_per_gb"] / haproxy["core_cpu_seconds_per_gb"],
                "1/%.1f" % (haproxy["host_cpu_seconds_per_gb"] / r["host_cpu_seconds_per_gb"])
                if r["host_cpu_seconds_per_gb"] > 0 else "-"))
    copies = [r for r in results if r.get("user_copies_per_byte") is not None]
    if copies:
        ratios += ["", "iotcp-nic's own counters over each run: payload bytes copied in user space, and bytes read from",
                   "disk, per byte sent.", "", "| server | file | conns | user copies per byte | disk reads per byte |",
                   "|---|---:|---:|---:|---:|"]
        for r in copies:
            ratios.append("| %s | %s | %d | %.4f | %.3f |" % (r["server"], label(r["size"]), r["connections"],
                                                             r["user_copies_per_byte"], r["disk_reads_per_byte"]))
    ratios += ipv6_against_ipv4(results, runs)
    if rounds > 1:
        how = ("IPv4 and IPv6 back to back against the same server process" if prefix.endswith("-paired")
               else "each round starting at the next server")
        lines = ["Medians of %d rounds (%s); every run is in %s.json." % (rounds, how, prefix.split("/")[-1]), ""] + lines
    with open(prefix + ".md", "w") as out:
        out.write("\n".join(lines + ratios) + "\n")

    # The chart: the whole server core's CPU per GB at the most connections, stacked as the host side's
    # process, the NIC stack, and the rest of the core (the kernel's work for the connections), one panel
    # per file size.
    most = conns[-1]
    data = prefix + ".dat"
    tallest = {}
    with open(data, "w") as out:
        for index, size in enumerate(sizes):
            out.write("# %s: server host nic kernel\n" % label(size))
            for server in servers:
                match = [r for r in results if r["server"] == server and r["size"] == size and r["connections"] == most]
                if not match:
                    continue
                r = match[0]
                host, nic, core = r["host_cpu_seconds_per_gb"], r["nic_cpu_seconds_per_gb"], r["core_cpu_seconds_per_gb"]
                out.write("%s %.4f %.4f %.4f\n" % (server, host, nic, max(core - host - nic, 0)))
                tallest[size] = max(tallest.get(size, 0), core, host + nic)
            out.write("\n\n")
    with open(prefix + ".gnuplot", "w") as out:
        out.write('set terminal pngcairo size %d,520 noenhanced\nset output "%s.png"\n' % (max(380 * len(sizes) + 100, 760), prefix))
        out.write('set multiplot layout 1,%d title "Server core CPU seconds per GB served, %d connections (lower is better)"\n'
                  % (len(sizes), most))
        out.write("set style data histogram\nset style histogram rowstacked\nset style fill solid 0.85 border -1\n")
        out.write('set boxwidth 0.7\nset ylabel "CPU s / GB"\nset grid ytics\nset xtics rotate by -30\nset key top left\n')
        for index, size in enumerate(sizes):
            out.write('set title "%s"\n' % label(size))
            # Headroom above the tallest bar, so the key never covers one.
            out.write("set yrange [0:%.4f]\n" % (tallest.get(size, 1) * 1.45 or 1))
            out.write('plot "%s" index %d using 2:xtic(1) title "host process", "" index %d using 3 title "NIC stack", '
                      '"" index %d using 4 title "kernel, rest of the core"\n' % (data, index, index, index))
            if index == 0:
                out.write("unset key\n")
        out.write("unset multiplot\n")


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        report(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps(parse(sys.argv[1:], sys.stdin.read())))
