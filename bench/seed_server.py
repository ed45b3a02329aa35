#!/usr/bin/env python3
"""The seed's (PyHeartBeat's PyHBServer.py) receive path, ported to Python 3.

Kept ONLY as a baseline for lubdub's benchmarks (docs/BENCHMARKS.md); it is
not part of lubdub. What is kept from the seed, as it was:
  * BeatDict: a dict {ip: time()} whose update() and extractSilent() take
    one Lock each call;
  * BeatRec: a Thread whose run() loops `while goOnEvent.is_set()` over
    recvfrom(6) and calls update(addr[0]) per datagram.

Modes (each prints one JSON line):
  --fd FD --count N   drain N datagrams from an already bound (and already
                      filled) UDP socket inherited as file descriptor FD,
                      through BeatRec; reports the drain rate.
  --scan N            time extractSilent() over an N-entry dictionary (the
                      seed's main thread does this every 30 s, lock held).
  --memory N          bytes the seed's {ip: time} dictionary takes for N hosts.
"""

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import tracemalloc


class BeatDict:
    "Manage heartbeat dictionary (as the seed)"

    def __init__(self):
        self.beatDict = {}
        self.dictLock = threading.Lock()

    def update(self, entry):
        "Create or update a dictionary entry"
        self.dictLock.acquire()
        self.beatDict[entry] = time.time()
        self.dictLock.release()

    def extractSilent(self, howPast):
        "Returns a list of entries older than howPast"
        silent = []
        when = time.time() - howPast
        self.dictLock.acquire()
        for key in self.beatDict.keys():
            if self.beatDict[key] < when:
                silent.append(key)
        self.dictLock.release()
        return silent


class BeatRec(threading.Thread):
    "Receive UDP packets, log them in heartbeat dictionary (as the seed)"

    def __init__(self, goOnEvent, updateDictFunc, sock, count):
        threading.Thread.__init__(self)
        self.goOnEvent = goOnEvent
        self.updateDictFunc = updateDictFunc
        self.recSocket = sock
        # Not in the seed: a bound, so the benchmark ends when the prefilled
        # traffic is drained instead of blocking forever.
        self.count = count
        self.received = 0

    def run(self):
        while self.goOnEvent.is_set() and self.received < self.count:
            try:
                data, addr = self.recSocket.recvfrom(6)
            except socket.timeout:
                break
            self.updateDictFunc(addr[0])
            self.received += 1


def drain(fd, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=fd)
    sock.settimeout(1.0)  # the buffer is full before we start: 1 s = empty
    go_on = threading.Event()
    go_on.set()
    beats = BeatDict()
    rec = BeatRec(go_on, beats.update, sock, count)
    start, cpu_start = time.perf_counter(), time.process_time()
    rec.start()
    rec.join()
    seconds = time.perf_counter() - start
    # CPU time is robust on a shared machine; the join() wait uses none.
    cpu = time.process_time() - cpu_start
    if rec.received < count:
        seconds -= 1.0  # the final timeout was waiting, not draining
    sock.detach()  # the benchmark owns the socket
    return {
        "mode": "drain",
        "received": rec.received,
        "seconds": seconds,
        "rate": rec.received / seconds if seconds > 0 else 0.0,
        "cpu_seconds": cpu,
        "cpu_rate": rec.received / cpu if cpu > 0 else 0.0,
        "hosts": len(beats.beatDict),
    }


def ip(i):
    return "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


def scan(n, rounds=5):
    beats = BeatDict()
    now = time.time()
    # Every 100th host silent: the seed's usual case is a few silent hosts.
    for i in range(n):
        beats.beatDict[ip(i)] = now - (100.0 if i % 100 == 0 else 0.0)
    times, cpu = [], []
    for _ in range(rounds):
        start, cpu_start = time.perf_counter(), time.process_time()
        silent = beats.extractSilent(30)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return {
        "mode": "scan",
        "entries": n,
        "silent": len(silent),
        "median_seconds": statistics.median(times),
        "median_cpu_seconds": statistics.median(cpu),
        "rounds": rounds,
    }


def memory(n):
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    d = {}
    now = time.time()
    for i in range(n):
        d[ip(i)] = now + i  # distinct floats, as real beat times are
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "mode": "memory",
        "entries": len(d),
        "bytes": after - before,
        "bytes_per_host": (after - before) / n,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int)
    parser.add_argument("--count", type=int)
    parser.add_argument("--scan", type=int, metavar="N")
    parser.add_argument("--memory", type=int, metavar="N")
    args = parser.parse_args()
    if args.fd is not None and args.count:
        result = drain(args.fd, args.count)
    elif args.scan:
        result = scan(args.scan)
    elif args.memory:
        result = memory(args.memory)
    else:
        parser.error("give --fd and --count, --scan N, or --memory N")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
