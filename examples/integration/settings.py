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

__all__ = ["BUGS", "ConfigError", "Settings", "load_settings"]

BUGS = ("ms_timestamps", "swapped_classes", "double_report", "no_unsubscribe", "no_retry")
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
    # The example's own knobs.
    domain: str
    retry_delays: tuple[float, ...]
    callback_retry: tuple[float, ...]
    retry_after_cap: float
    batch_window: float
    smtp_timeout: float
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
        domain=_optional(env, "EXAMPLE_DOMAIN") or "sut.test",
        retry_delays=_schedule(env, "EXAMPLE_RETRY_DELAYS", "1,2"),
        callback_retry=_schedule(env, "EXAMPLE_CALLBACK_RETRY", "0.2,0.5,1,2"),
        retry_after_cap=_seconds(env, "EXAMPLE_RETRY_AFTER_CAP", 5.0),
        batch_window=_seconds(env, "EXAMPLE_BATCH_WINDOW", 0.2),
        smtp_timeout=smtp_timeout,
        bug=bug,
    )
