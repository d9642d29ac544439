"""Settings (a frozen dataclass) from command-line flags and VOIP_ROOMS_* environment variables.

This is the only module that reads the environment. Flags win over environment variables,
which win over the defaults. Each setting is declared once in ``SETTINGS``; the argparse flags,
the environment names and the README table all come from that one list.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "NATS_SETTINGS",
    "SETTINGS",
    "Network",
    "RateLimit",
    "Settings",
    "Spec",
    "add_arguments",
    "from_namespace",
]

ENV_PREFIX = "VOIP_ROOMS_"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` per ``window_ms`` per user and route."""

    requests: int
    window_ms: int


def _rate_limit(text: str) -> RateLimit | None:
    if not text.strip():
        return None
    try:
        requests, window = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rate limit must look like REQUESTS/WINDOW_MS (e.g. 10/60000), got {text!r}"
        ) from None
    if requests < 1 or window < 1:
        raise argparse.ArgumentTypeError("rate limit numbers must be >= 1")
    return RateLimit(requests, window)


def _login_failures(text: str) -> RateLimit | None:
    """Like ``_rate_limit``, and ``0`` (or ``0/WINDOW_MS``) turns the throttle off too."""
    if text.strip() == "0" or text.strip().startswith("0/"):
        return None
    return _rate_limit(text)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(text: str) -> tuple[Network, ...]:
    """Comma- or space-separated CIDRs (a plain address is a one-address network)."""
    networks = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part))
        except ValueError as exc:
            hint = ""
            if "has host bits set" in str(exc):
                hint = f": host bits set, the network is {ipaddress.ip_network(part, strict=False)}"
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a CIDR like 10.0.0.0/8 or fd00::/8{hint}"
            ) from None
    return tuple(networks)


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def _text(text: str) -> str | None:
    return text or None


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _level(text: str) -> str:
    value = text.strip().lower()
    if value not in ("debug", "info", "warning", "error"):
        raise argparse.ArgumentTypeError(
            f"log level must be debug|info|warning|error, not {text!r}"
        )
    return value


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
        return value

    return parse


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: its field name, parser from text, default (as text) and help."""

    name: str
    parse: Callable[[str], Any]
    default: str
    help: str
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Spec, ...] = (
    Spec(
        "snapshot",
        _path,
        "",
        "snapshot directory (mongoexport JSON lines); across a feed gap, checked every 10 s "
        "for a newer snapshot that covers it",
        "DIR",
    ),
    Spec(
        "feed",
        _text,
        "",
        "event feed URL: file:///path/events.jsonl, or nats:// (tls:// for TLS) "
        "[user:password@ or token@]host:port?stream=NAME",
        "URL",
    ),
    Spec(
        "nats_creds",
        _path,
        "",
        "NATS .creds file (user JWT and NKey seed) to authenticate with",
        "FILE",
    ),
    Spec("nats_ca", _path, "", "PEM CA certificates that verify the NATS server", "FILE"),
    Spec("nats_cert", _path, "", "PEM client certificate for NATS (TLS client auth)", "FILE"),
    Spec("nats_key", _path, "", "PEM key of --nats-cert (unencrypted)", "FILE"),
    Spec("host", str, "0.0.0.0", "address to listen on", "HOST"),
    Spec(
        "port",
        _positive(int),
        "3000",
        "port to listen on (0: any free port, logged as 'listening on http://HOST:PORT')",
        "PORT",
    ),
    Spec(
        "port_file",
        _path,
        "",
        "once listening, write the port there (for --port 0; off when empty)",
        "FILE",
    ),
    Spec(
        "checkpoint_dir",
        _path,
        "",
        "directory for the service's own checkpoints (off when empty)",
        "DIR",
    ),
    Spec("checkpoint_interval", _positive(float), "300", "seconds between checkpoints", "SECONDS"),
    Spec("checkpoint_events", _positive(int), "100000", "events between checkpoints", "N"),
    Spec("default_count", _positive(int), "50", "page size when count is absent", "N"),
    Spec("max_count", _positive(int), "100", "largest page; larger counts are clamped", "N"),
    Spec("allow_infinite_count", _bool, "false", "count=0 returns every match", "BOOL"),
    Spec("login_expiration_days", _positive(int), "90", "days a login token stays valid", "DAYS"),
    Spec(
        "rate_limit",
        _rate_limit,
        "",
        "per user and route, REQUESTS/WINDOW_MS (off when empty)",
        "N/MS",
    ),
    Spec(
        "cors_origins",
        _origins,
        "",
        "comma-separated allowed CORS origins (off when empty)",
        "LIST",
    ),
    Spec("log_level", _level, "info", "debug, info, warning or error", "LEVEL"),
    Spec(
        "metrics",
        _bool,
        "true",
        "record per-request metrics (false only to measure what they cost)",
        "BOOL",
    ),
    Spec(
        "access_log",
        _positive(float),
        "0",
        "fraction of requests to log (0 = none, 1 = all)",
        "FRACTION",
    ),
    Spec(
        "drain_seconds",
        _positive(float),
        "5",
        "after SIGTERM, seconds to keep serving while not ready",
        "SECONDS",
    ),
    Spec(
        "shutdown_timeout",
        _positive(float),
        "20",
        "after the drain, seconds in-flight requests get",
        "SECONDS",
    ),
    Spec(
        "max_in_flight",
        _positive(int),
        "256",
        "API requests served at once; beyond it 503 with Retry-After (0 = no limit)",
        "N",
    ),
    Spec(
        "login_failures",
        _login_failures,
        "20/60000",
        "failed logins per client address and X-User-Id, FAILURES/WINDOW_MS, then 429 for that "
        "pair until the window ends (0 or empty = off)",
        "N/MS",
    ),
    Spec(
        "trusted_proxies",
        _networks,
        "",
        "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client: from "
        "a peer inside them, the client address is the right-most X-Forwarded-For address "
        "outside them (empty = none: the client address is the TCP peer)",
        "CIDRS",
    ),
    Spec(
        "keepalive_timeout",
        _positive(float),
        "75",
        "seconds an idle connection stays open, and the longest wait for a request's head",
        "SECONDS",
    ),
    Spec(
        "body_timeout",
        _positive(float),
        "10",
        "seconds a client gets to send a request body, then 408",
        "SECONDS",
    ),
    Spec(
        "response_cache",
        _positive(int),
        "4096",
        "answers kept ready to send, each until a room change affects it; the least recently "
        "used is dropped first (0 = off: every answer is built)",
        "N",
    ),
    Spec(
        "max_streams",
        _positive(int),
        "1000",
        "live-answer streams (Accept: text/event-stream) open at once; beyond it 503 with "
        "Retry-After (0 = no streams)",
        "N",
    ),
    Spec(
        "stream_interval",
        _positive(int),
        "250",
        "milliseconds between two events of one stream at least: changes within it are "
        "coalesced into the newest answer (an isolated change is sent at once)",
        "MS",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of ``voip-rooms serve`` (see ``SETTINGS`` for help and defaults)."""

    snapshot: Path | None = None
    feed: str | None = None
    nats_creds: Path | None = None
    nats_ca: Path | None = None
    nats_cert: Path | None = None
    nats_key: Path | None = None
    host: str = "0.0.0.0"
    port: int = 3000
    port_file: Path | None = None
    checkpoint_dir: Path | None = None
    checkpoint_interval: float = 300.0
    checkpoint_events: int = 100_000
    default_count: int = 50
    max_count: int = 100
    allow_infinite_count: bool = False
    login_expiration_days: int = 90
    rate_limit: RateLimit | None = None
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    metrics: bool = True
    access_log: float = 0.0
    drain_seconds: float = 5.0
    shutdown_timeout: float = 20.0
    max_in_flight: int = 256
    login_failures: RateLimit | None = RateLimit(20, 60_000)
    trusted_proxies: tuple[Network, ...] = ()
    keepalive_timeout: float = 75.0
    body_timeout: float = 10.0
    response_cache: int = 4096
    max_streams: int = 1000
    stream_interval: int = 250


assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)], "SETTINGS out of sync"


#: the settings of a NATS connection, which ``publish`` and ``simulate`` take too
NATS_SETTINGS = ("nats_creds", "nats_ca", "nats_cert", "nats_key")


def add_arguments(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    names: Collection[str] | None = None,
) -> None:
    """Add a flag per setting (or per setting in ``names``) whose default comes from the
    environment, else the built-in one."""
    env = os.environ if environ is None else environ
    for spec in SETTINGS:
        if names is not None and spec.name not in names:
            continue
        raw = env.get(spec.env, spec.default)
        try:
            default = spec.parse(raw)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{spec.env}: {exc}")
        parser.add_argument(
            spec.flag,
            type=spec.parse,
            default=default,
            metavar=spec.metavar or None,
            help=f"{spec.help} [env {spec.env}, default {spec.default or 'empty'}]",
        )


def from_namespace(namespace: argparse.Namespace) -> Settings:
    """The Settings held by parsed arguments."""
    return Settings(**{spec.name: getattr(namespace, spec.name) for spec in SETTINGS})


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a list of ``serve`` flags (for tests and embedding)."""
    parser = argparse.ArgumentParser(prog="voip-rooms serve")
    add_arguments(parser, environ)
    return from_namespace(parser.parse_args(list(argv)))
