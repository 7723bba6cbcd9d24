"""`/health` of the stream bridge: 200 while it is connected to the broker, 503 otherwise, with its counters
as JSON (for a container health check and a person alike)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def serve(address: str, port: int, status: Callable[[], dict]) -> ThreadingHTTPServer:
    """Serve `status()` on http://address:port/health from a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/health":
                self.send_error(404, "only /health is served here")
                return
            state = status()
            body = json.dumps(state).encode()
            self.send_response(200 if state["connected"] else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # a health check every few seconds is not worth a log line
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
