"""Configuration: environment variables, explicit arguments, the missing-key message."""

from __future__ import annotations

import ssl

import certifi
import isorun
import pytest
import respx
from isorun import Client, Sandbox
from isorun._base import ssl_context
from isorun._config import DEFAULT_API_URL, resolve


def test_environment_is_read() -> None:
    config = resolve(environ={"ISORUN_API_KEY": "isr_env", "ISORUN_API_URL": "https://x/api/"})
    assert (config.api_key, config.api_url) == ("isr_env", "https://x/api")


def test_explicit_arguments_win() -> None:
    environ = {"ISORUN_API_KEY": "isr_env", "ISORUN_API_URL": "https://env"}
    config = resolve("isr_arg", "https://arg", environ=environ)
    assert (config.api_key, config.api_url) == ("isr_arg", "https://arg")


def test_url_defaults_to_a_local_backend() -> None:
    assert resolve(environ={"ISORUN_API_KEY": "k"}).api_url == DEFAULT_API_URL
    assert DEFAULT_API_URL == "http://127.0.0.1:8080"


def test_missing_key_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISORUN_API_KEY")
    with pytest.raises(isorun.UsageError) as info:
        Sandbox("python")
    message = str(info.value)
    assert "ISORUN_API_KEY" in message
    assert "api_key=" in message
    assert "isorun keys create" in message


def test_client_uses_the_environment(api: respx.MockRouter) -> None:
    route = api.get("/v1/health").respond(
        200, json={"status": "ok", "version": "1", "accelerator": "kvm"}
    )
    with Client() as client:
        assert client.api_url == "http://isorun.test"
        assert client.health().accelerator == "kvm"
    assert route.calls.last.request.headers["Authorization"] == "Bearer isr_test"
    assert route.calls.last.request.headers["User-Agent"].startswith("isorun-python/")


def test_explicit_key_reaches_the_wire(api: respx.MockRouter) -> None:
    route = api.get("/v1/health").respond(
        200, json={"status": "ok", "version": "1", "accelerator": "tcg"}
    )
    with Client(api_key="isr_explicit") as client:
        client.health()
    assert route.calls.last.request.headers["Authorization"] == "Bearer isr_explicit"


def test_clients_share_one_tls_context_per_ca_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    shared = ssl_context()
    assert ssl_context() is shared
    assert shared.verify_mode is ssl.CERT_REQUIRED and shared.check_hostname
    # The context httpx would build for a new client: its CA settings still count.
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    assert ssl_context() is not shared
