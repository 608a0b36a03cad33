"""Alerts: tell a human when no healthy scheduler has run for a while, and when it is back.

Two parts, kept apart so the rules can be tested without a mail server:

* :class:`IncidentTracker` decides *when* to notify (pure logic, no I/O): one
  alert per incident, once the ACTIVE controller has seen ``after_failed_polls``
  consecutive polls without a healthy scheduler, and one recovery notice once
  the scheduler has stayed healthy for ``recovery_after`` seconds after that
  alert (a relapse before then is the same incident: no second alert).
* :class:`Alerter` delivers a notice to every configured channel (SMTP and/or a
  JSON webhook). Delivery problems are returned as strings and logged, never
  raised: the control loop must keep running when mail is down. Secrets (the
  SMTP password, credentials or tokens in the webhook URL) never appear in
  those strings or in the log.
"""

from __future__ import annotations

import base64
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import partial
from typing import Literal

from ha_toolkit.config import AlertsConfig, SMTPConfig

log = logging.getLogger(__name__)

_REDACTED = "***"


@dataclass(frozen=True)
class Notice:
    """Something a human should read: an incident started, or it is over."""

    kind: Literal["alert", "recovered"]
    subject: str
    body: str


class IncidentTracker:
    """Counts unhealthy polls of the ACTIVE controller; says when to notify.

    An incident starts at the first poll without a healthy scheduler. Before its
    alert, it ends at the next healthy poll: incidents shorter than
    ``after_failed_polls`` consecutive polls (a normal failover, say) produce
    nothing. Once alerted, it ends only when the scheduler has stayed healthy for
    ``recovery_after`` seconds (``now`` of the polls, the controller's clock): a
    scheduler that comes back and fails again meanwhile (a crash loop) is still
    the same incident, so it sends one alert and one recovery.
    """

    def __init__(self, after_failed_polls: int, recovery_after: float = 0.0) -> None:
        if after_failed_polls < 1:
            raise ValueError(f"after_failed_polls must be at least 1, got {after_failed_polls}")
        if recovery_after < 0:
            raise ValueError(f"recovery_after must be at least 0, got {recovery_after}")
        self._threshold = after_failed_polls
        self._settle = recovery_after
        self._failed_polls = 0
        self._first_detail = ""
        self._alerted = False
        self._healthy_since: float | None = None  # since when healthy, once alerted

    @property
    def failed_polls(self) -> int:
        """Polls so far in this incident without a healthy scheduler (0 outside one):
        consecutive ones before the alert, all of them after it."""
        return self._failed_polls

    @property
    def open(self) -> bool:
        """An incident is under way: a failed poll not yet followed by a healthy one,
        or an alert not yet followed by its recovery."""
        return self._failed_polls > 0 or self._alerted

    def observe(
        self, healthy: bool, detail: str, node: str | None = None, now: float = 0.0
    ) -> Notice | None:
        """Record one ACTIVE poll made at `now`; return the notice to send now, if any.

        ``detail`` says what the poll found (it goes into the body); ``node`` is
        where the scheduler is, or was meant to be, running.
        """
        if healthy:
            if not self._alerted:
                self.reset()
                return None
            if self._healthy_since is None:
                self._healthy_since = now
            if now - self._healthy_since < self._settle:
                return None  # healthy, but not for long enough to call it over
            notice = self._recovered(detail, node)
            self.reset()
            return notice
        self._healthy_since = None
        self._failed_polls += 1
        if self._failed_polls == 1:
            self._first_detail = detail
        if self._failed_polls == self._threshold and not self._alerted:
            self._alerted = True
            return self._alert(detail, node)
        return None

    def reset(self) -> None:
        """Forget the current incident (the controller stepped down; the next ACTIVE
        counts afresh, and sends its own alert if the incident goes on)."""
        self._failed_polls = 0
        self._first_detail = ""
        self._alerted = False
        self._healthy_since = None

    def _alert(self, detail: str, node: str | None) -> Notice:
        n = self._failed_polls
        lines = [f"No healthy Airflow scheduler for {n} consecutive controller polls."]
        if node:
            lines.append(f"Node: {node}")
        if n > 1:
            lines.append(f"First failed poll: {self._first_detail}")
        lines.append(f"Last poll: {detail}")
        lines.append("")
        settle = f" for {self._settle:g} s" if self._settle else ""
        lines.append(
            f"A recovery notice follows when a scheduler has been healthy again{settle}"
            " (unless this controller steps down first)."
        )
        polls = "1 poll" if n == 1 else f"{n} polls"
        return Notice("alert", f"no healthy scheduler for {polls}", "\n".join(lines))

    def _recovered(self, detail: str, node: str | None) -> Notice:
        where = f" on {node}" if node else ""
        body = (
            f"A healthy Airflow scheduler is running again{where} "
            f"after {self._failed_polls} failed polls.\n"
            f"Poll: {detail}"
        )
        return Notice("recovered", f"scheduler recovered{where}", body)


