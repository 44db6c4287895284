#!/usr/bin/env python3
"""File work on one folder, timed: small files created, stat'ed and deleted,
and one large file written (flushed) and read back. Run by share_bench.sh on
the host and in a sandbox, on the workspace and on the guest's own tmpfs.

    share_bench.py DIR [--files N] [--mib M]   -> one JSON line
"""
import argparse, json, os, time

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--files", type=int, default=2000)
ap.add_argument("--mib", type=int, default=256)
a = ap.parse_args()
d = os.path.join(a.dir, "share-bench-%d" % os.getpid())
os.makedirs(d)
payload = b"x" * 100

t = time.perf_counter()
for i in range(a.files):
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(payload)
create = time.perf_counter() - t
t = time.perf_counter()
for i in range(a.files):
    os.stat(os.path.join(d, "f%d" % i))
stat = time.perf_counter() - t
t = time.perf_counter()
for i in range(a.files):
    os.unlink(os.path.join(d, "f%d" % i))
unlink = time.perf_counter() - t

block = os.urandom(1 << 20)
big = os.path.join(d, "big")
t = time.perf_counter()
with open(big, "wb") as f:
    for _ in range(a.mib):
        f.write(block)
    f.flush()
    os.fsync(f.fileno())
write = time.perf_counter() - t
t = time.perf_counter()
with open(big, "rb", buffering=0) as f:
    while f.read(1 << 20):
        pass
read = time.perf_counter() - t
os.unlink(big)
os.rmdir(d)
print(json.dumps({
    "create_per_s": a.files / create, "stat_per_s": a.files / stat, "unlink_per_s": a.files / unlink,
    "write_mib_s": a.mib / write, "read_mib_s": a.mib / read,
}))
