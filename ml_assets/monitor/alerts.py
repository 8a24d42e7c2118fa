"""Alert sinks for monitoring incidents: the Dagster log always, a webhook when configured.

:func:`send_alerts` sends each incident (:class:`~ml_assets.monitor.incidents.Incident`) to
every sink that has not had it yet: a warning in the log the caller passes (the Dagster
``context.log``), and a POST of Slack-compatible JSON (``{"text": ..., "blocks": [...]}``) to
``ML_ASSETS_ALERT_WEBHOOK`` when it is set. Each alert names the dataset, the partitions, the
metric, its value and threshold, the champion version and a link to the report.

Deduplicated per incident and sink: :class:`SentLog` remembers which incident ids each sink has
had (``$ML_ASSETS_HOME/monitoring/alerts_sent.json``, written atomically), so an incident that
goes on for more partitions is sent once, and a new incident after recovery (a new id) is sent
again. A webhook that is down is retried a bounded number of times with exponential backoff,
then the failure is logged and the incident stays unsent (the next call tries again). Nothing
here raises to the caller: a monitoring run never fails because an alert could not be sent.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ml_assets import settings
from ml_assets.monitor.incidents import Incident

LOG_SINK = "log"
WEBHOOK_SINK = "webhook"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth retrying; any other error status is final."""


class AlertLogger(Protocol):
    """What a sink needs of a logger: ``logging.Logger`` and Dagster's ``context.log`` both."""

    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


# --- the message -------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def alert_text(incident: Incident, report_url: str | None = None) -> str:
    """One line naming everything an on-call person needs."""
    partitions = (
        incident.last_partition
        if incident.length == 1
        else f"{incident.first_partition} .. {incident.last_partition}"
    )
    text = (
        f"[{incident.dataset}] {incident.label} alerting for {incident.length} "
        f"partition{'s' if incident.length != 1 else ''} ({partitions}): "
        f"value {_fmt(incident.value)}, threshold {_fmt(incident.threshold)} "
        f"(lower {_fmt(incident.lower_threshold)}, upper {_fmt(incident.upper_threshold)}); "
        f"champion v{incident.champion_version or '?'}"
    )
    if report_url:
        text += f"; report: {report_url}"
    return text + f" [incident {incident.id}]"


def alert_payload(incident: Incident, report_url: str | None = None) -> dict[str, Any]:
    """Slack-compatible JSON: ``text`` (the fallback every receiver shows) and ``blocks``."""
    fields = {
        "Dataset": incident.dataset,
        "Partition": incident.last_partition,
        "First partition": incident.first_partition,
        "Metric": incident.label,
        "Value": _fmt(incident.value),
        "Threshold": _fmt(incident.threshold),
        "Champion": f"v{incident.champion_version or '?'}",
        "Partitions alerting": str(incident.length),
    }
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{incident.dataset}: {incident.label}"},
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields.items()],
        },
    ]
    context = f"incident `{incident.id}`"
    if report_url:
        context = f"<{report_url}|monitoring report> | " + context
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": alert_text(incident, report_url), "blocks": blocks}


# --- which incidents each sink has had ----------------------------------------------------------


