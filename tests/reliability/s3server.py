"""A moto S3 server on a free loopback port, for the reliability checks."""

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(moto_server: str) -> tuple[subprocess.Popen, int]:
    """Starts moto's server and waits until it listens; returns it and its port."""
    port = free_port()
    server = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{moto_server} did not listen on 127.0.0.1:{port} in 30 s")
