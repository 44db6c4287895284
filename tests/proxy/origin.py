#!/usr/bin/env python3
"""A real HTTP origin for the proxy tests, on a loopback address.

  origin.py ADDRESS CONNLOG [--tls CERT KEY] [--static DIR]

Binds ADDRESS port 0, prints the port on stdout, and appends one line per
accepted connection to CONNLOG (so a test can prove a forbidden origin saw
nothing). Endpoints:
  GET  /small          100 bytes
  GET  /bytes/N        N bytes of a repeating pattern
  GET  /unsized/N      N bytes with no Content-Length, ended by closing
  GET  /chunked/N      N bytes, chunked
  GET  /drip/N         N chunks of one line, one each 100 ms (a streaming answer)
  GET  /trickle/N[/B]  B bytes at once (default 0), then N more, 100 each 100 ms;
                       sized (Content-Length)
  GET  /silent         no answer (the handler sleeps 30 s)
  GET  /dropafter      4 bytes, then the connection closes without notice
  GET  /early          a 103 (Early Hints), then 4 bytes
  GET  /earlyframed/cl the same, the 103 with Content-Length: 7 anyway
  GET  /earlyframed/te the same, the 103 with Transfer-Encoding: chunked anyway
  GET  /switch         a 101 (Switching Protocols) nobody asked for
  GET  /coded/A+B      "abc" with Transfer-Encoding: A, B
  GET  /hop            an answer with hop-by-hop fields (Connection also lists
                       Content-Length)
  GET  /lengthlist     "ok" with Content-Length: 2, 2
  GET  /lengthtwice    "ok" with two Content-Length: 2 fields
  GET  /coded10        a chunked "abc" in an HTTP/1.0 answer (faulty framing)
  GET  /lengthcoded    "abc" with both Content-Length: 3 and Transfer-Encoding: gzip
  GET  /status/NNN     an empty answer with status NNN (any three digits)
  GET  /framed/NNN/te  an empty answer with status NNN and Transfer-Encoding: chunked anyway
  GET  /framed/NNN/cl  an empty answer with status NNN and Content-Length: 5 anyway
  GET  /headers        the request line and headers it received, as text
  GET  /trailed        a chunked "ok" with trailer fields Host and Set-Cookie
  OPTIONS anything     the request line it received
  TRACE anything       the request line and headers it received (message/http)
  POST /sha256         the SHA-256 of the body (Content-Length or chunked)
  POST /trailers       a chunked body's trailer section as it came, as text
  POST /early413       a 413 before the body is read, then a close
  POST /cutoff         reads 64 KiB of the body, then closes without an answer
  POST /refuse         to Expect: 100-continue, a 401 and a close (no 100)
  POST /quiet          ignores Expect: 100-continue (no 100), then as /sha256
  POST /hinted         to Expect: 100-continue, a 103, then the 100; then as /sha256
  GET  /static/PATH    a file under DIR (a git "dumb HTTP" repository, say)
With --tls it speaks HTTPS with the given certificate.
  anything else        404, with the request line
Plain TCP bytes (a CONNECT tunnel's payload) get the same HTTP handling.
"""
import hashlib
import http.server
import os
import ssl
import socketserver
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with open(self.server.connlog, "a") as f:
            f.write("%s:%d\n" % self.client_address[:2])

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/small":
            return self.reply(200, b"x" * 100)
        if self.path.startswith("/bytes/"):
            n = int(self.path[7:])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = b"0123456789abcdef" * 65536
            while n > 0:
                self.wfile.write(block[:n])
                n -= min(n, len(block))
            return
        if self.path.startswith("/static/") and self.server.static:
            path = os.path.realpath(os.path.join(self.server.static, self.path[8:].split("?")[0]))
            if path.startswith(os.path.realpath(self.server.static)) and os.path.isfile(path):
                with open(path, "rb") as f:
                    return self.reply(200, f.read(), "application/octet-stream")
        if self.path.startswith("/oneshot/"):
            # Head and body in one write, so the proxy reads part of the body with the head.
            body = b"y" * int(self.path[9:])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
            return
        if self.path.startswith("/slowbody/"):
            # The head, then the body a moment later: the proxy must not lose it.
            body = b"z" * int(self.path[10:])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(body)
            return
        if self.path.startswith("/unsized/"):
            # No Content-Length: the body ends when the connection closes.
            body = b"u" * int(self.path[9:])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
            self.close_connection = True
            return
        if self.path.startswith("/chunked/"):
            # N bytes in chunks of at most 1000.
            n = int(self.path[9:])
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            while n > 0:
                k = min(n, 1000)
                self.wfile.write(b"%x\r\n%s\r\n" % (k, b"c" * k))
                n -= k
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/drip/"):
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for i in range(int(self.path[6:])):
                    self.wfile.write(b"6\r\ndrop%d\n\r\n" % (i % 10))
                    self.wfile.flush()
                    time.sleep(0.1)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the proxy ended the exchange
            return
        if self.path.startswith("/trickle/"):
            n, burst = (list(map(int, self.path[9:].split("/"))) + [0])[:2]
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (burst + n))
            try:
                self.wfile.write(b"b" * burst)
                for _ in range(n // 100):
                    self.wfile.write(b"t" * 99 + b"\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        if self.path == "/dropafter":
            # A whole answer that does not say it closes, then a close: what
            # an origin does when its idle timeout ends a kept connection.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop")
            self.close_connection = True
            return
        if self.path == "/early":
            # 103 Early Hints, then the answer.
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            return self.reply(200, b"late")
        if self.path.startswith("/earlyframed/"):
            # No 1xx has content (RFC 9110 8.6, RFC 9112 6.1); some origins frame one anyway.
            field = b"Transfer-Encoding: chunked" if self.path.endswith("/te") else b"Content-Length: 7"
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\n%s\r\n\r\n" % field)
            return self.reply(200, b"late")
        if self.path == "/switch":
            # Switches protocols though nobody asked (the proxy strips Upgrade).
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\nraw")
            self.close_connection = True
            return
        if self.path == "/upgrade":
            # Switches to the protocol asked for (Upgrade), which echoes,
            # else a plain answer: what a WebSocket server does.
            protocol = self.headers.get("Upgrade")
            if not protocol:
                return self.reply(200, b"no upgrade asked")
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: upgrade\r\n\r\n"
                             % protocol.encode())
            self.wfile.flush()
            while True:
                data = self.rfile.read1(65536)
                if not data:
                    break
                self.wfile.write(data)
                self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/coded/"):
            # An answer with the given Transfer-Encoding: a chunked body of
            # "abc" when that ends in chunked, else "abc" ended by closing.
            coding = self.path[len("/coded/"):].replace("+", ", ")
            body = b"3\r\nabc\r\n0\r\n\r\n" if coding.endswith("chunked") else b"abc"
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n%s" % (coding.encode(), body))
            self.close_connection = True
            return
        if self.path == "/hop":
            # Hop-by-hop fields, one of them named by Connection; Connection
            # also names Content-Length, which the proxy must keep.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: X-Hop, Content-Length\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                             b"Upgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
            return
        if self.path.startswith("/framed/"):
            # 204 and 304 say nothing of framing (RFC 9110 8.6); some origins do anyway.
            field = b"Transfer-Encoding: chunked" if self.path.endswith("/te") else b"Content-Length: 5"
            self.wfile.write(b"HTTP/1.1 %s X\r\n%s\r\n\r\n" % (self.path[8:11].encode(), field))
            return
        if self.path.startswith("/status/"):
            # Any three digits as the status, valid or not.
            self.wfile.write(b"HTTP/1.1 %s X\r\nContent-Length: 0\r\n\r\n" % self.path[8:11].encode())
            return
        if self.path == "/noreason":
            # No space after the code, the reason being empty (RFC 9112 4 wants one).
            self.wfile.write(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
            return
        if self.path == "/lengthlist":
            # One length, repeated as a list (RFC 9110 8.6 lets a recipient take it).
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")
            return
        if self.path == "/lengthtwice":
            # One length in two fields (the same, so Beast takes it).
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
            return
        if self.path == "/lengthcoded":
            # Both framings (RFC 9112 6.3: a sign of response splitting), in
            # the order Beast takes (it refuses a length before a coding).
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc")
            self.close_connection = True
            return
        if self.path == "/coded10":
            # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
            self.wfile.write(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            self.close_connection = True
            return
        if self.path == "/silent":
            # Takes the request and never answers (for the proxy's timeout).
            time.sleep(30)
            self.close_connection = True
            return
        if self.path.startswith("/manyfields/"):
            # An answer head of N fields of 100 bytes each.
            self.send_response(200)
            for i in range(int(self.path[12:])):
                self.send_header("X-Field-%d" % i, "%03d" % i + "v" * 97)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return
        if self.path == "/trailed":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                             b"Host: elsewhere.test\r\nSet-Cookie: a=b\r\n\r\n")
            return
        if self.path == "/headers":
            text = self.requestline + "\n" + "".join("%s: %s\n" % (k, v) for k, v in self.headers.items())
            return self.reply(200, text.encode())
        self.reply(404, b"not found: " + self.requestline.encode())

    do_HEAD = do_GET

    def do_OPTIONS(self):
        self.reply(200, self.requestline.encode())

    def do_TRACE(self):
        text = self.requestline + "\r\n" + "".join("%s: %s\r\n" % (k, v) for k, v in self.headers.items())
        self.reply(200, text.encode(), "message/http")

    def handle_expect_100(self):
        if self.path == "/refuse":
            self.close_connection = True
            self.reply(401, b"sign in first\n")
            return False
        if self.path == "/quiet":
            return True
        if self.path == "/hinted":
            self.send_response_only(103)
            self.send_header("Link", "</a.css>; rel=preload")
            self.end_headers()
        return super().handle_expect_100()

    def do_POST(self):
        if self.path == "/early413":
            # Refuses the body before reading it, and closes with it unread.
            self.close_connection = True
            return self.reply(413, b"too large\n")
        if self.path == "/cutoff":
            self.rfile.read(65536)
            self.close_connection = True
            return
        if self.path == "/trailers":
            while int(self.rfile.readline().strip().split(b";")[0], 16):
                self.rfile.readline()  # a test's chunk fits one line
            section = b""
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                section += line
            return self.reply(200, b"trailers:" + section)
        h = hashlib.sha256()
        size = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                if not line:
                    # Cut off mid-body (the proxy closes on a bad chunk): no answer.
                    self.close_connection = True
                    return
                n = int(line.strip().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = n
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        self.close_connection = True
                        return
                    h.update(data)
                    left -= len(data)
                size += n
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    break
                h.update(data)
                left -= len(data)
                size += len(data)
        self.reply(200, ("%s %d\n" % (h.hexdigest(), size)).encode())


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: a burst of connections past it
    # loses SYNs, each retried only after a second.
    request_queue_size = 512

    def handle_error(self, request, client_address):
        # A peer that closes first (a refused request, a cut body) is what
        # many tests do: no traceback for that in a failing test's output.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    address, connlog = sys.argv[1:3]
    opts = sys.argv[3:]
    if ":" in address:
        Server.address_family = __import__("socket").AF_INET6
    srv = Server((address, 0), Handler)
    srv.connlog = connlog
    srv.static = opts[opts.index("--static") + 1] if "--static" in opts else None
    if "--tls" in opts:
        i = opts.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(opts[i + 1], opts[i + 2])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    open(connlog, "a").close()
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
