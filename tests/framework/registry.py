"""Loopback container registries for tests: Debian's docker-registry (distribution 2.8).

```
run_registry("none")    plain HTTP on 127.0.0.1:<free port>, anonymous pull and push
run_registry("basic")   htpasswd (bcrypt) user testuser:testpass; 401 Basic otherwise
run_registry("token")   Bearer tokens from TokenServer, a Docker-Hub-style token service on
                        loopback: anonymous callers get pull, testuser gets pull+push,
                        a wrong password gets 401. Tokens are RS256 JWTs whose x5c header
                        carries a self-signed cert that the registry trusts (rootcertbundle).
registry_with_fixtures()  run_registry("none") with every fixture image pushed
```

Each registry gets its own config and storage in a temporary directory. The process itself is
run by the product's `isorun_backend.local_images.registry.registry_process` (the one
`isorun up --local-images` uses): started and stopped by PID, on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from isorun_backend.local_images.push import push
from isorun_backend.local_images.registry import free_port, registry_process  # noqa: F401 (re-exported)

from tests.fixtures.build import FixtureImage, build_light, build_python

HTPASSWD_BIN = "htpasswd"
STOP_TIMEOUT_S = 5.0
USERNAME = "testuser"
PASSWORD = "testpass"
TOKEN_SERVICE = "isorun-registry"
TOKEN_ISSUER = "isorun-token-issuer"
TOKEN_TTL_S = 300
REPO_PREFIX = "isorun/"

AuthKind = Literal["none", "basic", "token"]


@dataclass
class TokenServer:
    """A token service on loopback; `requests` records (user or "", scope) per token issued."""

    realm: str
    cert_path: Path
    requests: list[tuple[str, str]] = field(default_factory=list)


def _signing_cert(directory: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TOKEN_ISSUER)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "token.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


@contextlib.contextmanager
def run_token_server(directory: Path) -> Iterator[TokenServer]:
    """Serve `GET /token?service=&scope=` on 127.0.0.1; the signing cert goes in `directory`."""
    key, cert, cert_path = _signing_cert(directory)
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    server_state: dict[str, TokenServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            user = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if (user, password) != (USERNAME, PASSWORD):
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
            allowed = {"pull", "push"} if user else {"pull"}
            access = []
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":", 2)
                granted = sorted(set(actions.split(",")) & allowed)
                access.append({"type": kind, "name": name, "actions": granted})
                server_state["server"].requests.append((user, scope))
            now = int(time.time())
            claims = {
                "iss": TOKEN_ISSUER,
                "sub": user,
                "aud": query.get("service", [TOKEN_SERVICE])[0],
                "exp": now + TOKEN_TTL_S,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": access,
            }
            token = jwt.encode(claims, key, algorithm="RS256", headers={"x5c": [x5c]})
            self._answer(200, {"token": token, "access_token": token, "expires_in": TOKEN_TTL_S})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = httpd.server_address[1]
    server = TokenServer(realm=f"http://127.0.0.1:{port}/token", cert_path=cert_path)
    server_state["server"] = server
    thread = threading.Thread(target=httpd.serve_forever, name="token-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(STOP_TIMEOUT_S)


@dataclass
class Registry:
    """A running registry.

    Attributes:
        host: `127.0.0.1:PORT`, the registry part of references.
        url: `http://127.0.0.1:PORT`.
        storage: The registry's storage root (for tests that tamper with blobs).
        auth: none, basic or token.
        credentials: (username, password) when auth is not none.
        token_server: The token service of a token registry started with one.
        pushed: name_tag -> digest of every image pushed through `push_image`.
    """

    host: str
    url: str
    storage: Path
    auth: AuthKind
    credentials: tuple[str, str] | None
    token_server: TokenServer | None = None
    pushed: dict[str, str] = field(default_factory=dict)

    def ref(self, name_tag: str) -> str:
        """`busybox:1.0` -> `127.0.0.1:PORT/isorun/busybox:1.0`."""
        return f"{self.host}/{REPO_PREFIX}{name_tag}"

    def digest_ref(self, name_tag: str) -> str:
        """The pinned reference of a pushed image: `127.0.0.1:PORT/isorun/busybox@sha256:...`."""
        return f"{self.host}/{REPO_PREFIX}{name_tag.partition(':')[0]}@{self.pushed[name_tag]}"

    def push_image(self, image: FixtureImage, name_tag: str | None = None) -> str:
        """Push a fixture image (as `name_tag`, default its own); return its digest."""
        target = name_tag or image.name_tag
        repo, _, tag = target.partition(":")
        digest = push(
            image.layout,
            self.url,
            REPO_PREFIX + repo,
            tag,
            self.credentials,
            source_tag=image.name_tag,
        )
        self.pushed[target] = digest
        return digest

    def blob_path(self, digest: str) -> Path:
        """Where distribution 2.8's filesystem driver keeps a blob's bytes."""
        hexdigest = digest.removeprefix("sha256:")
        blobs = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return blobs / hexdigest[:2] / hexdigest / "data"

    def corrupt_blob(self, digest: str, offset: int = -1) -> None:
        """Flip one byte of a stored blob (default: the last); the registry serves it as is."""
        path = self.blob_path(digest)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))

    def tamper_blob(self, digest: str, old: bytes, new: bytes) -> None:
        """Replace the first `old` in a stored blob with `new` of the same length.

        For manifests: the registry parses them before serving, so flipping a random byte gets
        a 500 rather than content that fails verification.
        """
        assert len(old) == len(new)
        path = self.blob_path(digest)
        data = path.read_bytes()
        assert old in data
        path.write_bytes(data.replace(old, new, 1))


@contextlib.contextmanager
def run_registry(auth: AuthKind = "none", *, token_realm: str | None = None) -> Iterator[Registry]:
    """Start a registry on a free loopback port; stop it (by PID) and delete its storage after.

    Args:
        auth: none, basic (htpasswd) or token (Bearer).
        token_realm: For token: use this realm instead of starting a TokenServer (a realm
            nothing should ever contact, for policy tests).
    """
    with contextlib.ExitStack() as stack:
        directory = Path(tempfile.mkdtemp(prefix="isorun-registry-"))
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        storage = directory / "storage"
        storage.mkdir()
        credentials: tuple[str, str] | None = None
        token_server: TokenServer | None = None
        auth_config: dict[str, Any] | None = None
        if auth == "basic":
            htpasswd = subprocess.run(
                [HTPASSWD_BIN, "-Bbn", USERNAME, PASSWORD],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            (directory / "htpasswd").write_text(htpasswd.strip() + "\n")
            auth_config = {
                "htpasswd": {"realm": "isorun-test", "path": str(directory / "htpasswd")}
            }
            credentials = (USERNAME, PASSWORD)
        elif auth == "token":
            if token_realm is None:
                token_server = stack.enter_context(run_token_server(directory))
                realm, cert_path = token_server.realm, token_server.cert_path
            else:
                realm, cert_path = token_realm, _signing_cert(directory)[2]
            auth_config = {
                "token": {
                    "realm": realm,
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": str(cert_path),
                }
            }
            credentials = (USERNAME, PASSWORD)
        process = stack.enter_context(registry_process(directory, storage, auth_config))
        yield Registry(
            host=process.host,
            url=process.url,
            storage=storage,
            auth=auth,
            credentials=credentials,
            token_server=token_server,
        )


@contextlib.contextmanager
def registry_with_fixtures(*, python: bool = False) -> Iterator[Registry]:
    """A plain loopback registry with every fixture image pushed (python only if asked).

    Example:
        with registry_with_fixtures(python=True) as registry:
            ref = registry.ref("python:3.11-bookworm")   # 127.0.0.1:PORT/isorun/python:...
    """
    images = build_light()
    if python:
        images.append(build_python())
    with run_registry() as registry:
        for image in images:
            registry.push_image(image)
        yield registry
