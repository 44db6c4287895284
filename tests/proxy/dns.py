#!/usr/bin/env python3
"""A real DNS server for the proxy tests, over UDP on 127.0.0.1.

  dns.py ZONE QUERYLOG

Binds port 0, prints the port on stdout, and appends "NAME TYPE" to QUERYLOG
for every question it gets. ZONE is a JSON file, read again for every
question (so a test changes answers by rewriting it):

  {"name.test": {"A": [["127.0.0.1", TTL], ...], "AAAA": [["::1", TTL]],
                 "CNAME": ["other.test", TTL],
                 "drop": true,         (no answer at all: the asker times out)
                 "delay": SECONDS,     (the answer is sent this much later)
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


def main():
    zone_path, log_path = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    while True:
        msg, peer = sock.recvfrom(4096)
        if len(msg) < 17:
            continue
        (ident,) = struct.unpack("!H", msg[:2])
        name, qtype, _, question = read_question(msg)
        with open(log_path, "a") as log:
            log.write("%s %s\n" % (name, TYPES.get(qtype, qtype)))
        with open(zone_path) as f:
            zone = json.load(f)
        if zone.get(name, {}).get("drop"):
            continue
        rcode, records = answer(zone, name, qtype)
        head = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, len(records), 0, 0)
        reply = head + question + b"".join(records)
        delay = zone.get(name, {}).get("delay", 0)
        if delay:
            threading.Timer(delay, sock.sendto, (reply, peer)).start()
        else:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