class Alerter:
    """Sends a subject and body to every channel configured in ``alerts``.

    Each channel gets ``timeout`` seconds per network operation. ``send`` blocks
    for the delivery; it returns one error string per failed channel.
    """

    def __init__(
        self, config: AlertsConfig, cluster_name: str = "ha-toolkit", timeout: float = 10.0
    ) -> None:
        self._config = config
        self._cluster = cluster_name
        self._timeout = timeout

    def send(self, subject: str, body: str) -> list[str]:
        """Deliver to all channels; return the errors (empty: everything was sent)."""
        # One line: a line break in a mail header would make the message invalid.
        subject = " ".join(subject.split())
        prefix = f"[{self._cluster}]"
        if not subject.startswith(prefix):
            subject = f"{prefix} {subject}"
        channels: list[tuple[str, Callable[[str, str], None], list[str | None]]] = []
        smtp = self._config.smtp
        if smtp is not None:
            name = f"smtp {smtp.host}:{smtp.port}"
            channels.append((name, partial(self._send_smtp, smtp), [smtp.password]))
        url = self._config.webhook_url
        if url:
            channels.append((_webhook_name(url), partial(self._send_webhook, url), [url]))
        errors: list[str] = []
        for name, deliver, secrets in channels:
            try:
                deliver(subject, body)
            # Anything at all: a broken mail setup must not take the control loop down.
            except Exception as exc:
                error = _redact(f"{name}: {_describe(exc)}", secrets)
                log.warning("alert not delivered: %s", error)
                errors.append(error)
            else:
                log.info("alert sent via %s: %s", name, subject)
        return errors

    def _send_smtp(self, cfg: SMTPConfig, subject: str, body: str) -> None:
        if not cfg.to:
            raise _Undelivered("no recipients configured")
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(cfg.to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=cfg.sender.rpartition("@")[2] or None)
        msg.set_content(body)
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if cfg.ssl:
            client = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=self._timeout, context=context)
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, timeout=self._timeout)
        with client:
            if cfg.starttls and not cfg.ssl:
                client.starttls(context=context)
            if cfg.user:
                client.login(cfg.user, cfg.password or "")
            refused = client.send_message(msg, to_addrs=list(cfg.to))
        if refused:
            raise _Undelivered(f"recipients refused: {', '.join(sorted(refused))}")

    def _send_webhook(self, url: str, subject: str, body: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise _Undelivered("only http and https URLs are supported")
        hostport = parts.netloc.rpartition("@")[2]
        # "text" repeats the headline: chat webhooks (Slack, Mattermost) show only "text".
        payload = {"subject": subject, "text": f"{subject}\n\n{body}", "cluster": self._cluster}
        request = urllib.request.Request(
            urllib.parse.urlunsplit(parts._replace(netloc=hostport)),
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "ha-toolkit"},
            method="POST",
        )
        if parts.username is not None:
            # urllib ignores userinfo in the URL; send it as Basic auth instead.
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            response.read()


class _Undelivered(Exception):
    """A delivery problem that is not an exception of the mail or HTTP library."""


def _webhook_name(url: str) -> str:
    # Scheme and host only: webhook URLs often carry their token in the path or
    # query (Slack, Teams, ...), and userinfo is a password.
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "webhook (malformed URL)"
    return f"webhook {parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Undelivered):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason  # the socket error says more than "<urlopen error ...>"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _redact(text: str, secrets: list[str | None]) -> str:
    """Remove each secret, and every part of a URL that may hold one, from ``text``."""
    pieces: list[str] = []
    for secret in filter(None, secrets):
        pieces.append(secret)
        if "://" in secret:
            try:
                parts = urllib.parse.urlsplit(secret)
            except ValueError:
                continue
            pieces += [parts.password or "", parts.path, parts.query]
            pieces.append(urllib.parse.unquote(parts.password or ""))
    # Longest first, so a secret that contains another is removed whole; single
    # characters (a path of "/") would only garble the message.
    for piece in sorted((p for p in pieces if len(p) > 1), key=len, reverse=True):
        text = text.replace(piece, _REDACTED)
    return text
