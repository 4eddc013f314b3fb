"""Certificates and keys for the local control plane.

One self-signed CA signs the API server's serving certificate and one client
certificate per component; the service-account key pair signs and verifies
projected tokens.  Everything is generated fresh per cluster directory with
`cryptography`, so no openssl or cfssl binary is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The first address of the service range: the API server's own ClusterIP.
# It is only a name in the certificate; nothing ever connects to it.
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_CIDR = "10.96.0.0/12"

API_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

# The API server's client certificate towards kubelets (logs, exec): the only client the node
# agent's kubelet API serves.
APISERVER_KUBELET_CLIENT = "apiserver-kubelet-client"
APISERVER_KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"

# (file stem, common name, organisation) of each client certificate.
CLIENTS = (
    ("admin", "kubernetes-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    (APISERVER_KUBELET_CLIENT, APISERVER_KUBELET_CLIENT_CN, None),
)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def kubelet_cert(self) -> Path:
        """The node agent's kubelet API serving certificate (IP SAN 127.0.0.1, Nodes' InternalIP)."""
        return self.dir / "kubelet.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.dir / "kubelet.key"

    def client_cert(self, who: str) -> Path:
        return self.dir / f"{who}.crt"

    def client_key(self, who: str) -> Path:
        return self.dir / f"{who}.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(subject, public_key, ca_key, issuer, *, ca=False, usages=(), sans=None):
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def generate(directory: Path) -> Pki:
    """Writes a complete PKI into `directory` (idempotent: kept if present)."""
    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if pki.ca_cert.exists() and pki.sa_pub.exists():
        _kubelet_certs(pki)  # a cluster directory made before the kubelet API existed
        return pki

    ca_key = _key()
    ca_name = _name("finetune-devcluster-ca")
    ca = _sign(ca_name, ca_key.public_key(), ca_key, ca_name, ca=True)
    _write_key(directory / "ca.key", ca_key)
    _write_cert(pki.ca_cert, ca)

    serving_key = _key()
    sans = [x509.DNSName(n) for n in API_SERVER_DNS_NAMES] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1", KUBERNETES_SERVICE_IP)
    ]
    serving = _sign(
        _name("kube-apiserver"),
        serving_key.public_key(),
        ca_key,
        ca_name,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving)

    for who, cn, org in CLIENTS:
        key = _key()
        cert = _sign(_name(cn, org), key.public_key(), ca_key, ca_name, usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
        _write_key(pki.client_key(who), key)
        _write_cert(pki.client_cert(who), cert)

    _kubelet_certs(pki)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def _kubelet_certs(pki: Pki) -> None:
    """The kubelet API's serving certificate and the API server's client certificate for it,
    signed by the cluster CA (kept if present)."""
    if pki.kubelet_cert.exists() and pki.client_cert(APISERVER_KUBELET_CLIENT).exists():
        return
    ca_key = serialization.load_pem_private_key((pki.dir / "ca.key").read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = _key()
    cert = _sign(
        _name("devcluster-kubelet"), key.public_key(), ca_key, ca.subject,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    _write_key(pki.kubelet_key, key)
    _write_cert(pki.kubelet_cert, cert)
    key = _key()
    cert = _sign(_name(APISERVER_KUBELET_CLIENT_CN), key.public_key(), ca_key, ca.subject,
                 usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    _write_key(pki.client_key(APISERVER_KUBELET_CLIENT), key)
    _write_cert(pki.client_cert(APISERVER_KUBELET_CLIENT), cert)
