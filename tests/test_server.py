"""The explorer's server as a deployment sees it, without a browser: what it contacts when it starts."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from .browser import Server


def test_the_server_contacts_no_outside_address(tmp_path: Path) -> None:
    """Every HTTP(S) request the server (or a library in it) makes goes through the proxy the environment names;
    here that proxy is a local socket that counts connections. Streamlit looks up a headless machine's external IP
    (checkip.amazonaws.com) unless ``browser.serverAddress`` is set: ``.streamlit/config.toml`` sets it."""
    proxy, attempts = socket.socket(), []
    proxy.bind(("127.0.0.1", 0))
    proxy.listen()
    proxy.settimeout(0.2)

    def count() -> None:
        while proxy.fileno() != -1:
            try:
                conn, _ = proxy.accept()
                attempts.append(conn.recv(200))
                conn.close()
            except OSError:
                pass

    threading.Thread(target=count, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    server = Server(tmp_path / "runs", env={"http_proxy": url, "https_proxy": url, "HTTP_PROXY": url,
                                            "HTTPS_PROXY": url, "no_proxy": "127.0.0.1,localhost"})
    try:
        deadline = time.time() + 60
        while "URL:" not in server.log.read_text(errors="replace") and time.time() < deadline:
            time.sleep(0.2)  # the banner is printed after the external-IP lookup, which would take ~1-2 s
        server.health(timeout=30)
        time.sleep(2.0)  # anything the start-up would send has had time to try
        log = server.log.read_text(errors="replace")
    finally:
        server.stop()
        proxy.close()
    assert "URL:" in log, log
    assert not attempts, f"the server tried to reach {attempts!r}"
    assert "external IP" not in log, log
