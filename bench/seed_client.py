#!/usr/bin/env python3
"""The seed's client (PyHeartBeat's PyHBClient.py), ported to Python 3.

Kept ONLY as a baseline for lubdub's benchmarks (bench/client_rss.py,
docs/BENCHMARKS.md); it is not part of lubdub. It is the seed's program as
it was, with the two changes Python 3 needs: print() is a function, and
the datagram and the port are bytes and an int. Run with -O for the seed's
quiet mode (no line per beat), as the seed itself suggests.

    seed_client.py serverip [udpport]
"""

from socket import socket, AF_INET, SOCK_DGRAM
from time import time, ctime, sleep
import sys

SERVERIP = '127.0.0.1'    # local host, just for testing
HBPORT = 43278            # an arbitrary UDP port
BEATWAIT = 10             # number of seconds between heartbeats

if len(sys.argv) > 1:
    SERVERIP = sys.argv[1]
if len(sys.argv) > 2:
    HBPORT = int(sys.argv[2])

hbsocket = socket(AF_INET, SOCK_DGRAM)
print("PyHeartBeat client sending to IP %s , port %d" % (SERVERIP, HBPORT))
print("\n*** Press Ctrl-C to terminate ***\n")
while 1:
    hbsocket.sendto(b'Thump!', (SERVERIP, HBPORT))
    if __debug__:
        print("Time: %s" % ctime(time()))
    sleep(BEATWAIT)
