"""Credentials of a real federation, as Flower documents them: a certificate authority (CA), the
SuperLink's TLS certificate signed by it (for the coordinator's host names and addresses), and
one P-384 key pair per site whose public key the coordinator registers, so that only those
SuperNodes may connect (Flower's SuperNode authentication). Written with ``cryptography``
(which Flower itself uses); private keys are written readable by their owner only."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cohortseg.core.io import atomic_write

#: How long the certificates are valid (days).
VALIDITY_DAYS = 365


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    if private:  # atomic_write leaves results readable by all
        os.chmod(path, 0o600)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """Subject alternative names: IP addresses as such, anything else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def write_tls_certificates(directory: str | os.PathLike[str], hosts: Sequence[str]) -> dict:
    """A CA (``ca.crt``, ``ca.key``) and the SuperLink's certificate signed by it
    (``superlink.crt``, ``superlink.key``) valid for ``hosts`` (the coordinator's host names
    and IP addresses, as SuperNodes and ``flwr`` address it), in ``directory``.

    Returns the paths: ``ca``, ``ca_key``, ``certificate``, ``key`` (PEM). ``ca.crt`` goes to
    every site (``flower-supernode --root-certificates``); the keys stay with the coordinator.
    """
    out = Path(directory)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=VALIDITY_DAYS)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("cohortseg federation CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    private = {
        "encoding": pem,
        "format": serialization.PrivateFormat.PKCS8,
        "encryption_algorithm": serialization.NoEncryption(),
    }
    return {
        "ca": _write(out / "ca.crt", ca.public_bytes(pem)),
        "ca_key": _write(out / "ca.key", ca_key.private_bytes(**private), private=True),
        "certificate": _write(out / "superlink.crt", certificate.public_bytes(pem)),
        "key": _write(out / "superlink.key", key.private_bytes(**private), private=True),
    }


def write_node_keys(directory: str | os.PathLike[str], site: str) -> dict:
    """A site's SuperNode key pair in ``directory``: ``{site}.key`` (OpenSSH private key, for
    ``flower-supernode --auth-supernode-private-key``; it stays at the site) and
    ``{site}.pub`` (OpenSSH public key, for ``flwr supernode register`` at the coordinator).
    Returns the paths: ``private``, ``public``."""
    out = Path(directory)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return {
        "private": _write(out / f"{site}.key", private, private=True),
        "public": _write(out / f"{site}.pub", public + b"\n"),
    }
