"""Job webhooks: `job.completed`, `job.failed`, `job.cancelled`, signed per the Standard Webhooks spec.

A delivery is its own DBOS workflow (started when the job ends), so it survives restarts: the POST
is a step retried with exponential backoff, up to `WEBHOOK_ATTEMPTS` tries, until the receiver
answers 2xx. Delivery is at least once; every try of one event carries the same `webhook-id`, so
receivers deduplicate on it. Headers: `webhook-id`, `webhook-timestamp`, and
`webhook-signature: v1,<base64 HMAC-SHA256>` made by the `standardwebhooks` reference library with
`AVIARY_WEBHOOK_SECRET` (`whsec_...`).

Against SSRF, a URL must be http(s), and every address its host resolves to must be public, unless
the host is listed in `AVIARY_WEBHOOK_ALLOWED_HOSTS` (then only listed hosts are allowed at all).
The check runs when the job is submitted and again before each try (DNS may change), and
redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from dbos import DBOS
from dbos._error import DBOSMaxStepRetriesExceeded  # raised by step retries; not re-exported by dbos
from standardwebhooks import Webhook

from aviary.errors import InvalidOptionError

if TYPE_CHECKING:
    from aviary.config import Settings

logger = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS: Final = 10
EVENTS: Final = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}
_TIMEOUT_SECONDS: Final = 10.0
_runtime_settings: Settings | None = None


class DeliveryError(Exception):
    """A try that did not get a 2xx answer (DBOS retries the step)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Never follow a redirect: it could point anywhere, including inside the network."""
        del args, kwargs


def install(settings: Settings | None) -> None:
    """Give deliveries their settings (the secret and the allowed hosts); None removes them."""
    global _runtime_settings  # noqa: PLW0603  (one per process, as DBOS itself is)
    _runtime_settings = settings


def check_url(url: str, settings: Settings) -> str:
    """`url`, if webhooks may be sent there.

    Raises:
        InvalidOptionError: not http(s), no secret configured, a host not allowed, or a private address.
    """
    parts = urlsplit(url)
    try:
        port = parts.port  # urllib raises on a port that is not a number from 0 to 65535
    except ValueError:
        port = 0
    if parts.scheme not in {"http", "https"} or not parts.hostname or port == 0:
        raise InvalidOptionError(option="webhook_url", value=url, expected="an http or https URL")
    if settings.webhook_secret is None:
        raise InvalidOptionError(
            option="webhook_url", value=url, expected="no webhook_url: this server has no AVIARY_WEBHOOK_SECRET"
        )
    host = parts.hostname.lower()
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    if allowed:
        if host not in allowed:
            raise InvalidOptionError(option="webhook_url", value=url, expected="a host in AVIARY_WEBHOOK_ALLOWED_HOSTS")
        return url
    if not all(_public(address) for address in _addresses(host, port)):
        raise InvalidOptionError(option="webhook_url", value=url, expected="a public address")
    return url


def _addresses(host: str, port: int | None) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except OSError:
        return ["0.0.0.0"]  # noqa: S104  (unresolvable: treated as not public)
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.partition("%")[0])
    return ip.is_global and not ip.is_multicast


def event_body(event: str, job: dict[str, Any]) -> str:
    """The JSON body of an event about `job` (its status document)."""
    return json.dumps({"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": job}, ensure_ascii=False)


@DBOS.step(retries_allowed=True, max_attempts=WEBHOOK_ATTEMPTS, interval_seconds=1.0, backoff_rate=2.0)
def post(url: str, message_id: str, body: str) -> int:
    """One signed POST; raises (so DBOS retries with backoff) unless the receiver answers 2xx."""
    settings = _runtime_settings
    if settings is None or settings.webhook_secret is None:
        message = "webhooks are not configured in this process"
        raise DeliveryError(message)
    check_url(url, settings)
    now = datetime.now(UTC)
    signature = Webhook(settings.webhook_secret.get_secret_value()).sign(message_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "user-agent": "aviary-webhooks",
    }
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")  # noqa: S310
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=_TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        raise DeliveryError(str(error)) from error
    if not 200 <= status < 300:  # noqa: PLR2004
        message = f"the receiver answered {status}"
        raise DeliveryError(message)
    return status


@DBOS.workflow()
def deliver(url: str, message_id: str, body: str) -> None:
    """Deliver one event (at least once); after the last try, log and give up."""
    try:
        post(url, message_id, body)
    except DBOSMaxStepRetriesExceeded:
        logger.warning("webhook %s to %s was not accepted after %d tries", message_id, url, WEBHOOK_ATTEMPTS)


def send(job_id: str, status: str, job: dict[str, Any], url: str) -> None:
    """Start the durable delivery of the event for `job` reaching `status` (from a workflow or a request)."""
    from dbos import SetWorkflowID

    event = EVENTS[status]
    message_id = f"{job_id}.{event}"
    with SetWorkflowID(f"webhook-{message_id}"):  # one delivery per event, however often this is called
        DBOS.start_workflow(deliver, url, message_id, event_body(event, job))
