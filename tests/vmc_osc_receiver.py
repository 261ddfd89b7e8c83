"""A VMC receiver for the tests: python-osc's UDP server, run as its own process.

    python tests/vmc_osc_receiver.py --ports 2 --frames 6 --timeout 30

Listens on --ports consecutive UDP ports of 127.0.0.1 and prints "listening FIRST_PORT", then
one JSON line per /VMC/Ext/OK (the last message of a meshstream frame):
{"port": P, "messages": [[address, arg, ...], ...]} with every message since the port's
previous OK. Exits 0 after --frames lines in all, 3 when --timeout seconds pass first.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer


def open_servers(count: int) -> list[BlockingOSCUDPServer]:
    """Servers on `count` consecutive free ports (retries when a neighbour port is taken)."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
        probe.close()
        servers = []
        try:
            for k in range(count):
                servers.append(BlockingOSCUDPServer(("127.0.0.1", first + k), Dispatcher()))
            return servers
        except OSError:
            for server in servers:
                server.server_close()
    raise SystemExit("no consecutive free UDP ports found")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=1)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    lock = threading.Lock()
    printed = threading.Semaphore(0)
    servers = open_servers(args.ports)
    for server in servers:
        port = server.server_address[1]
        pending: list[list] = []

        def on_message(address, *values, port=port, pending=pending):
            pending.append([address, *values])
            if address == "/VMC/Ext/OK":
                with lock:
                    print(json.dumps({"port": port, "messages": list(pending)}), flush=True)
                pending.clear()
                printed.release()

        server.dispatcher.set_default_handler(on_message)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening {servers[0].server_address[1]}", flush=True)

    deadline = time.monotonic() + args.timeout
    for _ in range(args.frames):
        if not printed.acquire(timeout=max(0.0, deadline - time.monotonic())):
            print("timeout", file=sys.stderr, flush=True)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
