"""A glassboxd serving TLS (--tls_cert / --tls_key): ``glassbox.connect(root_certificates=...)``
reaches it, a plaintext client does not; with --tls_client_ca (mutual TLS) only a client that
presents ``certificate_chain`` / ``private_key`` is served (docs/service.md, "TLS"). The
certificates are the committed test ones (tests/fixtures/tls/make_certs.sh), issued for
localhost and 127.0.0.1."""

from __future__ import annotations

from typing import Iterator

import pytest

from _helpers import FIXTURES
from conftest import Server, start_glassboxd, stop_glassboxd

import glassbox

TLS = FIXTURES / "tls"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[Server]:
    server = start_glassboxd([
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}",
        "--tls_cert", str(TLS / "server.pem"), "--tls_key", str(TLS / "server.key"),
    ])
    yield server
    stop_glassboxd(server)


def test_tls_client_trusting_the_ca_is_served(tls_server: Server) -> None:
    for roots in (TLS / "ca.pem", (TLS / "ca.pem").read_bytes()):
        with glassbox.connect(tls_server.address, root_certificates=roots, timeout=30) as client:
            assert [m.name for m in client.models()] == ["tiny-gpt2"]


def test_plaintext_client_is_not_served(tls_server: Server) -> None:
    with glassbox.connect(tls_server.address, timeout=5) as client:
        with pytest.raises(glassbox.GlassboxError):
            client.models()


@pytest.fixture(scope="module")
def mutual_tls_server() -> Iterator[Server]:
    server = start_glassboxd([
        "--model", f"tiny-gpt2={FIXTURES / 'models' / 'tiny-gpt2'}",
        "--tls_cert", str(TLS / "server.pem"), "--tls_key", str(TLS / "server.key"),
        "--tls_client_ca", str(TLS / "ca.pem"),
    ])
    yield server
    stop_glassboxd(server)


def test_mutual_tls_needs_the_client_certificate(mutual_tls_server: Server) -> None:
    with glassbox.connect(mutual_tls_server.address, root_certificates=TLS / "ca.pem",
                          certificate_chain=TLS / "client.pem", private_key=TLS / "client.key",
                          timeout=30) as client:
        assert [m.name for m in client.models()] == ["tiny-gpt2"]
    with glassbox.connect(mutual_tls_server.address, root_certificates=TLS / "ca.pem", timeout=5) as client:
        with pytest.raises(glassbox.GlassboxError):
            client.models()


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="both certificate_chain and private_key"):
        glassbox.connect("localhost:1", certificate_chain=TLS / "client.pem")
