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

For each it samples /proc/PID/status every second and reports VmRSS (with
its RssAnon and RssFile parts) 2 s after start and at the end, the largest
VmRSS seen, CPU time (utime+stime, 10 ms ticks) over the whole run and over
the steady part (from 2 s on), and the datagrams its receiver got. Then it
stops each client with SIGTERM (lubdub sends a goodbye) and checks that
every client beat. Loopback only; every wait is bounded. Prints a table and
one JSON line.

Usage: bench/client_rss.py [--bin target/release/lubdub] [--seconds 65]
"""

import argparse
import json
import os
import shutil
import signal
import socket
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
    """VmRSS, RssAnon and RssFile in KiB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
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
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin}: no such binary; run `cargo build --release` first")
    python = shutil.which("python3") or sys.executable
    sleep = shutil.which("sleep")

    tmp = tempfile.mkdtemp(prefix="lubdub-client-rss-")
    keys = os.path.join(tmp, "keys")
    subprocess.run([args.bin, "keygen", keys], check=True, stdout=subprocess.DEVNULL)

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
    header = ("", "VmRSS 2s", "anon+file", "VmRSS end", "anon+file", "max", "CPU all", "CPU 2s-end", "datagrams")
    print("{:26s} {:>9s} {:>11s} {:>9s} {:>11s} {:>7s} {:>8s} {:>10s} {:>9s}".format(*header))
    out = {"seconds": seconds, "load_start": load_start, "load_end": load_end, "clients": []}
    failed = False
    for row in rows:
        s, e = row["start"], row["end"]
        steady = row["cpu"] - row["cpu_at_2s"]
        print("{:26s} {:>6d} kB {:>4d}+{:<6d} {:>6d} kB {:>4d}+{:<6d} {:>7d} {:>7.2f}s {:>9.2f}s {:>9s}".format(
            row["name"], s["VmRSS"], s["RssAnon"], s["RssFile"], e["VmRSS"], e["RssAnon"],
            e["RssFile"], row["max_rss"], row["cpu"], steady,
            str(row["datagrams"]) if row["sock"] is not None else "-"))
        out["clients"].append({
            "name": row["name"], "rss_kib_2s": s, "rss_kib_end": e, "max_rss_kib": row["max_rss"],
            "cpu_seconds": row["cpu"], "cpu_seconds_steady": steady,
            "datagrams": row["datagrams"] if row["sock"] is not None else None,
            "exit": row["status"],
        })
        if row["sock"] is not None and row["datagrams"] < int(seconds // 10):
            print(f"  {row['name']}: only {row['datagrams']} datagrams in {seconds:.0f} s", file=sys.stderr)
            failed = True
        if row["name"].startswith("lubdub") and row["status"] != 0:
            print(f"  {row['name']}: exit {row['status']} on SIGTERM", file=sys.stderr)
            failed = True
    print(json.dumps(out))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
