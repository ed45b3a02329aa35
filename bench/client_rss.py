#!/usr/bin/env python3
"""Client footprint: resident memory and CPU of `lubdub client` at a 10 s
beat, beside the seed's own client (bench/seed_client.py) in the same run.

Builds nothing: it runs an existing binary (default target/release/lubdub;
`cargo build --release` first). Starts, side by side and each beating to
its own loopback UDP receiver opened here:

  * lubdub client 127.0.0.1:PORT   (an address: never resolved)
  * lubdub client localhost:PORT   (a name: resolved on a helper thread)
  * lubdub client ... --key-file   (every beat signed, HMAC-SHA-256)
  * the seed's client, Python 3, in the seed's quiet mode (-O)
  * /bin/sleep, for reference: what any dynamically linked program costs
    here (the C library and the loader mapped), the floor under the others

Each runs as --instances processes (default 3): where the kernel maps code
in 64 KiB blocks depends on each process's random load address, so the
resident size varies by a few 64 KiB blocks from one process to the next.
It samples /proc/PID/status every second and reports, per row, the median
and the largest VmRSS (with the median's RssAnon and RssFile parts) 2 s
after start and at the end, the largest VmRSS seen at any sample, the
median's Pss at the end (/proc/PID/smaps_rollup: shared library pages
divided among the processes mapping them), the most
CPU time (utime+stime, 10 ms ticks) any instance used over the whole run
and over the steady part (from 2 s on), and the fewest datagrams any
instance's receiver got. Then it stops every process with SIGTERM (lubdub
sends a goodbye) and checks that every client beat and every lubdub exited
0. Loopback only; every wait is bounded. Prints a table and one JSON line.

Usage: bench/client_rss.py [--bin target/release/lubdub] [--seconds 65] [--instances 3]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[11], [12] are utime, stime (14th, 15th of the full line)
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_kib(pid):
    """VmRSS, RssAnon and RssFile, and Pss (shared pages divided among the
    processes that map them), in KiB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                found[key] = int(value.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Pss":
                found[key] = int(value.split()[0])
    return found


def drain(sock):
    n = 0
    while True:
        try:
            sock.recv(2048)
            n += 1
        except BlockingIOError:
            return n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/release/lubdub")
    parser.add_argument("--seconds", type=float, default=65.0,
                        help="how long the clients run (default 65: six or seven beats)")
    parser.add_argument("--instances", type=int, default=3,
                        help="processes per row (default 3)")
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin}: no such binary; run `cargo build --release` first")
    python = shutil.which("python3") or sys.executable
    sleep = shutil.which("sleep")

    tmp = tempfile.mkdtemp(prefix="lubdub-client-rss-")
    keys = os.path.join(tmp, "keys")
    subprocess.run([args.bin, "keygen", keys], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)

    def receiver():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s, s.getsockname()[1]

    lubdub = [args.bin, "client", "--interval", "10s", "--host-id", "bench-client", "-q"]
    rows = []
    for name, command in [
        ("lubdub client (address)", lambda p: lubdub + [f"127.0.0.1:{p}"]),
        ("lubdub client (name)", lambda p: lubdub + [f"localhost:{p}"]),
        ("lubdub client (signed)", lambda p: lubdub + [f"127.0.0.1:{p}", "--key-file", keys]),
        ("seed client (Python 3)", lambda p: [python, "-O", os.path.join(HERE, "seed_client.py"), "127.0.0.1", str(p)]),
        ("/bin/sleep (floor)", None),
    ]:
        for _ in range(args.instances):
            sock, port = receiver()
            argv = command(port) if command else [sleep, str(int(args.seconds) + 30)]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env={"PATH": os.environ.get("PATH", "")})
            rows.append({"name": name, "proc": proc, "sock": sock if command else None,
                         "datagrams": 0, "max_rss": 0})

    load_start = open("/proc/loadavg").read().split()[:3]
    start = time.monotonic()
    sampled_start = False
    while True:
        elapsed = time.monotonic() - start
        for row in rows:
            pid = row["proc"].pid
            if row["proc"].poll() is not None:
                sys.exit(f"{row['name']} exited early: {row['proc'].stderr.read().decode()}")
            mem = memory_kib(pid)
            row["max_rss"] = max(row["max_rss"], mem.get("VmRSS", 0))
            if row["sock"] is not None:
                row["datagrams"] += drain(row["sock"])
            if not sampled_start and elapsed >= 2.0:
                row["start"] = mem
                row["cpu_at_2s"] = cpu_seconds(pid)
            if elapsed >= args.seconds:
                row["end"] = mem
                row["cpu"] = cpu_seconds(pid)
        if elapsed >= 2.0:
            sampled_start = True
        if elapsed >= args.seconds:
            break
        time.sleep(1.0)
    seconds = time.monotonic() - start
    load_end = open("/proc/loadavg").read().split()[:3]

    for row in rows:
        row["proc"].send_signal(signal.SIGTERM)
    for row in rows:
        try:
            row["status"] = row["proc"].wait(timeout=10)
        except subprocess.TimeoutExpired:
            row["proc"].kill()
            row["status"] = "killed"
        if row["sock"] is not None:
            time.sleep(0.05)
            row["datagrams"] += drain(row["sock"])
            row["sock"].close()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"nproc {os.cpu_count()}; load average {' '.join(load_start)} at start, "
          f"{' '.join(load_end)} at end; {seconds:.0f} s run, beat 10 s")
    header = ("", "VmRSS 2s", "max", "VmRSS end", "anon+file", "max", "max seen",
              "Pss end", "CPU all", "CPU 2s-end", "datagrams")
    print("{:26s} {:>9s} {:>6s} {:>9s} {:>11s} {:>6s} {:>8s} {:>7s} {:>8s} {:>10s} {:>9s}".format(*header))
    out = {"seconds": seconds, "instances": args.instances, "load_start": load_start,
           "load_end": load_end, "clients": []}
    failed = False
    for name in dict.fromkeys(row["name"] for row in rows):
        group = [row for row in rows if row["name"] == name]
        start_rss = [row["start"]["VmRSS"] for row in group]
        end_rss = [row["end"]["VmRSS"] for row in group]
        median = sorted(group, key=lambda row: row["end"]["VmRSS"])[len(group) // 2]["end"]
        cpu = max(row["cpu"] for row in group)
        steady = max(row["cpu"] - row["cpu_at_2s"] for row in group)
        sending = group[0]["sock"] is not None
        datagrams = min(row["datagrams"] for row in group) if sending else None
        print("{:26s} {:>6d} kB {:>6d} {:>6d} kB {:>4d}+{:<6d} {:>6d} {:>8d} {:>7d} {:>7.2f}s {:>9.2f}s {:>9s}".format(
            name, int(statistics.median(start_rss)), max(start_rss), int(statistics.median(end_rss)),
            median["RssAnon"], median["RssFile"], max(end_rss), max(row["max_rss"] for row in group),
            median["Pss"], cpu, steady, "-" if datagrams is None else str(datagrams)))
        out["clients"].append({
            "name": name, "vmrss_kib_2s": start_rss, "vmrss_kib_end": end_rss,
            "median_end": median, "max_rss_kib": max(row["max_rss"] for row in group),
            "cpu_seconds": cpu, "cpu_seconds_steady": steady, "datagrams": datagrams,
            "exits": [row["status"] for row in group],
        })
        if sending and datagrams < int(seconds // 10):
            print(f"  {name}: only {datagrams} datagrams in {seconds:.0f} s", file=sys.stderr)
            failed = True
        if name.startswith("lubdub") and any(row["status"] != 0 for row in group):
            print(f"  {name}: exit {[row['status'] for row in group]} on SIGTERM", file=sys.stderr)
            failed = True
    print(json.dumps(out))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
