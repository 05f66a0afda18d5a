"""A service's own metrics endpoint for the /metrics/services tests: serves the bytes of
--body on every GET (any path), over each --unix socket and/or on 127.0.0.1:--tcp.

--delay S waits S seconds before answering (a slow target); --no-length answers
without Content-Length, ending the body by closing the connection (so a reader must
bound what it reads itself)."""

import argparse
import http.server
import os
import socketserver
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("--unix", action="append", default=[])
p.add_argument("--tcp", type=int)
p.add_argument("--body", required=True)
p.add_argument("--delay", type=float, default=0.0)
p.add_argument("--no-length", action="store_true")
args = p.parse_args()

with open(args.body, "rb") as f:
    BODY = f.read()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if args.delay:
            time.sleep(args.delay)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        if not args.no_length:
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        try:
            self.wfile.write(BODY)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *a):
        pass

    def address_string(self):
        return "unix"


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


class TcpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


servers = []
for path in args.unix:
    if os.path.exists(path):
        os.unlink(path)
    servers.append(UnixServer(path, Handler))
if args.tcp is not None:
    servers.append(TcpServer(("127.0.0.1", args.tcp), Handler))
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
