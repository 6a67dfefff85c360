"""moto's server on a free port, for the demo and the benchmarks (the tests mostly use mock_aws in-process).

Boto3 reaches it through AWS_ENDPOINT_URL, so the code under test is the code that runs in the account.
"""

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from moto.server import ThreadedMotoServer

from tests.support.net import free_port


@contextmanager
def running_moto_thread() -> Iterator[str]:
    """moto's server in a thread of this process; yields its URL."""
    # Its HTTP server logs every request at INFO: noise in the demo and the benchmarks.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        # moto's backends are this process's globals: empty them for the next server in this process.
        httpx.post(url + "/moto-api/reset", timeout=10)
        server.stop()


@contextmanager
def running_moto_process() -> Iterator[str]:
    """moto's server in a process of its own, off this process's GIL (for load); yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
