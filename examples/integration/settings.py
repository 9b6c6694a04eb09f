"""Configuration of the example gateway, read from environment variables.

``HARNESS_*`` variables are the integration contract (docs/integration-contract.md): every
integration under test reads them. ``EXAMPLE_*`` variables are this example's own knobs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUGS", "ConfigError", "Settings", "fit_schedule", "load_settings"]

BUGS: Mapping[str, str] = {
    # Each is one mistake a newcomer makes, in a line or two marked ``# BUG(name)`` in the
    # source; docs/example-bugs.md says which shipped scenario catches it and with what code.
    "ms_timestamps": "legacy ts in milliseconds",
    "swapped_classes": "soft bounces reported as hard and hard as soft",
    "double_report": "every bounce reported twice, in a second POST right after the first",
    "no_unsubscribe": "the click is honoured but CleverTap never hears of it",
    "no_retry": "a callback that failed (503) is never resent",
    "late_double_report": "every bounce reported again 0.7 s later (an outbox marked sent late)",
    "no_backoff": "a failed callback is resent at once, without any backoff",
    "ignore_retry_after": "Retry-After of a 429 ignored: resent on the own 0.2 s schedule",
    "dsn_send_time_ts": "ts of a DSN bounce is the time the message was sent, not the DSN's",
    "tz_offset": "ts computed from local time in Asia/Kolkata read as UTC (5.5 h ahead)",
    "delayed_as_bounce": "a delay warning (Action: delayed) is treated as a failure",
    "no_smtp_retry": "a 4xx reply is never retried: soft bounce after the first attempt",
    "report_each_deferral": "a soft bounce reported at every 4xx, before the retry delivers",
    "down_is_hard": "a server that stays down (refused, timeout, 421) is reported as hard",
    "reply_code_only": "every 5xx reply is hard, whatever its enhanced status (5.2.2 too)",
    "exim_status_only": "a DSN is classified by its Status alone: Exim's generic 5.0.0 is hard",
    "double_unsubscribe": "every click reports an unsubscribe, the second one too",
    "ignore_sigterm": "SIGTERM is ignored (only Ctrl-C stops it): the harness must kill it",
    "no_content_type": "callbacks POSTed without a Content-Type header",
    "delivered_on_queue": "v2 delivered reported when the message is queued, not when accepted",
    "stale_meta": "v2 meta of the last submitted message, not of the message the event is about",
    "punycode_address": "an IDN domain reported in its ASCII form (xn--), as it was stored",
    "unsubscribe_on_get": "opening the unsubscribe link unsubscribes (link scanners open them all)",
    "any_password": "submission AUTH checks that credentials were given, not which",
    "auth_optional": "submission offers AUTH but takes mail without it",
    "success_dsn_as_bounce": "a DSN is a bounce whatever its Action: success reports too",
    "alias_reported": (
        "a DSN bounce reported for its Final-Recipient (an alias), not the address sent to"
    ),
    "auto_reply_as_bounce": "an out-of-office reply at the bounce address taken for a hard bounce",
    "complaint_ignored": "a spam complaint (ARF) is logged, never reported",
    "float_ts": "legacy ts is time.time() as is: a float with a fraction, not whole seconds",
    "legacy_delivered": "legacy callbacks get a delivered event too, which legacy does not have",
    "no_one_click_header": "List-Unsubscribe without List-Unsubscribe-Post: no one-click offered",
}
"""The deliberately broken variants, selected with ``--bug NAME`` or ``EXAMPLE_BUG``."""

TLS_MODES = ("none", "starttls", "implicit")


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    ready_file: Path | None
    smtp_port: int
    intake_port: int
    http_port: int
    relay: tuple[str, int] | None
    mx_map: Mapping[str, tuple[str, int]]
    relay_user: str | None
    relay_password: str | None
    relay_tls: str
    submission_user: str | None
    submission_password: str | None
    submission_tls: str
    tls_cert: Path | None
    tls_key: Path | None
    callback_format: str
    bounce_url: str | None
    unsubscribe_url: str | None
    v2_url: str | None
    retry_budget: float | None
    """HARNESS_RETRY_BUDGET: ``retry_delays`` already fit in it."""
    # The example's own knobs.
    domain: str
    retry_delays: tuple[float, ...]
    callback_retry: tuple[float, ...]
    retry_after_cap: float
    batch_window: float
    smtp_timeout: float
    mx_starttls: bool
    mx_reuse: int
    """Messages per outbound connection at most; 0: a new connection for every message."""
    mx_reuse_idle: float
    """Seconds an outbound connection stays open without a message to send."""
    log_level: str
    """debug | info | warning: what the gateway logs to stderr."""
    bug: str | None


def _host_port(name: str, value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'{name}: expected "host:port" (e.g. "127.0.0.1:2525"), got {value!r}')
    return host, int(port)


def _port(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) > 65535:
        raise ConfigError(f"{name}: expected a port number 0-65535, got {value!r}")
    return int(value)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}; got {value!r}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{name}: expected a non-negative number of seconds, got {value!r}")
    return seconds


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ConfigError(f"{name}: expected a whole number >= 0, got {value!r}")
    return int(value)


def _schedule(env: Mapping[str, str], name: str, default: str) -> tuple[float, ...]:
    value = env.get(name, default).strip()
    if not value:
        return ()
    delays = []
    for position, item in enumerate(value.split(","), start=1):
        try:
            delay = float(item)
        except ValueError:
            raise ConfigError(
                f"{name}: item {position} ({item.strip()!r}) is not a number of seconds; "
                f'expected a comma-separated list like "1,2", got {value!r}'
            ) from None
        if not math.isfinite(delay) or delay < 0:
            raise ConfigError(f"{name}: item {position} must be >= 0 seconds, got {item!r}")
        delays.append(delay)
    return tuple(delays)


def fit_schedule(
    delays: tuple[float, ...], smtp_timeout: float, budget: float
) -> tuple[float, ...]:
    """The retry *delays*, scaled down together (keeping their shape) to fit *budget* seconds
    from the first attempt to giving up (docs/integration-contract.md, section 4.4).

    Every attempt may last a whole SMTP timeout (a tarpit), so those are set aside first. When
    they alone fill the budget, the delays get half of it anyway: a 4xx reply comes at once,
    and a greylisted recipient needs its retries more than a silent host needs the timeouts.
    A production schedule (hours) thus ends inside the harness's window.
    """
    total = sum(delays)
    room = budget - (len(delays) + 1) * smtp_timeout
    if room <= 0:
        room = budget / 2
    if total <= room:
        return delays
    return tuple(delay * room / total for delay in delays)


def _mx_map(value: str) -> dict[str, tuple[str, int]]:
    try:
        raw = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"HARNESS_MX_MAP: not valid JSON ({exc}): {value!r}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            'HARNESS_MX_MAP: expected a JSON object {"domain": "host:port", ...}, '
            f"got {type(raw).__name__}"
        )
    mx: dict[str, tuple[str, int]] = {}
    for domain, target in raw.items():
        if not isinstance(target, str):
            raise ConfigError(
                f'HARNESS_MX_MAP[{domain!r}]: expected "host:port", got {json.dumps(target)}'
            )
        mx[domain.strip().lower()] = _host_port(f"HARNESS_MX_MAP[{domain!r}]", target)
    return mx


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def load_settings(env: Mapping[str, str], bug: str | None = None) -> Settings:
    """Read the settings from *env*; *bug* (from ``--bug``) wins over ``EXAMPLE_BUG``."""
    bug = bug or _optional(env, "EXAMPLE_BUG")
    if bug is not None and bug not in BUGS:
        raise ConfigError(f"unknown bug {bug!r}; choose one of {', '.join(BUGS)}")

    relay_value = _optional(env, "HARNESS_RELAY")
    relay = _host_port("HARNESS_RELAY", relay_value) if relay_value else None
    mx_value = _optional(env, "HARNESS_MX_MAP")
    if relay is None and mx_value is None:
        raise ConfigError(
            "set HARNESS_RELAY (host:port of a smarthost) or HARNESS_MX_MAP "
            '(JSON {"domain": "host:port"}): the gateway never resolves real DNS'
        )
    mx_map = _mx_map(mx_value) if mx_value else {}

    callback_format = _choice(env, "HARNESS_CALLBACK_FORMAT", ("legacy", "v2"), "legacy")
    bounce_url = _optional(env, "HARNESS_BOUNCE_URL")
    unsubscribe_url = _optional(env, "HARNESS_UNSUBSCRIBE_URL")
    v2_url = _optional(env, "HARNESS_V2_URL")
    required = (
        {"HARNESS_BOUNCE_URL": bounce_url, "HARNESS_UNSUBSCRIBE_URL": unsubscribe_url}
        if callback_format == "legacy"
        else {"HARNESS_V2_URL": v2_url}
    )
    missing = [name for name, url in required.items() if url is None]
    if missing:
        raise ConfigError(
            f"HARNESS_CALLBACK_FORMAT={callback_format} needs {' and '.join(missing)}"
        )

    submission_tls = _choice(env, "HARNESS_SUBMISSION_TLS", TLS_MODES, "none")
    cert, key = _optional(env, "HARNESS_TLS_CERT"), _optional(env, "HARNESS_TLS_KEY")
    if submission_tls != "none" and (cert is None or key is None):
        raise ConfigError(
            f"HARNESS_SUBMISSION_TLS={submission_tls} needs HARNESS_TLS_CERT and "
            "HARNESS_TLS_KEY (PEM files)"
        )
    user = _optional(env, "HARNESS_SUBMISSION_USER")
    password = env.get("HARNESS_SUBMISSION_PASSWORD")
    if user is not None and not password:
        raise ConfigError("HARNESS_SUBMISSION_USER is set but HARNESS_SUBMISSION_PASSWORD is not")

    smtp_timeout = _seconds(env, "EXAMPLE_SMTP_TIMEOUT", 5.0)
    if smtp_timeout == 0:
        raise ConfigError("EXAMPLE_SMTP_TIMEOUT: must be more than 0 seconds")
    retry_delays = _schedule(env, "EXAMPLE_RETRY_DELAYS", "1,2")
    budget: float | None = None
    if _optional(env, "HARNESS_RETRY_BUDGET") is not None:
        budget = _seconds(env, "HARNESS_RETRY_BUDGET", 0.0)
    # "ignore" plays an integration that keeps its own schedule whatever the budget says.
    if _choice(env, "EXAMPLE_RETRY_BUDGET", ("fit", "ignore"), "fit") == "ignore":
        budget = None
    if budget is not None:
        retry_delays = fit_schedule(retry_delays, smtp_timeout, budget)

    ready = _optional(env, "HARNESS_READY_FILE")
    return Settings(
        host=_optional(env, "HARNESS_HOST") or "127.0.0.1",
        ready_file=Path(ready) if ready else None,
        smtp_port=_port(env, "HARNESS_SMTP_PORT"),
        intake_port=_port(env, "HARNESS_INTAKE_PORT"),
        http_port=_port(env, "HARNESS_HTTP_PORT"),
        relay=relay,
        mx_map=mx_map,
        relay_user=_optional(env, "HARNESS_RELAY_USER"),
        relay_password=env.get("HARNESS_RELAY_PASSWORD"),
        relay_tls=_choice(env, "HARNESS_RELAY_TLS", TLS_MODES, "none"),
        submission_user=user,
        submission_password=password,
        submission_tls=submission_tls,
        tls_cert=Path(cert) if cert else None,
        tls_key=Path(key) if key else None,
        callback_format=callback_format,
        bounce_url=bounce_url,
        unsubscribe_url=unsubscribe_url,
        v2_url=v2_url,
        retry_budget=budget,
        domain=_optional(env, "EXAMPLE_DOMAIN") or "sut.test",
        retry_delays=retry_delays,
        callback_retry=_schedule(env, "EXAMPLE_CALLBACK_RETRY", "0.2,0.5,1,2"),
        retry_after_cap=_seconds(env, "EXAMPLE_RETRY_AFTER_CAP", 5.0),
        batch_window=_seconds(env, "EXAMPLE_BATCH_WINDOW", 0.2),
        smtp_timeout=smtp_timeout,
        mx_starttls=_choice(env, "EXAMPLE_MX_STARTTLS", ("on", "off"), "on") == "on",
        mx_reuse=_count(env, "EXAMPLE_MX_REUSE", 100),
        mx_reuse_idle=_seconds(env, "EXAMPLE_MX_REUSE_IDLE", 1.0),
        log_level=_choice(env, "EXAMPLE_LOG_LEVEL", ("debug", "info", "warning"), "info"),
        bug=bug,
    )
