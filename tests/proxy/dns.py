#!/usr/bin/env python3
"""A real DNS server for the proxy tests, over UDP and TCP on 127.0.0.1.

  dns.py ZONE QUERYLOG [ADDRESS [PORT]]

Binds ADDRESS (default 127.0.0.1) on PORT, or on a port free for UDP and TCP
alike, prints the port on stdout, and appends
"NAME TYPE" to QUERYLOG for every question it gets ("NAME TYPE tcp" over TCP). ZONE is a JSON file, read again for every
question (so a test changes answers by rewriting it):

  {"name.test": {"A": [["127.0.0.1", TTL], ...], "AAAA": [["::1", TTL]],
                 "CNAME": ["other.test", TTL],
                 "drop": true,         (no answer at all: the asker times out)
                 "delay": SECONDS,     (the answer is sent this much later)
                 "truncate": true,     (over UDP an empty answer marked truncated,
                                        so the asker asks again over TCP)
                 "servfail": true}}

A name not in ZONE gets NXDOMAIN; a name with no records of the type asked
gets an empty answer (NODATA). A CNAME is answered with its target's records
of the type asked, in the same message.
"""
import json
import socket
import struct
import sys
import threading

TYPES = {1: "A", 5: "CNAME", 28: "AAAA"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_question(msg):
    at, labels = 12, []
    while msg[at]:
        labels.append(msg[at + 1:at + 1 + msg[at]].decode())
        at += 1 + msg[at]
    qtype, qclass = struct.unpack("!HH", msg[at + 1:at + 5])
    return ".".join(labels).lower(), qtype, qclass, msg[12:at + 5]


def record(name, rtype, ttl, data):
    return encode_name(name) + struct.pack("!HHIH", rtype, 1, ttl, len(data)) + data


def answer(zone, name, qtype):
    """(rcode, [records]) for a question, following one CNAME."""
    entry = zone.get(name)
    if entry is None:
        return 3, []
    if entry.get("servfail"):
        return 2, []
    records = []
    if "CNAME" in entry:
        target, ttl = entry["CNAME"]
        records.append(record(name, 5, ttl, encode_name(target)))
        if qtype == 5:
            return 0, records
        name, entry = target, zone.get(target, {})
    kind = TYPES.get(qtype)
    for address, ttl in entry.get(kind, []) if kind in ("A", "AAAA") else []:
        family = socket.AF_INET if kind == "A" else socket.AF_INET6
        records.append(record(name, qtype, ttl, socket.inet_pton(family, address)))
    return 0, records


def respond(msg, transport, log_path, zone_path):
    """The reply to one question, or None for no reply."""
    (ident,) = struct.unpack("!H", msg[:2])
    name, qtype, _, question = read_question(msg)
    with open(log_path, "a") as log:
        log.write("%s %s%s\n" % (name, TYPES.get(qtype, qtype), " tcp" if transport == "tcp" else ""))
    with open(zone_path) as f:
        zone = json.load(f)
    entry = zone.get(name, {})
    if entry.get("drop"):
        return None, 0
    flags = 0x8180
    if transport == "udp" and entry.get("truncate"):
        flags, records = flags | 0x0200, []
    else:
        rcode, records = answer(zone, name, qtype)
        flags |= rcode
    head = struct.pack("!HHHHHH", ident, flags, 1, len(records), 0, 0)
    return head + question + b"".join(records), entry.get("delay", 0)


def serve_tcp(listener, log_path, zone_path):
    while True:
        conn, _ = listener.accept()
        with conn:
            f = conn.makefile("rb")
            while True:
                size = f.read(2)
                if len(size) < 2:
                    break
                msg = f.read(struct.unpack("!H", size)[0])
                reply, _ = respond(msg, "tcp", log_path, zone_path)
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)


def main():
    zone_path, log_path = sys.argv[1], sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    while True:  # a port free for both UDP and TCP
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, port))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((address, sock.getsockname()[1]))
            break
        except OSError:
            sock.close()
            listener.close()
            if port:
                raise
    listener.listen(16)
    threading.Thread(target=serve_tcp, args=(listener, log_path, zone_path), daemon=True).start()
    print(sock.getsockname()[1], flush=True)
    while True:
        msg, peer = sock.recvfrom(4096)
        if len(msg) < 17:
            continue
        reply, delay = respond(msg, "udp", log_path, zone_path)
        if reply is None:
            continue
        if delay:
            threading.Timer(delay, sock.sendto, (reply, peer)).start()
        else:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
