#!/usr/bin/env python3
"""What an idle connection costs the proxy: a sandgate proxy (pinned to CPU 1,
logging on), a loopback origin that accepts and holds connections, and N
clients that open a CONNECT tunnel (opaque, or carrying one plain GET, so
followed as HTTP), or send one keep-alive GET, and then stay silent. The proxy's resident memory before and after, per connection:

    bench/idle_bench.py [--sandgate BIN] [--count N]   -> a table and one JSON line

Memory is the proxy's VmRSS (user space: sessions, buffers, coroutine
frames); the kernel's share (socket buffers, a tunnel's two pipes) is not in
it and is reported from /proc/meminfo's Slab as a system-wide figure.
Everything runs on 127.0.0.1 and ends within a minute.
"""
import argparse, json, os, resource, shutil, signal, socket, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap.add_argument("--sandgate", default=os.path.join(here, "build/release/cli/sandgate"))
ap.add_argument("--count", type=int, default=1000)
a = ap.parse_args()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * a.count + 256)), hard))


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


# The origin: accepts and holds every connection; answers a GET with a small
# keep-alive response.
origin = socket.socket()
origin.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
origin.bind(("127.0.0.1", 0))
origin.listen(4096)
origin_port = origin.getsockname()[1]
held = []


def serve_origin():
    while True:
        try:
            c, _ = origin.accept()
        except OSError:
            return
        held.append(c)
        threading.Thread(target=answer, args=(c,), daemon=True).start()


def answer(c):
    try:
        data = c.recv(4096)
        if data.startswith(b"GET"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass


threading.Thread(target=serve_origin, daemon=True).start()

def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


work = tempfile.mkdtemp()
proxy = None
try:
    with open(os.path.join(work, "policy.yaml"), "w") as f:
        f.write('version: 1\nmode: deny\nallow_hosts:\n  - "origin.idle.test:%d"\nallow_cidrs:\n  - 127.0.0.1/32\n'
                % origin_port)
    with open(os.path.join(work, "hosts"), "w") as f:
        f.write("127.0.0.1 origin.idle.test\n")

    def start_proxy():
        """A fresh proxy for each kind, so one kind's freed memory does not serve the next."""
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        proxy_port = probe.getsockname()[1]
        probe.close()
        proxy = subprocess.Popen(
            ["taskset", "-c", "1", a.sandgate, "proxy", "--config", os.path.join(work, "policy.yaml"),
             "--hosts-file", os.path.join(work, "hosts"), "--listen", "127.0.0.1:%d" % proxy_port, "--threads", "1",
             "--max-connections", str(4 * a.count),
             "--log", os.path.join(work, "log/network.jsonl"), "--log-key", os.path.join(work, "keys/log.key")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "proxy.err"), "w"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", proxy_port), timeout=1).close()
                break
            except OSError:
                if proxy.poll() is not None:
                    raise SystemExit("idle_bench: the proxy did not start: " + open(os.path.join(work, "proxy.err")).read())
                time.sleep(0.05)
        return proxy, proxy_port

    target = "origin.idle.test:%d" % origin_port

    def open_clients(kind, proxy_port):
        clients = []
        for _ in range(a.count):
            s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
            if kind in ("tunnel", "http-tunnel"):
                s.sendall(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
            else:
                s.sendall(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), target.encode()))
            got = b""
            while b"\r\n\r\n" not in got or (kind == "http" and not got.endswith(b"ok")):
                chunk = s.recv(4096)
                if not chunk:
                    raise SystemExit("idle_bench: the proxy closed a %s: %r" % (kind, got[:200]))
                got += chunk
            if b" 200 " not in got.split(b"\r\n", 1)[0]:
                raise SystemExit("idle_bench: the proxy answered %r" % got.split(b"\r\n", 1)[0])
            if kind == "tunnel":
                s.sendall(b"PING\r\n")  # a first flight (not TLS: nothing to compare), then quiet
            elif kind == "http-tunnel":
                # One GET through the tunnel (so it is followed as HTTP), its answer, then quiet.
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % target.encode())
                got = b""
                while not got.endswith(b"ok"):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise SystemExit("idle_bench: the proxy closed an http-tunnel: %r" % got[:200])
                    got += chunk
            clients.append(s)
        return clients

    results = {}
    for kind in ("tunnel", "http-tunnel", "http"):
        proxy, proxy_port = start_proxy()
        time.sleep(0.5)
        rss0, anon0, slab0 = status_kib(proxy.pid, "VmRSS"), status_kib(proxy.pid, "RssAnon"), slab_kib()
        clients = open_clients(kind, proxy_port)
        time.sleep(0.5)
        rss1, anon1, slab1 = status_kib(proxy.pid, "VmRSS"), status_kib(proxy.pid, "RssAnon"), slab_kib()
        results[kind] = {"count": a.count, "rss_before_kib": rss0, "rss_after_kib": rss1,
                         "rss_kib_per_conn": round((rss1 - rss0) / a.count, 2),
                         "anon_kib_per_conn": round((anon1 - anon0) / a.count, 2),
                         "system_slab_kib_per_conn": round((slab1 - slab0) / a.count, 2)}
        for c in clients:
            c.close()
        for c in held:
            c.close()
        held.clear()
        stop(proxy)
        proxy = None
    print("idle connections   count  VmRSS before -> after (KiB)  KiB/conn (RssAnon)  kernel slab KiB/conn (system-wide)")
    for kind, r in results.items():
        print("%-17s  %5d  %6d -> %6d              %6.2f (%6.2f)      %6.2f" % (
            kind, r["count"], r["rss_before_kib"], r["rss_after_kib"], r["rss_kib_per_conn"],
            r["anon_kib_per_conn"], r["system_slab_kib_per_conn"]))
    print(json.dumps({"idle": results}))
finally:
    if proxy:
        stop(proxy)
    origin.close()
    shutil.rmtree(work, ignore_errors=True)
