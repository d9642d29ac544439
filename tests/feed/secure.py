"""Throwaway credentials for a secured nats-server: a CA with server and client certificates,
and an operator / account / user chain of NATS JWTs with the user's ``.creds`` file."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1 and localhost, a client certificate,
    and a second CA that signed neither (a server it is given to must not be trusted)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    common: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """Write a fresh CA, server and client certificates under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("voip-rooms test CA")
    server_key, server_cert = _leaf(
        "nats-server",
        ca_key,
        ca_cert,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = _leaf(
        "voip-rooms", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    _, other_cert = _ca("another CA")
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
    )
    _write_cert(pki.ca, ca_cert)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.client_cert, client_cert)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.other_ca, other_cert)
    return pki


# -- NATS JWTs (decentralized auth) ------------------------------------------------------------


def _nkey(prefix: int) -> Any:
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: Any, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2: header alg ed25519-nkey), signed by ``issuer``'s nkey."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    claims["jti"] = base64.b32encode(hashlib.sha256(orjson.dumps(claims)).digest()).decode()
    header = _b64(orjson.dumps({"typ": "JWT", "alg": "ed25519-nkey"}))
    body = f"{header}.{_b64(orjson.dumps(claims))}"
    return f"{body}.{_b64(issuer.sign(body.encode()))}"


UNLIMITED_ACCOUNT = {
    "subs": -1,
    "conn": -1,
    "leaf": -1,
    "imports": -1,
    "exports": -1,
    "data": -1,
    "payload": -1,
    "wildcards": True,
    # JetStream is on for an account whose storage limits are not zero.
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


@dataclass(frozen=True)
class Operator:
    """An operator, its system account and one application account, in a server config."""

    config: str  # nats-server configuration lines (operator mode, memory resolver)
    account: Any  # the application account's nkey pair, which signs its users

    def user_creds(self, path: Path, name: str = "voip-rooms", signer: Any = None) -> Path:
        """Write a ``.creds`` file for a new user of the account (or signed by ``signer``)."""
        user = _nkey(nkeys.PREFIX_BYTE_USER)
        token = _jwt(
            signer or self.account,
            user.public_key.decode(),
            name,
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        return path


def make_operator(directory: Path) -> Operator:
    """An operator signing a system account and an account with JetStream (memory resolver)."""
    directory.mkdir(parents=True, exist_ok=True)
    operator = _nkey(nkeys.PREFIX_BYTE_OPERATOR)
    system = _nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    account = _nkey(nkeys.PREFIX_BYTE_ACCOUNT)
    system_pub, account_pub = system.public_key.decode(), account.public_key.decode()
    operator_jwt = _jwt(
        operator,
        operator.public_key.decode(),
        "test-operator",
        {"type": "operator", "system_account": system_pub},
    )
    (directory / "operator.jwt").write_text(operator_jwt)
    accounts = {
        system_pub: _jwt(operator, system_pub, "SYS", {"type": "account", "limits": {}}),
        account_pub: _jwt(
            operator,
            account_pub,
            "ROCKETCHAT",
            {
                "type": "account",
                "limits": UNLIMITED_ACCOUNT,
                "default_permissions": {"pub": {}, "sub": {}},
            },
        ),
    }
    preload = "\n".join(f"  {pub}: {token}" for pub, token in accounts.items())
    config = (
        f'operator: "{directory / "operator.jwt"}"\n'
        f"system_account: {system_pub}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )
    return Operator(config, account)


def other_account() -> Any:
    """An account nkey no operator signed: users it signs are refused."""
    return _nkey(nkeys.PREFIX_BYTE_ACCOUNT)
