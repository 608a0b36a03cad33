"""Alerts: the incident rules (unit) and real delivery to a local SMTP server and webhook."""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ha_toolkit.alerts import Alerter, IncidentTracker, Notice
from ha_toolkit.config import AlertsConfig, SMTPConfig
from tests.harness.procs import free_port

USER = "alerts@example.org"
PASSWORD = "s3cr3t-Pa55word"
WAIT = 5.0  # deadline for a delivery to show up at a receiver

# The test SMTP server takes AUTH in clear text on loopback; that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


# --- the incident rules ---------------------------------------------------------------


def run(tracker: IncidentTracker, polls: str, node: str | None = None) -> list[Notice]:
    """Feed polls written as a string ('.' healthy, 'x' failed); return the notices."""
    notices = []
    for i, poll in enumerate(polls):
        notice = tracker.observe(poll == ".", f"poll {i}: {'ok' if poll == '.' else 'down'}", node)
        if notice is not None:
            notices.append(notice)
    return notices


def test_nothing_while_healthy() -> None:
    assert run(IncidentTracker(3), "......") == []


def test_one_alert_per_incident_at_the_threshold() -> None:
    tracker = IncidentTracker(5)
    assert run(tracker, "xxxx") == []
    alert = tracker.observe(False, "node2: health check refused", "node2")
    assert alert is not None
    assert alert.kind == "alert"
    assert alert.subject == "no healthy scheduler for 5 polls"
    assert "Last poll: node2: health check refused" in alert.body
    assert "First failed poll: poll 0: down" in alert.body
    assert "node2" in alert.body
    assert run(tracker, "xxxxxxxxxx") == [], "one alert per incident, not one per poll"


def test_one_recovery_after_an_alert() -> None:
    tracker = IncidentTracker(2)
    assert [n.kind for n in run(tracker, "xxx")] == ["alert"]
    recovered = tracker.observe(True, "scheduler healthy", "node3")
    assert recovered is not None
    assert recovered.kind == "recovered"
    assert recovered.subject == "scheduler recovered on node3"
    assert "after 3 failed polls" in recovered.body
    assert run(tracker, "....") == []


def test_no_notice_when_the_incident_heals_before_the_threshold() -> None:
    tracker = IncidentTracker(3)
    # Two short incidents in a row: the count starts afresh after each healthy poll.
    assert run(tracker, "xx.xx.xx.") == []
    assert tracker.failed_polls == 0


def test_each_incident_alerts_again() -> None:
    tracker = IncidentTracker(2)
    kinds = [n.kind for n in run(tracker, "xxx..xx.x")]
    assert kinds == ["alert", "recovered", "alert", "recovered"]


def test_threshold_of_one_alerts_at_the_first_failed_poll() -> None:
    tracker = IncidentTracker(1)
    alert = tracker.observe(False, "stopped")
    assert alert is not None
    assert alert.subject == "no healthy scheduler for 1 poll"
    assert "First failed poll" not in alert.body
    recovered = tracker.observe(True, "healthy")
    assert recovered is not None
    assert recovered.subject == "scheduler recovered"


def test_reset_starts_counting_afresh_and_drops_the_pending_recovery() -> None:
    tracker = IncidentTracker(3)
    run(tracker, "xx")
    tracker.reset()  # stepped down: the new ACTIVE counts from zero
    assert run(tracker, "xx") == []
    assert [n.kind for n in run(tracker, "x")] == ["alert"]
    tracker.reset()
    assert run(tracker, ".") == [], "no recovery for an alert handed over on step-down"


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        IncidentTracker(0)
    with pytest.raises(ValueError, match="recovery_after must be at least 0"):
        IncidentTracker(1, -1.0)


def timed(tracker: IncidentTracker, polls: str, start: float, step: float = 5.0) -> list[str]:
    """As run(), with one poll every `step` s from `start`; the notices' kinds."""
    kinds = []
    for i, poll in enumerate(polls):
        notice = tracker.observe(poll == ".", f"poll {i}", "node1", start + i * step)
        if notice is not None:
            kinds.append(notice.kind)
    return kinds


