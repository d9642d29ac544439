"""The replica and the publish tool against a real nats-server that requires TLS and credentials:
user and password, token, client certificates, a .creds file (operator/account/user JWTs).
A wrong secret or certificate fails clearly, and no secret ever reaches the logs."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from service.feed.replica import Replica
from service.feed.sources import FeedError, NatsAuth, NatsConnection, open_source
from service.feed.tools import publish_file
from tests.factories import make_room, write_snapshot
from tests.feed.secure import Operator, Pki, make_operator, make_pki, other_account
from tests.feed.support import NatsServer, eventually, jsonl, room_event
from tests.net import wait_port_file

STREAM = "ROCKETCHAT"
USER = "voip-rooms"
PASSWORD = "pa$$:w@rd/Zq7"  # needs percent-encoding in a URL
TOKEN = "tok-4f1c9b7e2d"
EVENTS = [room_event("n1"), room_event("n2", queue="sales"), room_event("s0", "removed")]

StartServer = Callable[..., NatsServer]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def nats_secured(tmp_path: Path) -> Iterator[StartServer]:
    """``nats_secured(config, scheme)`` starts a nats-server with that extra configuration."""
    servers: list[NatsServer] = []

    def start(config: str, scheme: str = "nats") -> NatsServer:
        server = NatsServer(tmp_path / f"nats-{len(servers)}", config=config, scheme=scheme)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    return write_snapshot(tmp_path / "snapshot", [make_room("s0"), make_room("s1")], position=0)


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[[Replica], Replica]]:
    running: list[tuple[Replica, asyncio.Task[None]]] = []

    def start(replica: Replica) -> Replica:
        running.append((replica, asyncio.create_task(replica.run())))
        return replica

    yield start
    for replica, task in running:
        await replica.stop()
        await task


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record, nats-py's included, at debug level."""
    caplog.set_level(logging.DEBUG)
    return caplog


def tls(pki: Pki, *, verify: bool = False) -> str:
    """nats-server TLS configuration; ``verify`` requires a client certificate from the CA."""
    return (
        "tls {\n"
        f'  cert_file: "{pki.server_cert}"\n'
        f'  key_file: "{pki.server_key}"\n'
        f'  ca_file: "{pki.ca}"\n'
        f"  verify: {'true' if verify else 'false'}\n"
        "  timeout: 5\n"
        "}\n"
    )


def users(password: str = PASSWORD) -> str:
    return f'authorization {{ user: "{USER}", password: "{password}" }}\n'


def userinfo(password: str = PASSWORD) -> str:
    return f"{quote(USER, safe='')}:{quote(password, safe='')}"


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert quote(secret, safe="") not in text


async def publish(url: str, auth: NatsAuth | None, tmp_path: Path) -> int:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(EVENTS))
    return await publish_file(url, path, nats=auth)


async def follows(replica: Replica) -> None:
    """The replica gets ready and applies every event published."""
    await eventually(lambda: replica.ready and replica.position == len(EVENTS), within=20)
    assert replica.store.get("n2") is not None
    assert replica.store.get("s0") is None


async def refused(replica: Replica, *expected: str) -> str:
    """The replica stays not ready, its feed check naming the failure; returns that detail."""
    feed = replica.checks()[1]

    def failed() -> bool:
        nonlocal feed
        feed = replica.checks()[1]
        return replica.source is not None and replica.source.status.startswith("reconnecting")

    await eventually(failed, within=20, what="a refused connection")
    assert not replica.ready
    assert not feed.ok
    for text in expected:
        assert text in feed.detail, feed.detail
    return feed.detail


async def test_user_and_password_over_tls(
    nats_secured: StartServer,
    pki: Pki,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
    logs: pytest.LogCaptureFixture,
) -> None:
    server = nats_secured(tls(pki) + users(), scheme="tls")
    url = server.url(STREAM, userinfo())
    auth = NatsAuth(ca=pki.ca)
    assert await publish(url, auth, tmp_path) == len(EVENTS)
    replica = replicas(Replica(snap, feed=url, nats=auth))
    await follows(replica)
    detail = replica.checks()[1].detail
    assert f"tls://127.0.0.1:{server.port}" in detail
    assert_no_secret(detail + repr(replica.source) + logs.text, PASSWORD)


