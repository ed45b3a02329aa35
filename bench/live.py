#!/usr/bin/env python3
"""Live measurements of a real lubdub server under `lubdub loadgen` load.

Starts a server on loopback (port 0), a client beating to it at 10 s, and a
load generator simulating HOSTS hosts at INTERVAL; some hosts stop beating
part-way. Measures, from /proc and the server's own output:

  * server CPU share while the fleet beats (utime+stime over a window);
  * server resident memory per host (VmRSS after the fleet joined, minus
    VmRSS before);
  * HTTP latency of /healthz and of the fleet summary (/api/v1/summary when
    the server has it, else the full /api/v1/hosts) polled during the steady
    window, and of three more summaries after detection;
  * detection latency of the stopped hosts: event time minus (last beat +
    timeout) for `down`, and minus (last beat + timeout/2) for `late`;
  * datagrams sent by loadgen vs received by the server, and the kernel's
    count of datagrams the server's socket dropped (/proc/net/udp "drops":
    receive buffer full);
  * the load average at the start and end of the steady window, and how
    many `late` events the whole fleet had (running hosts go late only
    when beats are lost or delayed);
  * the client's VmRSS and CPU time over the run.

Loopback only; every wait is bounded. Prints a table and one JSON line.
Usage: bench/live.py --bin target/release/lubdub [--hosts N] [--seconds S] ...
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11], [12] are utime, stime (14th, 15th of the full line)
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu_seconds(pid, name):
    """CPU seconds of the process's threads called `name` (comm)."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wait_line(path, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            for line in f:
                m = re.search(pattern, line)
                if m:
                    return m
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r} in {path}")


def get(url, timeout=30):
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
    return time.perf_counter() - start, body


