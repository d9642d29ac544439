"""The voip-rooms command line: serve, demo-data, publish, simulate."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from service import __version__
from service.settings import NATS_SETTINGS, add_arguments, from_namespace

__all__ = ["main"]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        return asyncio.run(coro)
    return uvloop.run(coro)


def _serve(args: argparse.Namespace) -> int:
    settings = from_namespace(args)
    if settings.snapshot is not None:  # the load's worker processes start while we import
        from service.feed import workers

        workers.start()
    from service.feed.sources import FeedError, open_source
    from service.logs import setup_logging
    from service.web.server import serve

    if settings.feed is not None:
        # A bad feed URL or an unreadable --nats-* file stops here, before anything listens.
        try:
            open_source(settings.feed, nats=_nats_auth(args))
        except FeedError as exc:
            print(f"voip-rooms serve: {exc}", file=sys.stderr)
            return 2
    setup_logging(settings.log_level)
    _run(serve(settings))
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from service.demo import format_credentials, write_snapshot

    credentials = write_snapshot(Path(args.out), args.rooms, seed=args.seed)
    print(format_credentials(credentials, port=args.port))
    return 0


def _nats_auth(args: argparse.Namespace) -> Any:
    from service.feed.sources import NatsAuth

    return NatsAuth(args.nats_creds, args.nats_ca, args.nats_cert, args.nats_key)


def _publish(args: argparse.Namespace) -> int:
    from service.feed.sources import FeedError, redact_url
    from service.feed.tools import publish_file

    try:
        count = _run(publish_file(args.feed, Path(args.file), nats=_nats_auth(args)))
    except FeedError as exc:
        print(f"voip-rooms publish: {exc}", file=sys.stderr)
        return 1
    print(f"published {count} events to {redact_url(args.feed)}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from service.feed.sources import FeedError, redact_url
    from service.feed.tools import simulate
    from service.logs import setup_logging

    setup_logging("info")
    snapshot = Path(args.snapshot) if args.snapshot else None
    try:
        count = _run(
            simulate(
                args.feed, args.rate, args.seed, args.duration, snapshot, nats=_nats_auth(args)
            )
        )
    except KeyboardInterrupt:
        return 0
    except FeedError as exc:
        print(f"voip-rooms simulate: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {count} events to {redact_url(args.feed)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="voip-rooms",
        description="A read replica of Rocket.Chat's GET /api/v1/voip/rooms, answered from memory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the API from a snapshot (and a feed)",
        description="Serve GET /api/v1/voip/rooms, /livez, /healthz, /readyz and /metrics. "
        "Every flag can also be set with the VOIP_ROOMS_* variable named in its help; flags win.",
    )
    add_arguments(serve)
    serve.set_defaults(func=_serve)

    demo = commands.add_parser(
        "demo-data",
        help="write a realistic synthetic snapshot and print demo credentials",
        description="Write a synthetic Rocket.Chat snapshot (rooms, users, permissions, manifest) "
        "and print the demo users' credentials and a working curl.",
    )
    demo.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    demo.add_argument(
        "--rooms", type=int, default=10_000, metavar="N", help="rooms (default 10000)"
    )
    demo.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    demo.add_argument(
        "--port", type=int, default=3000, metavar="PORT", help="port used in the printed curl"
    )
    demo.set_defaults(func=_demo_data)

    publish = commands.add_parser(
        "publish",
        help="publish an events file into a NATS JetStream stream",
        description='Publish FILE (one {"subject", "payload"} object a line) into the stream '
        "of --feed, creating the stream with the three subjects if it is missing.",
    )
    publish.add_argument(
        "--feed",
        required=True,
        metavar="URL",
        help="nats:// or tls:// [user:password@ or token@]host:port?stream=NAME",
    )
    add_arguments(publish, names=NATS_SETTINGS)
    publish.add_argument("file", metavar="FILE", help="events file (JSON lines)")
    publish.set_defaults(func=_publish)

    sim = commands.add_parser(
        "simulate",
        help="produce a realistic live stream of call events",
        description="Generate calls arriving, agents taking them and calls closing, and publish "
        "them to a nats:// feed or append them to a file:// feed.",
    )
    sim.add_argument("--feed", required=True, metavar="URL", help="file:///path or nats://...")
    add_arguments(sim, names=NATS_SETTINGS)
    sim.add_argument(
        "--snapshot", metavar="DIR", help="continue this demo snapshot (its agents, queues, calls)"
    )
    sim.add_argument("--rate", type=float, default=1.0, metavar="N", help="new calls per second")
    sim.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    sim.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after (default never)"
    )
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named by ``argv`` (default: sys.argv)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    result: int = args.func(args)
    return result