def test_a_crash_loop_is_one_incident_one_alert_and_one_recovery_after_the_settle() -> None:
    tracker = IncidentTracker(2, recovery_after=30.0)
    # Failing, then up and down for a while (systemd restarting a crashing scheduler),
    # then healthy: one alert, and the recovery 30 s after the last failure.
    assert timed(tracker, "xx", 0) == ["alert"]
    assert timed(tracker, ".x..x.xx...x", 10) == []
    assert tracker.failed_polls == 7
    assert timed(tracker, "......", 70) == []  # healthy at 70 ... 95 s
    notice = tracker.observe(True, "healthy", "node1", 100.0)  # 30 s after 70
    assert notice is not None and notice.kind == "recovered"
    assert "after 7 failed polls" in notice.body
    assert timed(tracker, "x", 105) == []  # a new incident: counted afresh
    assert tracker.failed_polls == 1


def test_the_alert_says_how_long_the_scheduler_must_stay_healthy() -> None:
    alert = IncidentTracker(1, recovery_after=60.0).observe(False, "down", "node1", 0.0)
    assert alert is not None and "healthy again for 60 s" in alert.body


# --- real receivers -------------------------------------------------------------------


@dataclass
class SMTPServer:
    port: int
    messages: queue.Queue[tuple[Any, EmailMessage]] = field(default_factory=queue.Queue)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def next_message(self) -> tuple[Any, EmailMessage]:
        return self.messages.get(timeout=WAIT)


