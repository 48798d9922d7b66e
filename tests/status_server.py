"""An HTTP server whose answers a health check must judge: /s/CODE answers CODE, /moved redirects
to /s/200, /allowed-host answers 200 only to the Host header 127.0.0.1:PORT (else 400, as Django's
ALLOWED_HOSTS does). Run in a container by the health-check tests (tests/test_e2e_shapes.py):
    python status_server.py ADDRESS PORT"""

from __future__ import annotations

import http.server
import sys


class Statuses(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/allowed-host":
            allowed = self.headers["Host"] == f"127.0.0.1:{self.server.server_address[1]}"
            self.send_response(200 if allowed else 400)
        elif self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/s/200")
        else:
            self.send_response(int(self.path.rsplit("/", 1)[1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Statuses).serve_forever()
