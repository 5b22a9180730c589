"""Certificates and keys for the test control plane: a CA, the apiserver's serving
certificate, an admin client certificate and the ServiceAccount signing key.
The local cluster (hack/localcluster/cluster_pki.py) builds its own from `certificate`."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_signing_key: Path
    sa_public_key: Path


def subject_name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    usage: list[x509.ObjectIdentifier] | None,
    sans: Sequence[x509.GeneralName] = (),
    days: int = 2,
) -> x509.Certificate:
    """A CA certificate when `usage` is None, else a leaf for those extended key usages."""
    now = datetime.datetime.now(datetime.timezone.utc)
    is_ca = usage is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=is_ca, crl_sign=is_ca,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(directory: Path, admin_user: str, admin_group: str) -> Pki:
    """Generates a CA, the apiserver's serving cert, the admin client cert, the SA signing key."""
    directory.mkdir(mode=0o700, parents=True)
    pki = Pki(*(directory / f for f in (
        "ca.crt", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key", "sa.key", "sa.pub",
    )))
    ca_key, serving_key, admin_key, sa_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    ca = certificate(subject_name("localmodel-test-ca"), ca_key, None, ca_key, None)
    serving = certificate(
        subject_name("kube-apiserver"), serving_key, ca, ca_key, [ExtendedKeyUsageOID.SERVER_AUTH],
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    admin = certificate(
        subject_name(admin_user, admin_group), admin_key, ca, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    for path, cert in ((pki.ca_cert, ca), (pki.serving_cert, serving), (pki.admin_cert, admin)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keys = ((pki.serving_key, serving_key), (pki.admin_key, admin_key), (pki.sa_signing_key, sa_key))
    for path, key in keys:
        path.write_bytes(private_pem(key))
    pki.sa_public_key.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))
    return pki


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    )