class _MailHandler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.server.messages.put((envelope, message))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """aiosmtpd on 127.0.0.1 that accepts mail only after AUTH as USER/PASSWORD."""
    server = SMTPServer(port=free_port())

    def authenticate(
        smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        server.logins.append((login, password))
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)

    controller = Controller(
        _MailHandler(server),
        hostname="127.0.0.1",
        port=server.port,
        authenticator=authenticate,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    url: str
    requests: queue.Queue[Request] = field(default_factory=queue.Queue)
    status: int = 200

    def next_request(self) -> Request:
        return self.requests.get(timeout=WAIT)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """An HTTP server on 127.0.0.1 that records POSTs and answers with `status`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.requests.put(Request(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{httpd.server_port}/hooks/alerts")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(WAIT)


def smtp_config(port: int, password: str = PASSWORD) -> SMTPConfig:
    return SMTPConfig(
        host="127.0.0.1",
        port=port,
        sender="ha-toolkit@example.org",
        to=("ops@example.org", "oncall@example.org"),
        user=USER,
        password=password,
    )


def our_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ha_toolkit"))


# --- delivery -------------------------------------------------------------------------


def test_mail_arrives_with_subject_recipients_and_login(
    smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ha_toolkit")
    alerter = Alerter(AlertsConfig(smtp=smtp_config(smtp_server.port)), cluster_name="prod-af")

    assert alerter.send("no healthy scheduler for 5 polls", "Last poll: node1 down") == []

    envelope, message = smtp_server.next_message()
    assert envelope.mail_from == "ha-toolkit@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    assert message["Subject"] == "[prod-af] no healthy scheduler for 5 polls"
    assert message["To"] == "ops@example.org, oncall@example.org"
    assert "Last poll: node1 down" in message.get_content()
    assert smtp_server.logins == [(USER, PASSWORD)]
    assert "alert sent" in our_log(caplog)
    assert PASSWORD not in caplog.text


def test_rejected_login_is_reported_without_the_password(
    smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ha_toolkit")
    wrong = PASSWORD + "-wrong"
    alerter = Alerter(AlertsConfig(smtp=smtp_config(smtp_server.port, password=wrong)))

    errors = alerter.send("subject", "body")

    assert len(errors) == 1
    assert errors[0].startswith(f"smtp 127.0.0.1:{smtp_server.port}: SMTPAuthenticationError")
    # smtplib tries each offered mechanism (PLAIN, LOGIN) before giving up.
    assert smtp_server.logins
    assert set(smtp_server.logins) == {(USER, wrong)}
    assert smtp_server.messages.empty()
    assert "alert not delivered" in our_log(caplog)
    for text in (errors[0], caplog.text):
        assert PASSWORD not in text


def test_webhook_posts_json_with_the_subject(webhook: WebhookReceiver) -> None:
    alerter = Alerter(AlertsConfig(webhook_url=webhook.url), cluster_name="prod-af")

    assert alerter.send("scheduler recovered on node2", "healthy again") == []

    request = webhook.next_request()
    assert request.path == "/hooks/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert "Authorization" not in request.headers
    payload = json.loads(request.body)
    assert payload["subject"] == "[prod-af] scheduler recovered on node2"
    assert payload["cluster"] == "prod-af"
    # "text" carries the headline too, for chat receivers that show only "text".
    assert payload["text"] == "[prod-af] scheduler recovered on node2\n\nhealthy again"


def test_webhook_credentials_become_basic_auth_and_stay_out_of_errors(
    webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ha_toolkit")
    webhook.status = 500
    url = webhook.url.replace("http://", "http://bot:p%40ss-w0rd@") + "/T0KEN?key=k3y"
    alerter = Alerter(AlertsConfig(webhook_url=url))

    errors = alerter.send("subject", "body")

    request = webhook.next_request()
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:p@ss-w0rd").decode(
        "ascii"
    )
    assert request.path == "/hooks/alerts/T0KEN?key=k3y"
    port = url.split(":")[-1].split("/")[0]
    assert errors == [f"webhook http://127.0.0.1:{port}: HTTP 500 Internal Server Error"]
    for secret in ("p@ss-w0rd", "p%40ss-w0rd", "T0KEN", "k3y"):
        assert secret not in caplog.text


def test_closed_ports_return_errors_and_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ha_toolkit")
    port = free_port()  # nothing listens here any more
    config = AlertsConfig(
        smtp=smtp_config(port), webhook_url=f"http://user:{PASSWORD}@127.0.0.1:{port}/hook"
    )
    started = time.monotonic()

    errors = Alerter(config, timeout=2.0).send("subject", "body")

    assert time.monotonic() - started < 4.0
    assert len(errors) == 2
    assert errors[0].startswith(f"smtp 127.0.0.1:{port}: ConnectionRefusedError")
    assert errors[1].startswith(f"webhook http://127.0.0.1:{port}: ConnectionRefusedError")
    assert PASSWORD not in "\n".join(errors)
    assert PASSWORD not in caplog.text


def test_a_failing_channel_does_not_stop_the_other(smtp_server: SMTPServer) -> None:
    config = AlertsConfig(smtp=smtp_config(smtp_server.port), webhook_url="ftp://example.org/x")

    errors = Alerter(config).send("subject", "body")

    assert errors == ["webhook ftp://example.org: only http and https URLs are supported"]
    _, message = smtp_server.next_message()
    assert message["Subject"] == "[ha-toolkit] subject"


def test_a_multi_line_subject_is_sent_as_one_line(smtp_server: SMTPServer) -> None:
    alerter = Alerter(AlertsConfig(smtp=smtp_config(smtp_server.port)))

    assert alerter.send("scheduler down\n on node1\r\n", "body") == []

    _, message = smtp_server.next_message()
    assert message["Subject"] == "[ha-toolkit] scheduler down on node1"


def test_no_channels_configured_sends_nothing() -> None:
    assert Alerter(AlertsConfig()).send("subject", "body") == []


def test_one_alert_and_one_recovery_per_incident_end_to_end(
    smtp_server: SMTPServer, webhook: WebhookReceiver
) -> None:
    config = AlertsConfig(
        after_failed_polls=3, smtp=smtp_config(smtp_server.port), webhook_url=webhook.url
    )
    tracker = IncidentTracker(config.after_failed_polls)
    alerter = Alerter(config, cluster_name="prod-af")

    # healthy, a blip shorter than the threshold, a long outage, then recovery on node2.
    for healthy in [True, False, False, True, *[False] * 8, True, True, True]:
        notice = tracker.observe(healthy, "node1: unit failed" if not healthy else "ok", "node2")
        if notice is not None:
            assert alerter.send(notice.subject, notice.body) == []

    subjects = [smtp_server.next_message()[1]["Subject"] for _ in range(2)]
    assert subjects == [
        "[prod-af] no healthy scheduler for 3 polls",
        "[prod-af] scheduler recovered on node2",
    ]
    hooks = [json.loads(webhook.next_request().body)["subject"] for _ in range(2)]
    assert hooks == subjects
    # send() returns only after the receivers answered, so nothing more can be in flight.
    assert smtp_server.messages.empty()
    assert webhook.requests.empty()
