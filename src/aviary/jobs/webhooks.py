"""Job webhooks: `job.completed`, `job.failed`, `job.cancelled`, signed per the Standard Webhooks spec.

A delivery is its own DBOS workflow (started when the job ends), so it survives restarts: the POST
is a step retried with exponential backoff, up to `WEBHOOK_ATTEMPTS` tries, until the receiver
answers 2xx. Delivery is at least once; every try of one event carries the same `webhook-id`, so
receivers deduplicate on it. Headers: `webhook-id`, `webhook-timestamp`, and
`webhook-signature: v1,<base64 HMAC-SHA256>` made by the `standardwebhooks` reference library with
`AVIARY_WEBHOOK_SECRET` (`whsec_...`).

Against SSRF, a URL must be http(s), and every address its host resolves to must be public (IPv6
forms that carry an IPv4 address, 6to4, NAT64, Teredo, mapped and compatible, count as that
address), unless the host is listed in `AVIARY_WEBHOOK_ALLOWED_HOSTS` (then only listed hosts are
allowed at all). The check runs when the job is submitted and again before each try (DNS may
change), each try connects to the address it checked (a name cannot resolve to a public address
for the check and to a private one for the connection), and redirects are not followed. A URL's
`user:password@` is sent as HTTP Basic authentication, and never logged.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import SplitResult, unquote, urlsplit

from dbos import DBOS
from dbos._error import DBOSMaxStepRetriesExceeded  # raised by step retries; not re-exported by dbos
from standardwebhooks import Webhook

from aviary.errors import InvalidOptionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aviary.config import Settings

logger = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS: Final = 10
EVENTS: Final = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled"}
_TIMEOUT_SECONDS: Final = 10.0
_runtime_settings: Settings | None = None


class DeliveryError(Exception):
    """A try that did not get a 2xx answer (DBOS retries the step)."""


def install(settings: Settings | None) -> None:
    """Give deliveries their settings (the secret and the allowed hosts); None removes them."""
    global _runtime_settings  # noqa: PLW0603  (one per process, as DBOS itself is)
    _runtime_settings = settings


@dataclass(frozen=True)
class Target:
    """Where a webhook goes: the URL's parts, and the one address the connection is made to."""

    parts: SplitResult
    port: int
    address: str


def check_url(url: str, settings: Settings) -> str:
    """`url`, if webhooks may be sent there (a host in the allow list is not resolved: it may come up later).

    Raises:
        InvalidOptionError: not http(s), no secret configured, a host not allowed, or a private address.
    """
    parts, port, allowed = _checked(url, settings)
    if not allowed:
        _resolved(url, parts, port, allowed=False, resolve=_addresses)
    return url


def target(url: str, settings: Settings, resolve: Callable[[str, int], list[str]] | None = None) -> Target:
    """Where a webhook to `url` connects: its host resolved once (by `resolve`, the system's by default) and checked.

    Raises:
        InvalidOptionError: not http(s), no secret configured, a host not allowed, unresolvable, or a
            private address.
    """
    parts, port, allowed = _checked(url, settings)
    return Target(parts, port, _resolved(url, parts, port, allowed=allowed, resolve=resolve or _addresses))


def _checked(url: str, settings: Settings) -> tuple[SplitResult, int, bool]:
    """The URL's parts and port, and whether its host is in the allow list; what needs no DNS checked."""
    parts = urlsplit(url)
    try:
        given = parts.port  # urllib raises on a port outside 0..65535
    except ValueError:
        given = 0
    port = (443 if parts.scheme == "https" else 80) if given is None else given
    if parts.scheme not in {"http", "https"} or not parts.hostname or port == 0:
        raise InvalidOptionError(option="webhook_url", value=shown(url), expected="an http or https URL")
    if settings.webhook_secret is None:
        raise InvalidOptionError(
            option="webhook_url", value=shown(url), expected="no webhook_url: this server has no AVIARY_WEBHOOK_SECRET"
        )
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    if allowed and parts.hostname.lower() not in allowed:
        raise InvalidOptionError(
            option="webhook_url", value=shown(url), expected="a host in AVIARY_WEBHOOK_ALLOWED_HOSTS"
        )
    return parts, port, bool(allowed)


def _resolved(
    url: str, parts: SplitResult, port: int, *, allowed: bool, resolve: Callable[[str, int], list[str]]
) -> str:
    """The address to connect to: the first the host resolves to, once every one is public (unless allowed)."""
    addresses = resolve((parts.hostname or "").lower(), port)
    if not addresses:
        raise InvalidOptionError(option="webhook_url", value=shown(url), expected="a host that resolves")
    if not allowed and not all(_public(address) for address in addresses):
        raise InvalidOptionError(option="webhook_url", value=shown(url), expected="a public address")
    return addresses[0]


def shown(url: str) -> str:
    """`url` without its `user:password@` and query: what error messages and logs may say."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # unresolvable: nowhere to send
    return [str(info[4][0]) for info in infos]


_NAT64: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        carried = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if carried is None and (ip in _IPV4_COMPATIBLE or any(ip in net for net in _NAT64)):
            carried = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if carried is not None and not _public(str(carried)):
            return False
    return ip.is_global and not ip.is_multicast


class _Pinned(http.client.HTTPConnection):
    """HTTP to a checked address, with the URL's host in the Host header."""

    def __init__(self, to: Target, timeout: float) -> None:
        super().__init__(to.parts.hostname or "", to.port, timeout=timeout)
        self._address = to.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to a checked address; the certificate is verified for the URL's host."""

    def __init__(self, to: Target, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(to.parts.hostname or "", to.port, timeout=timeout, context=self._tls)
        self._address = to.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def request(to: Target, headers: dict[str, str], body: bytes, timeout: float = _TIMEOUT_SECONDS) -> int:
    """POST `body` to `to` (its checked address, never a redirect); the status code.

    Raises:
        OSError: no connection, or no answer within `timeout`.
    """
    parts = to.parts
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = {**headers, "authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
    connection = (_PinnedTLS if parts.scheme == "https" else _Pinned)(to, timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except http.client.HTTPException as error:
        raise OSError(str(error)) from error
    finally:
        connection.close()


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
    to = target(url, settings)
    now = datetime.now(UTC)
    signature = Webhook(settings.webhook_secret.get_secret_value()).sign(message_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "user-agent": "aviary-webhooks",
    }
    try:
        status = request(to, headers, body.encode())
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
        logger.warning("webhook %s to %s was not accepted after %d tries", message_id, shown(url), WEBHOOK_ATTEMPTS)


def delivery_ids(job_id: str) -> list[str]:
    """The workflow ids of the job's deliveries, one per event (whether or not each was ever started)."""
    return [f"webhook-{job_id}.{event}" for event in EVENTS.values()]


def send(job_id: str, status: str, job: dict[str, Any], url: str) -> None:
    """Start the durable delivery of the event for `job` reaching `status` (from a workflow or a request)."""
    from dbos import SetWorkflowID

    event = EVENTS[status]
    message_id = f"{job_id}.{event}"
    with SetWorkflowID(f"webhook-{message_id}"):  # one delivery per event, however often this is called (delivery_ids)
        DBOS.start_workflow(deliver, url, message_id, event_body(event, job))
