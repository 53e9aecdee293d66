"""Run uvicorn on an inherited listening socket: `python _uvicorn.py FD APP_DIR module:attr`.

`socket.socket(fileno=FD)` detects the socket's family. uvicorn's own `--fd` assumes AF_UNIX, so
asyncio would not set TCP_NODELAY on accepted TCP connections, and Nagle's algorithm with delayed
ACKs would add ~40 ms to small responses.
"""

from __future__ import annotations

import socket
import sys

import uvicorn

fd, app_dir, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, app_dir)
config = uvicorn.Config(target, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
