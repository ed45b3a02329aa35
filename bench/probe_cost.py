"""The server CPU that probing costs (issue 15), measured on loopback.

One server (`--probes` off at first, through a config file) and
`lubdub loadgen --loss P --answers-probes`: every host says it answers
probes, and each beat is skipped with probability P, as a lossy network
drops it. Once the fleet is known, the server's CPU (utime+stime from
/proc) is measured over a window with probing off; then the config turns
probing on, SIGHUP reloads it, and after a settle the same window is
measured again, with the probes sent per second (`/metrics`). Same run,
same load: the difference is probing.

The load generator does not answer probes, so every suspicion runs until
the host's next beat: the most probes a suspicion can cost (a real client
answers the first probe that gets through). Loopback only.

    python3 bench/probe_cost.py --bin target/release/lubdub --hosts 1000000
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from live import cpu_seconds, get, metric, stop_all, wait_line  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/lubdub")
    ap.add_argument("--hosts", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds")
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--window", type=float, default=30.0, help="CPU window, seconds")
    ap.add_argument("--settle", type=float, default=20.0,
                    help="seconds after turning probing on before its window")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "server.toml")

        def write_config(probes):
            with open(config, "w") as f:
                f.write(f"[server.probe]\nenabled = {'true' if probes else 'false'}\n")

        write_config(False)
        server_out = os.path.join(tmp, "server.out")
        procs = []
        try:
            server = subprocess.Popen(
                [args.bin, "server", "--config", config, "--listen", "127.0.0.1:0",
                 "--http", "127.0.0.1:0", "--data-dir", tmp, "-q"],
                stdout=open(server_out, "w"), stderr=subprocess.STDOUT)
            procs.append(server)
            m = wait_line(server_out, r"listening udp=(\S+) http=(\S+)", 30)
            udp, http = m.group(1), m.group(2)
            loadgen = subprocess.Popen(
                [args.bin, "loadgen", udp, "--hosts", str(args.hosts),
                 "--interval", f"{args.interval}s", "--duration", "3600s",
                 "--loss", str(args.loss), "--answers-probes"],
                stdout=open(os.path.join(tmp, "loadgen.out"), "w"), stderr=subprocess.STDOUT)
            procs.append(loadgen)

            def known():
                return json.loads(get(f"http://{http}/healthz")[1])["hosts"]

            start = time.monotonic()
            while known() < args.hosts * 0.99 and time.monotonic() < start + 10 * args.interval + 60:
                time.sleep(0.5)
            time.sleep(2 * args.interval)  # joins over, every host beaten twice

            def window():
                sent0 = metric(http, "lubdub_probes_sent_total") or 0.0
                limited0 = metric(http, "lubdub_probes_rate_limited_total") or 0.0
                beats0 = metric(http, "lubdub_beats_total") or 0.0
                cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
                time.sleep(args.window)
                cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
                sent1 = metric(http, "lubdub_probes_sent_total") or 0.0
                limited1 = metric(http, "lubdub_probes_rate_limited_total") or 0.0
                beats1 = metric(http, "lubdub_beats_total") or 0.0
                dt = t1 - t0
                return {
                    "cpu_share": (cpu1 - cpu0) / dt,
                    "beats_per_s": (beats1 - beats0) / dt,
                    "probes_per_s": (sent1 - sent0) / dt,
                    "rate_limited_per_s": (limited1 - limited0) / dt,
                    "load": os.getloadavg()[0],
                }

            off = window()
            write_config(True)
            server.send_signal(signal.SIGHUP)
            time.sleep(args.settle)
            on = window()
            print(json.dumps({"hosts_known": known(), "hosts": args.hosts,
                              "loss": args.loss, "window_s": args.window,
                              "off": off, "on": on}, indent=1))
        finally:
            stop_all(procs, timeout=60)


if __name__ == "__main__":
    main()
