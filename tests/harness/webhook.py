"""A real HTTP receiver for alert webhooks, on an address the nodes can reach."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class WebhookReceiver:
    """Records every POSTed JSON body; stopped with stop()."""

    def __init__(self, host: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver.lock:
                    receiver.messages.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m.get("subject", "")) for m in self.messages]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
