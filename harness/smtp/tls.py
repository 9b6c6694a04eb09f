"""Self-signed certificates made at start, for STARTTLS and implicit TLS on the fake servers.

Nothing is read from or left on disk for long: the key and certificate are generated with
``cryptography`` (an EC P-256 key, which takes a millisecond where RSA takes tens), written to a
private temporary directory only because :meth:`ssl.SSLContext.load_cert_chain` takes file
names, and the directory is removed at once. Clients that want to verify the server (the
integration under test, given :attr:`Certificate.pem`) can trust the certificate itself: it is
its own CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Certificate", "make_certificate"]


@dataclass(frozen=True)
class Certificate:
    """A certificate and its private key, both PEM."""

    pem: bytes
    key_pem: bytes
    names: tuple[str, ...]

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting this certificate (TLS 1.2 and later)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory(prefix="harness-tls-") as tmp:
            cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert_file.write_bytes(self.pem)
            key_file.touch(mode=0o600)
            key_file.write_bytes(self.key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that trusts exactly this certificate (hostname checked)."""
        context = ssl.create_default_context(cadata=self.pem.decode("ascii"))
        return context

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``cert.pem`` and ``key.pem`` into *directory* (for an integration to trust)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_bytes(self.pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(self.key_pem)
        return cert_file, key_file


def make_certificate(names: tuple[str, ...] = ("localhost",), *, days: int = 7) -> Certificate:
    """A fresh self-signed certificate for *names* and 127.0.0.1, valid for *days* days."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little: a client whose clock is slightly behind must not see it as future.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        names=tuple(names),
    )