@dataclass
class SentLog:
    """Incident ids already sent, by sink, in a JSON file replaced atomically on each save.

    ``{"incidents": {"<id>": {"log": "<iso time>", "webhook": "<iso time>"}}}``. A file that
    cannot be read counts as empty (alerts may then repeat, never get lost).
    """

    path: Path
    _sent: dict[str, dict[str, str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._sent = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            incidents = data.get("incidents", {})
            return {str(k): dict(v) for k, v in incidents.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            logging.getLogger(__name__).warning(f"alert state {self.path} unreadable ({exc})")
            return {}

    def has(self, incident_id: str, sink: str) -> bool:
        return sink in self._sent.get(incident_id, {})

    def sinks(self, incident_id: str) -> set[str]:
        return set(self._sent.get(incident_id, {}))

    def mark(self, incident_id: str, sink: str, when: dt.datetime | None = None) -> None:
        when = when or dt.datetime.now(dt.UTC)
        self._sent.setdefault(incident_id, {})[sink] = when.isoformat()

    def save(self) -> None:
        """Write the file atomically: a temporary file beside it, renamed into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps({"incidents": self._sent}, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


# --- sinks --------------------------------------------------------------------------------------


class AlertSink(Protocol):
    """Delivers one alert; returns whether it was delivered (never raises)."""

    name: str

    def send(self, incident: Incident, report_url: str | None, log: AlertLogger) -> bool: ...


@dataclass(frozen=True)
class LogSink:
    """A warning in the caller's log (the Dagster run log)."""

    name: str = LOG_SINK

    def send(self, incident: Incident, report_url: str | None, log: AlertLogger) -> bool:
        log.warning("monitoring alert: " + alert_text(incident, report_url))
        return True


@dataclass(frozen=True)
class WebhookSink:
    """POSTs :func:`alert_payload` to a URL, retrying transient failures with backoff."""

    url: str
    attempts: int = 3
    timeout: float = 5.0
    backoff: float = 1.0
    """Seconds before the second attempt; doubled before each further one."""
    sleep: Callable[[float], None] = time.sleep
    name: str = WEBHOOK_SINK

    @property
    def where(self) -> str:
        """The URL without path or query (a Slack webhook's path is its secret)."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def send(self, incident: Incident, report_url: str | None, log: AlertLogger) -> bool:
        try:
            return self._send(incident, report_url, log)
        except Exception as exc:  # a failed alert never fails the caller
            log.error(f"alert webhook {self.where}: {incident.id} not sent ({exc!r})")
            return False

    def _send(self, incident: Incident, report_url: str | None, log: AlertLogger) -> bool:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            log.error(f"alert webhook {self.where}: not an http(s) URL; {incident.id} not sent")
            return False
        body = json.dumps(alert_payload(incident, report_url)).encode()
        attempts = max(1, self.attempts)
        problem = ""
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "ml_assets-alerts"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code not in RETRY_STATUSES:
                    break
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, cut off
                problem = str(getattr(exc, "reason", exc))
            if attempt < attempts:
                wait = self.backoff * 2 ** (attempt - 1)
                log.info(
                    f"alert webhook {self.where}: attempt {attempt}/{attempts} failed "
                    f"({problem}); retrying in {wait:g} s"
                )
                self.sleep(wait)
        log.error(
            f"alert webhook {self.where}: {incident.id} not sent after {attempt} "
            f"attempt{'s' if attempt != 1 else ''} ({problem})"
        )
        return False


def default_sinks(s: settings.Settings | None = None) -> list[AlertSink]:
    """The log, and the webhook of ``ML_ASSETS_ALERT_WEBHOOK`` when it is set."""
    s = s or settings.current()
    sinks: list[AlertSink] = [LogSink()]
    if s.alert_webhook:
        sinks.append(
            WebhookSink(s.alert_webhook, attempts=s.alert_attempts, timeout=s.alert_timeout_seconds)
        )
    return sinks


# --- the entry point ----------------------------------------------------------------------------


@dataclass
class AlertOutcome:
    """What :func:`send_alerts` did, by incident id."""

    sent: dict[str, list[str]] = field(default_factory=dict)
    """Incident id -> sinks it was delivered to by this call."""
    already_sent: list[str] = field(default_factory=list)
    """Incidents every sink had already had."""
    failed: dict[str, list[str]] = field(default_factory=dict)
    """Incident id -> sinks that failed (tried again next call)."""


def send_alerts(
    incidents: Iterable[Incident],
    log: AlertLogger,
    *,
    report_url: str | Mapping[str, str] | None = None,
    sinks: list[AlertSink] | None = None,
    state_path: Path | None = None,
) -> AlertOutcome:
    """Send each incident to every sink that has not had it; never raises.

    ``report_url`` is one link for all, or a link by dataset. ``sinks`` defaults to
    :func:`default_sinks`; ``state_path`` to ``$ML_ASSETS_HOME/monitoring/alerts_sent.json``.
    Callers usually pass the ongoing incidents: ``[i for i in find_incidents(t) if i.ongoing]``.
    """
    outcome = AlertOutcome()
    try:
        if sinks is None or state_path is None:
            s = settings.current()
            sinks = sinks if sinks is not None else default_sinks(s)
            state_path = state_path if state_path is not None else s.alerts_state_path
        sent = SentLog(state_path)
    except Exception as exc:
        log.error(f"monitoring alerts not sent: {exc!r}")
        return outcome
    for incident in incidents:
        link = report_url.get(incident.dataset) if isinstance(report_url, Mapping) else report_url
        pending = [sink for sink in sinks if not sent.has(incident.id, sink.name)]
        if not pending:
            outcome.already_sent.append(incident.id)
            log.info(f"monitoring incident {incident.id} already alerted")
            continue
        for sink in pending:
            try:
                delivered = sink.send(incident, link, log)
            except Exception as exc:  # a sink of someone else's making
                log.error(f"alert sink {sink.name}: {incident.id} not sent ({exc!r})")
                delivered = False
            if delivered:
                sent.mark(incident.id, sink.name)
                outcome.sent.setdefault(incident.id, []).append(sink.name)
            else:
                outcome.failed.setdefault(incident.id, []).append(sink.name)
        try:
            sent.save()  # after each incident: a crash later does not re-send this one
        except Exception as exc:
            log.error(f"alert state {sent.path} not saved ({exc!r}); alerts may repeat")
    return outcome
