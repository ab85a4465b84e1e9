from __future__ import annotations

import pytest
from pydantic import SecretStr

from aviary.config import Settings
from aviary.errors import InvalidOptionError
from aviary.jobs.webhooks import check_url

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
