#!/usr/bin/env python3
"""scripts/autobahn/ws2http_echo_backend.py with a listen backlog of 1024 instead of socketserver's 5,
so that the soak run's burst of new sessions (each with its own backend connection) is not answered
with resets by the backend's kernel.

    ws2http_backend.py HOST:PORT
"""

import os
import sys
from http.server import ThreadingHTTPServer

ThreadingHTTPServer.request_queue_size = 1024
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "autobahn"))

import ws2http_echo_backend  # noqa: E402

if __name__ == "__main__":
    ws2http_echo_backend.main()
