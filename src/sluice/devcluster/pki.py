"""Certificates and keys for a loopback control plane, as envtest makes them.

One throwaway CA signs the API server's serving certificate (for 127.0.0.1 and localhost) and an
admin client certificate in ``system:masters``. A separate key pair signs ServiceAccount tokens,
so TokenRequest works and a test can act as a ServiceAccount. Nothing here outlives the temp
directory of one control plane.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError as e:  # pragma: no cover - depends on how sluice was installed
    raise ImportError(
        "the local control plane needs the 'cryptography' package: pip install 'sluice[devcluster]'"
    ) from e

_VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class PKI:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_signing_key: Path
    # With a node: the kubelet's client certificate (system:node:<name>), its serving
    # certificate (for the bridge address), and the API server's client certificate to it.
    node: dict[str, Path] | None = None


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate(
    directory: Path, *, extra_ips: Sequence[str] = (), node_name: str | None = None
) -> PKI:
    """Write a CA, serving and admin certificates and ServiceAccount keys into ``directory``;
    ``extra_ips`` are more addresses the API server answers on (the bridge, the ``kubernetes``
    Service's ClusterIP), ``node_name`` adds the kubelet's certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate a little clock skew

    ca_key = _key()
    ca_name = _name("sluice-devcluster-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName] | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    serving_cert, serving_key = leaf(
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    admin_cert, admin_key = leaf(
        _name("sluice-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    sa_key = _key()

    pki = PKI(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_public_key=directory / "sa.pub",
        sa_signing_key=directory / "sa.key",
    )
    _write_cert(ca_cert, pki.ca_cert)
    _write_cert(serving_cert, pki.serving_cert)
    _write_key(serving_key, pki.serving_key)
    _write_cert(admin_cert, pki.admin_cert)
    _write_key(admin_key, pki.admin_key)
    _write_key(sa_key, pki.sa_signing_key)
    if node_name is not None:
        node: dict[str, Path] = {}
        issued = {
            "kubelet_client": leaf(
                _name(f"system:node:{node_name}", "system:nodes"), ExtendedKeyUsageOID.CLIENT_AUTH
            ),
            "serving": leaf(
                _name(node_name),
                ExtendedKeyUsageOID.SERVER_AUTH,
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips[:1]]
                + [x509.DNSName(node_name)],
            ),
            "apiserver_client": leaf(
                _name("kube-apiserver-kubelet-client", "system:masters"),
                ExtendedKeyUsageOID.CLIENT_AUTH,
            ),
        }
        for role, (cert, key) in issued.items():
            node[f"{role}_cert"], node[f"{role}_key"] = (
                directory / f"{role}.crt",
                directory / f"{role}.key",
            )
            _write_cert(cert, node[f"{role}_cert"])
            _write_key(key, node[f"{role}_key"])
        node["ca_cert"] = pki.ca_cert
        pki = dataclasses.replace(pki, node=node)
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