async def test_wrong_password_is_refused_clearly(
    nats_secured: StartServer,
    pki: Pki,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
    logs: pytest.LogCaptureFixture,
) -> None:
    server = nats_secured(tls(pki) + users(), scheme="tls")
    wrong = "not-the-" + PASSWORD
    url = server.url(STREAM, userinfo(wrong))
    with pytest.raises(FeedError, match="Authorization Violation") as error:
        await publish(url, NatsAuth(ca=pki.ca), tmp_path)
    replica = replicas(Replica(snap, feed=url, nats=NatsAuth(ca=pki.ca)))
    detail = await refused(replica, "Authorization Violation")
    assert_no_secret(detail + str(error.value) + logs.text, wrong, PASSWORD)


async def test_token(
    nats_secured: StartServer,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
    logs: pytest.LogCaptureFixture,
) -> None:
    server = nats_secured(f'authorization {{ token: "{TOKEN}" }}\n')
    url = server.url(STREAM, TOKEN)
    assert await publish(url, None, tmp_path) == len(EVENTS)
    replica = replicas(Replica(snap, feed=url))
    await follows(replica)
    wrong = replicas(Replica(snap, feed=server.url(STREAM, "tok-wrong-1234")))
    await refused(wrong, "Authorization Violation")
    without = replicas(Replica(snap, feed=server.url(STREAM)))
    await refused(without, "Authorization Violation")
    assert_no_secret(logs.text + str([r.checks() for r in (replica, wrong)]), TOKEN, "tok-wrong")


