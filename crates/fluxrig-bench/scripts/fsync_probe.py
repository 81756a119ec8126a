#!/usr/bin/env python3
"""The disk's own latency during a benchmark: write 313 bytes + fdatasync, one at a time, until killed (SIGTERM); prints
count p50 p99 max in ms. Same file system as the Rack's data dir."""
import os, signal, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
buf = b"x" * 313
lat = []
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
while not stop:
    t = time.perf_counter()
    os.write(fd, buf)
    os.fdatasync(fd)
    lat.append((time.perf_counter() - t) * 1000)
    time.sleep(0.005)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{len(lat)} {q(0.5):.3f} {q(0.99):.3f} {lat[-1]:.3f}", flush=True)
os.close(fd)
os.unlink(path)
