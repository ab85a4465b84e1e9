from __future__ import annotations

import base64
import http.server
import threading
from typing import ClassVar

import pytest
from pydantic import SecretStr

from aviary.config import Settings
from aviary.errors import InvalidOptionError
from aviary.jobs.webhooks import check_url, request, shown, target

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105  (a test key)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "ftp://8.8.8.8/hook",
        "file:///etc/passwd",
        "http:///no-host",
        "http://no-such-host.invalid/hook",
        "http://8.8.8.8:99999/hook",  # no such port
        "http://8.8.8.8:0/hook",
        "http://8.8.8.8:http/hook",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of 169.254.169.254
        "http://[64:ff9b:1::a00:1]/",  # local-use NAT64 form of 10.0.0.1
        "http://[2002:7f00:1::]/",  # 6to4 form of 127.0.0.1
        "http://[::127.0.0.1]/",  # IPv4-compatible form
        "http://[::ffff:10.0.0.1]/",  # IPv4-mapped form
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",  # Teredo to 10.0.0.1
    ],
)
def test_private_unresolvable_and_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidOptionError) as error:
        check_url(url, Settings(webhook_secret=SecretStr(SECRET)))
    assert error.value.param == "webhook_url"


def test_public_addresses_pass_and_an_allow_list_is_exclusive() -> None:
    assert check_url("https://8.8.8.8/hook", Settings(webhook_secret=SecretStr(SECRET))) == "https://8.8.8.8/hook"
    allowed = Settings(webhook_secret=SecretStr(SECRET), webhook_allowed_hosts=["hooks.internal", "127.0.0.1"])
    assert check_url("http://127.0.0.1:9000/x", allowed) == "http://127.0.0.1:9000/x"
    with pytest.raises(InvalidOptionError):
        check_url("https://8.8.8.8/hook", allowed)
    for port in ("99999", "0"):  # an allowed host with a port no request can reach
        with pytest.raises(InvalidOptionError):
            check_url(f"http://127.0.0.1:{port}/x", allowed)


def test_without_a_secret_no_webhook_is_accepted() -> None:
    with pytest.raises(InvalidOptionError, match="AVIARY_WEBHOOK_SECRET"):
        check_url("https://8.8.8.8/hook", Settings())


def test_a_name_is_resolved_once_per_try_and_the_checked_address_is_the_one_connected_to() -> None:
    """DNS rebinding: a name that answers a public address to the check and a private one right after."""
    answers = [["93.184.215.14"], ["127.0.0.1"]]
    asked: list[tuple[str, int]] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers[len(asked) - 1]

    to = target("https://hooks.example.com/in", Settings(webhook_secret=SecretStr(SECRET)), rebinding)
    assert (to.address, to.port, asked) == ("93.184.215.14", 443, [("hooks.example.com", 443)])
    with pytest.raises(InvalidOptionError, match="a public address"):  # the second answer, on the next try
        target("https://hooks.example.com/in", Settings(webhook_secret=SecretStr(SECRET)), rebinding)


class _Receiver(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        _Receiver.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_try_connects_to_the_pinned_address_with_the_urls_host_and_its_credentials() -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_port
    settings = Settings(webhook_secret=SecretStr(SECRET), webhook_allowed_hosts=["hooks.invalid"])
    url = f"http://us%40er:p%3Ass@hooks.invalid:{port}/in?token=t0p"
    try:
        to = target(url, settings, lambda host, _: ["127.0.0.1"] if host == "hooks.invalid" else [])
        assert request(to, {"content-type": "application/json"}, b"{}") == 204
    finally:
        receiver.shutdown()
        receiver.server_close()
    (seen,) = _Receiver.seen
    assert seen["path"] == "/in?token=t0p"
    assert seen["host"] == f"hooks.invalid:{port}"  # the name no resolver here knows: only the pinned address was used
    assert seen["authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert shown(url) == f"http://hooks.invalid:{port}/in?..."  # what logs and errors say of it


def test_an_allowed_host_that_does_not_resolve_yet_is_accepted_and_fails_its_tries() -> None:
    settings = Settings(webhook_secret=SecretStr(SECRET), webhook_allowed_hosts=["receiver.invalid"])
    assert check_url("http://receiver.invalid/in", settings) == "http://receiver.invalid/in"
    with pytest.raises(InvalidOptionError, match="a host that resolves"):
        target("http://receiver.invalid/in", settings)