async def test_client_certificate_required(
    nats_secured: StartServer,
    pki: Pki,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
) -> None:
    server = nats_secured(tls(pki, verify=True))  # nats:// URL: the files turn TLS on
    url = server.url(STREAM)
    auth = NatsAuth(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    assert await publish(url, auth, tmp_path) == len(EVENTS)
    await follows(replicas(Replica(snap, feed=url, nats=auth)))
    # Without a client certificate the server ends the connection.
    await refused(replicas(Replica(snap, feed=url, nats=NatsAuth(ca=pki.ca))))
    with pytest.raises(FeedError, match="cannot connect"):
        await publish(url, NatsAuth(ca=pki.ca), tmp_path)


async def test_server_certificate_is_verified(
    nats_secured: StartServer,
    pki: Pki,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
) -> None:
    server = nats_secured(tls(pki), scheme="tls")
    untrusted = NatsAuth(ca=pki.other_ca)
    replica = replicas(Replica(snap, feed=server.url(STREAM), nats=untrusted))
    await refused(replica, "CERTIFICATE_VERIFY_FAILED")
    with pytest.raises(FeedError, match="CERTIFICATE_VERIFY_FAILED"):
        await publish(server.url(STREAM), untrusted, tmp_path)
    # The system trust store does not know the test CA either.
    await refused(replicas(Replica(snap, feed=server.url(STREAM))), "CERTIFICATE_VERIFY_FAILED")


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Operator:
    return make_operator(tmp_path_factory.mktemp("operator"))


async def test_creds_file(
    nats_secured: StartServer,
    operator: Operator,
    snap: Path,
    tmp_path: Path,
    replicas: Callable[[Replica], Replica],
    logs: pytest.LogCaptureFixture,
) -> None:
    server = nats_secured(operator.config)
    creds = operator.user_creds(tmp_path / "user.creds")
    auth = NatsAuth(creds=creds)
    assert await publish(server.url(STREAM), auth, tmp_path) == len(EVENTS)
    await follows(replicas(Replica(snap, feed=server.url(STREAM), nats=auth)))
    # A user signed by an account the operator never signed is refused.
    stranger = operator.user_creds(tmp_path / "stranger.creds", signer=other_account())
    replica = replicas(Replica(snap, feed=server.url(STREAM), nats=NatsAuth(creds=stranger)))
    await refused(replica, "Authorization Violation")
    await refused(replicas(Replica(snap, feed=server.url(STREAM))), "Authorization Violation")
    seeds = [line for f in (creds, stranger) for line in f.read_text().split() if line[:2] == "SU"]
    assert len(seeds) == 2
    assert_no_secret(logs.text, *seeds)


def test_unusable_files_are_clear_errors(pki: Pki, tmp_path: Path) -> None:
    url = "tls://127.0.0.1:4222?stream=RC"
    missing = tmp_path / "missing.pem"
    cases = {
        "--nats-ca": NatsAuth(ca=missing),
        "--nats-creds": NatsAuth(creds=missing),
        "--nats-cert": NatsAuth(cert=missing, key=pki.client_key),
    }
    for flag, auth in cases.items():
        with pytest.raises(FeedError, match=f"{flag} {missing}: cannot read it"):
            open_source(url, nats=auth)
    with pytest.raises(FeedError, match=r"not a NATS \.creds file"):
        NatsConnection(url, NatsAuth(creds=pki.ca))
    with pytest.raises(FeedError, match=r"--nats-ca .*no PEM certificate"):
        NatsConnection(url, NatsAuth(ca=pki.client_key))
    with pytest.raises(FeedError, match="--nats-key needs --nats-cert"):
        NatsConnection(url, NatsAuth(key=pki.client_key))
    with pytest.raises(FeedError, match="not a PEM certificate and its key"):
        NatsConnection(url, NatsAuth(cert=pki.client_cert, key=pki.server_key))


def test_url_secrets_go_to_nats_options_not_the_url() -> None:
    connection = NatsConnection(f"tls://{userinfo()}@nats.example:4222?stream=RC")
    assert connection.server == "tls://nats.example:4222"
    assert connection.stream == "RC"
    options = connection.options()
    assert (options["user"], options["password"]) == (USER, PASSWORD)
    assert options["tls"] is not None
    assert_no_secret(repr(connection) + connection.server, PASSWORD)
    token = NatsConnection(f"nats://{TOKEN}@nats.example:4222?stream=RC")
    assert token.options() == {"token": TOKEN}
    assert NatsConnection("nats://nats.example:4222?stream=RC").options() == {}


def command_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIP_ROOMS_")}
    return {**env, **{f"VOIP_ROOMS_{name.upper()}": value for name, value in settings.items()}}


def voip_rooms(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env or command_env(),
    )


async def test_publish_and_serve_commands(
    nats_secured: StartServer, pki: Pki, snap: Path, tmp_path: Path
) -> None:
    """The commands take the same options: flags for publish, VOIP_ROOMS_* for serve."""
    server = nats_secured(tls(pki, verify=True) + users(), scheme="tls")
    url = server.url(STREAM, userinfo())
    events = tmp_path / "events.jsonl"
    events.write_bytes(jsonl(EVENTS))
    files = ["--nats-ca", str(pki.ca), "--nats-cert", str(pki.client_cert)]
    files += ["--nats-key", str(pki.client_key)]
    wrong = voip_rooms(
        "publish", "--feed", server.url(STREAM, userinfo("nope")), *files, str(events)
    )
    assert wrong.returncode == 1
    assert "Authorization Violation" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    published = await asyncio.to_thread(voip_rooms, "publish", "--feed", url, *files, str(events))
    assert published.returncode == 0, published.stderr
    redacted = f"tls://***@127.0.0.1:{server.port}?stream={STREAM}"
    assert published.stdout.strip() == f"published {len(EVENTS)} events to {redacted}"

    port_file = tmp_path / "port"
    log = tmp_path / "serve.log"
    env = command_env(
        feed=url, nats_ca=str(pki.ca), nats_cert=str(pki.client_cert), nats_key=str(pki.client_key)
    )
    argv = [sys.executable, "-m", "service", "serve", "--snapshot", str(snap)]
    argv += ["--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)]
    argv += ["--log-level", "debug", "--drain-seconds", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: ASYNC220
    try:
        port = await asyncio.to_thread(wait_port_file, port_file, proc)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                async with session.get(base + "/readyz") as response:
                    return response.status == 200

            deadline = time.monotonic() + 30
            while not await ready():
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            async with session.get(base + "/readyz?verbose") as response:
                verbose = await response.text()
            async with session.get(base + "/metrics") as response:
                metrics = await response.text()
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
    output = log.read_text()
    assert f"listening on http://127.0.0.1:{port}" in output
    assert f"position {len(EVENTS)}" in verbose
    assert f"tls://127.0.0.1:{server.port}" in verbose
    assert "voip_rooms_feed_position 3.0" in metrics
    assert_no_secret(verbose + metrics + output, PASSWORD)
    assert not port_file.exists(), "the port file outlived the server"


def test_serve_stops_at_start_on_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.creds"
    result = voip_rooms(
        "serve", "--feed", f"nats://{TOKEN}@127.0.0.1:4222?stream=RC", "--nats-creds", str(missing)
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"voip-rooms serve: --nats-creds {missing}: cannot read it " + (
        "(No such file or directory)"
    )
    assert_no_secret(result.stdout + result.stderr, TOKEN)