def metric(http, name):
    _, body = get(f"http://{http}/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def socket_drops(port):
    """The kernel's drop counter of the UDP socket bound to `port`."""
    total = None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                total = (total or 0) + int(fields[-1])
    return total


def stop_all(procs, timeout=10):
    """SIGTERM to each process still running (last started first), then
    waits up to `timeout` seconds for each before killing it."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def parse_time(text):
    # RFC 3339 with a Z, millis or micros
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/lubdub")
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds")
    ap.add_argument("--timeout", type=float, default=30.0, help="server timeout, seconds")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="bound on loadgen's run")
    ap.add_argument("--stop-count", type=int, default=1000)
    ap.add_argument("--stop-after", type=float, default=15.0)
    ap.add_argument("--window", type=float, default=30.0, help="CPU window, seconds")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after the fleet joined before the CPU window "
                         "(the join's checkpoints run on for a while)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra server argument, e.g. --server-arg=--checkpoint-interval=30s")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="lubdub-live-")
    server_out = os.path.join(tmp, "server.out")
    loadgen_out = os.path.join(tmp, "loadgen.out")
    procs = []
    try:
        server = subprocess.Popen(
            [args.bin, "server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--timeout", f"{args.timeout}s", "--data-dir", tmp, "-q", *args.server_arg],
            stdout=open(server_out, "w"), stderr=subprocess.DEVNULL)
        procs.append(server)
        m = wait_line(server_out, r"listening udp=(\S+) http=(\S+)", 10)
        udp, http = m.group(1), m.group(2)
        time.sleep(0.5)
        rss_before = rss_bytes(server.pid)

        client = subprocess.Popen(
            [args.bin, "client", udp, "--interval", "10s", "--host-id", "bench-client", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(client)

        start, wall_start = time.monotonic(), time.time()
        # Runs until told to stop (SIGINT, after the phases below); the
        # duration is only a bound in case this script dies.
        loadgen = subprocess.Popen(
            [args.bin, "loadgen", udp, "--hosts", str(args.hosts),
             "--interval", f"{args.interval}s", "--duration", f"{args.max_seconds}s",
             "--stop-count", str(args.stop_count), "--stop-after", f"{args.stop_after}s"],
            stdout=open(loadgen_out, "w"), stderr=subprocess.STDOUT)
        procs.append(loadgen)

        def known():
            return json.loads(get(f"http://{http}/healthz")[1])["hosts"]

        # Phase 1: the fleet joins (one `joined` line each); the CPU window
        # starts once every host is known, so joins do not count in it.
        deadline = start + 6 * args.interval + 30
        while known() < args.hosts and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(1 + args.settle)
        rss_fleet = rss_bytes(server.pid)
        hosts_known = known()
        joined_after = time.monotonic() - start

        summary_path = "/api/v1/summary"
        try:
            get(f"http://{http}{summary_path}")
        except Exception:
            summary_path = "/api/v1/hosts"
        port = int(udp.rsplit(":", 1)[1])

        # Phase 2: steady beating. CPU share over the window; /healthz and
        # the fleet summary polled meanwhile (the polling is part of the
        # load: an operator's dashboard does the same).
        load0 = os.getloadavg()[0]
        drops0 = socket_drops(port)
        recv0 = thread_cpu_seconds(server.pid, "lubdub-recv")
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        received0 = metric(http, "lubdub_datagrams_received_total") or 0
        batches0 = metric(http, "lubdub_ingest_batches_total") or 0
        health, summaries = [], []
        while time.monotonic() < t0 + args.window:
            health.append(get(f"http://{http}/healthz")[0])
            summaries.append(get(f"http://{http}{summary_path}", timeout=120)[0])
            time.sleep(0.25)
        t1 = time.monotonic()
        cpu1 = cpu_seconds(server.pid)
        recv1 = thread_cpu_seconds(server.pid, "lubdub-recv")
        received1 = metric(http, "lubdub_datagrams_received_total") or 0
        batches1 = metric(http, "lubdub_ingest_batches_total") or 0
        drops1 = socket_drops(port)
        load1 = os.getloadavg()[0]

        # Phase 3: the stopped hosts go late, then down.
        def downs():
            with open(server_out) as f:
                return sum(1 for line in f if " down " in line)
        deadline = start + args.stop_after + args.timeout + 2 * args.interval + 30
        while downs() < args.stop_count and time.monotonic() < deadline:
            time.sleep(1)

        # Phase 4: the fleet listing, while the fleet still beats (a summary
        # endpoint when the server has one; the full list otherwise).
        listing = []
        for _ in range(3):
            dt, body = get(f"http://{http}{summary_path}", timeout=120)
            listing.append((dt, len(body)))
            time.sleep(2)

        loadgen.send_signal(signal.SIGINT)
        loadgen.wait(timeout=60)
        time.sleep(1)
        received_total = metric(http, "lubdub_datagrams_received_total") or 0
        drops_total = socket_drops(port)
        client_cpu = cpu_seconds(client.pid)
        client_rss = rss_bytes(client.pid)
        client_seconds = time.monotonic() - start
    finally:
        stop_all(procs)

    # Loadgen report and stopped hosts' last beats.
    stopped, sent, never = {}, None, 0
    for line in open(loadgen_out):
        if line.startswith("stopped "):
            host, last = line.split()[1], line.split("last_beat=")[1].strip()
            if last != "never":
                stopped[host] = parse_time(last)
            else:
                never += 1
        elif line.startswith("sent "):
            sent = dict(w.split("=", 1) for w in line.split()[1:])
    # Event lines: TIME KIND HOST addr=... silent=...
    # Hosts whose last beat came in the first round (while the fleet
    # joined and the registry grew) are also reported apart.
    steady_after = wall_start + args.interval
    late, down, fleet_late = [], [], 0
    late_steady, down_steady = [], []
    for line in open(server_out):
        words = line.split()
        fleet_late += len(words) >= 2 and words[1] == "late"
        if len(words) >= 3 and words[2] in stopped and words[1] in ("late", "down"):
            at = parse_time(words[0])
            last = stopped[words[2]]
            if words[1] == "late":
                late.append(at - (last + args.timeout / 2))
                if last >= steady_after:
                    late_steady.append(late[-1])
            else:
                down.append(at - (last + args.timeout))
                if last >= steady_after:
                    down_steady.append(down[-1])

    ms = lambda s: s * 1000
    window = t1 - t0
    result = {
        "hosts": args.hosts,
        "hosts_known": hosts_known,
        "all_joined_after_seconds": joined_after,
        "beats_per_second_in_window": (received1 - received0) / window,
        "server_cpu_share": (cpu1 - cpu0) / window,
        "receive_batches_per_second": (batches1 - batches0) / window,
        "receive_thread_cpu_share": (recv1 - recv0) / window,
        "server_rss_before_bytes": rss_before,
        "server_rss_fleet_bytes": rss_fleet,
        "server_rss_per_host_bytes": (rss_fleet - rss_before) / max(1, hosts_known),
        "healthz_ms_p50": ms(pct(health, 50)),
        "healthz_ms_max": ms(max(health)) if health else None,
        "summary_ms_p50": ms(pct(summaries, 50)),
        "summary_ms_p99": ms(pct(summaries, 99)),
        "summary_ms_max": ms(max(summaries)) if summaries else None,
        "summary_polls": len(summaries),
        "load_average": [load0, load1],
        "socket_drops_in_window": None if drops0 is None else drops1 - drops0,
        "socket_drops_total": drops_total,
        "fleet_late_events": fleet_late,
        "listing_path": summary_path,
        "listing_ms": [ms(dt) for dt, _ in listing],
        "listing_bytes": [n for _, n in listing],
        "loadgen_sent": int(sent["packets"]) if sent else None,
        "loadgen_rate": sent["rate"] if sent else None,
        "loadgen_errors": int(sent["errors"]) if sent else None,
        "loadgen_max_lag": sent.get("max_lag") if sent else None,
        "stopped_never_beat": never,
        "server_received": int(received_total),
        "stopped_hosts": len(stopped),
        "late_events": len(late),
        "down_events": len(down),
        "late_ms_p50": ms(pct(late, 50)), "late_ms_p99": ms(pct(late, 99)),
        "late_ms_max": ms(max(late)) if late else None,
        "down_ms_p50": ms(pct(down, 50)), "down_ms_p99": ms(pct(down, 99)),
        "down_ms_max": ms(max(down)) if down else None,
        "steady_late_ms_p50": ms(pct(late_steady, 50)),
        "steady_late_ms_p99": ms(pct(late_steady, 99)),
        "steady_late_ms_max": ms(max(late_steady)) if late_steady else None,
        "steady_down_ms_p50": ms(pct(down_steady, 50)),
        "steady_down_ms_p99": ms(pct(down_steady, 99)),
        "steady_down_ms_max": ms(max(down_steady)) if down_steady else None,
        "client_rss_bytes": client_rss,
        "client_cpu_seconds": client_cpu,
        "client_seconds": client_seconds,
    }
    print(f"live: {args.hosts} hosts at {args.interval}s, server timeout {args.timeout}s, "
          f"window {window:.1f}s; output in {tmp}"
          + (f"; server args {' '.join(args.server_arg)}" if args.server_arg else ""))
    rows = [
        ("server CPU share (of one core)", f"{result['server_cpu_share']*100:.1f} %",
         f"at {result['beats_per_second_in_window']:.0f} beats/s received"),
        ("receive batches (recvmmsg calls)", f"{result['receive_batches_per_second']:.0f}/s",
         f"{(received1 - received0) / max(1, batches1 - batches0):.1f} datagrams each"),
        ("  of which the receive thread", f"{result['receive_thread_cpu_share']*100:.1f} %",
         "lubdub-recv: recvmmsg, decode, verify, registry, deadline"),
        ("server RSS per host", f"{result['server_rss_per_host_bytes']:.0f} B",
         f"{rss_before>>20} MiB before, {rss_fleet>>20} MiB with {hosts_known} hosts "
         f"(all known after {joined_after:.0f} s)"),
        ("GET /healthz", f"p50 {result['healthz_ms_p50']:.1f} ms", f"max {result['healthz_ms_max']:.1f} ms"),
        (f"GET {summary_path} in window", f"p50 {result['summary_ms_p50']:.1f} ms",
         f"p99 {result['summary_ms_p99']:.1f} ms, max {result['summary_ms_max'] or float('nan'):.1f} ms, "
         f"{len(summaries)} polls"),
        (f"GET {summary_path} after", ", ".join(f"{x:.0f} ms" for x in result["listing_ms"]),
         ", ".join(f"{n>>20} MiB" for n in result["listing_bytes"])),
        ("late latency p50/p99/max", f"{result['late_ms_p50']:.1f}/{result['late_ms_p99']:.1f}/{result['late_ms_max'] or float('nan'):.1f} ms",
         f"{len(late)} of {len(stopped)} stopped hosts"),
        ("down latency p50/p99/max", f"{result['down_ms_p50']:.1f}/{result['down_ms_p99']:.1f}/{result['down_ms_max'] or float('nan'):.1f} ms",
         f"{len(down)} of {len(stopped)} stopped hosts"),
        ("  last beat after the first round", f"late {result['steady_late_ms_p50']:.1f}/{result['steady_late_ms_p99']:.1f}/"
         f"{result['steady_late_ms_max'] or float('nan'):.1f}, down {result['steady_down_ms_p50']:.1f}/"
         f"{result['steady_down_ms_p99']:.1f}/{result['steady_down_ms_max'] or float('nan'):.1f} ms",
         f"{len(late_steady)} hosts (the others' last beat came while the fleet joined)"),
        ("loadgen sent / server received", f"{result['loadgen_sent']} / {result['server_received']}",
         f"rate {result['loadgen_rate']}, errors {result['loadgen_errors']}, "
         f"sender max lag {result['loadgen_max_lag']}"),
        ("socket drops (kernel)", f"{result['socket_drops_total']}",
         f"{result['socket_drops_in_window']} in the window"),
        ("late events, whole fleet", f"{fleet_late}", "running hosts go late only if beats are lost"),
        ("load average (1 min)", f"{load0:.2f} → {load1:.2f}", "start → end of the window"),
        ("client RSS", f"{client_rss/1e6:.2f} MB", "beat 10s"),
        ("client CPU", f"{client_cpu:.2f} s", f"over {client_seconds:.0f} s ({client_cpu/client_seconds*100:.3f} %)"),
    ]
    for name, value, note in rows:
        print(f"  {name:<34} {value:<24} {note}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
