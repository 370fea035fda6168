"""Tests for cohortseg.federated.credentials: a federation's TLS certificates and SuperNode keys, in
the formats Flower loads (its own loaders are used where it has them)."""

from __future__ import annotations

import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key

from cohortseg.federated.credentials import write_node_keys, write_tls_certificates


def test_the_superlink_certificate_is_signed_by_the_ca_for_the_coordinators_names(tmp_path):
    paths = write_tls_certificates(tmp_path, ["coordinator.example.org", "10.0.0.5"])

    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    certificate = x509.load_pem_x509_certificate(paths["certificate"].read_bytes())
    certificate.verify_directly_issued_by(ca)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("ca_key", "key"):  # private keys: the owner's only
        assert stat.S_IMODE(paths[key].stat().st_mode) == 0o600


def test_a_sites_key_pair_is_what_flower_registers_and_its_supernode_loads(tmp_path):
    paths = write_node_keys(tmp_path, "north")

    assert try_load_public_key(paths["public"])  # what `flwr supernode register` accepts
    private = load_ssh_private_key(paths["private"].read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP384R1)
    assert stat.S_IMODE(paths["private"].stat().st_mode) == 0o600
    assert paths["public"].name == "north.pub"
