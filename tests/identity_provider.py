"""A JWT issuer for tests: signing keys of each kind the gateway verifies, a JWKS served on loopback, rotation."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

MAKERS = {
    "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


class SigningKey:
    def __init__(self, algorithm: str):
        self.algorithm = algorithm
        self.kid = f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}"
        self.private = MAKERS[algorithm]()

    def jwk(self) -> dict:
        public = jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.algorithm}


class Issuer:
    """An identity provider: ``token(...)`` signs, ``rotate()`` replaces the published keys, the JWKS is served at
    ``jwks_url`` (``body`` overrides what it answers, ``hits`` counts the fetches)."""

    def __init__(self):
        self.issuer = f"https://idp-{uuid.uuid4().hex[:8]}.example"
        self.keys = {alg: SigningKey(alg) for alg in MAKERS}
        self.published = list(self.keys.values())
        self.body: bytes | None = None
        self.hits = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                issuer.hits += 1
                body = issuer.body if issuer.body is not None else json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict:
        return {"keys": [key.jwk() for key in self.published]}

    def rotate(self, algorithm: str = "RS256") -> SigningKey:
        """A new key for ``algorithm`` replaces the old one in the published set."""
        old = self.keys[algorithm]
        self.keys[algorithm] = SigningKey(algorithm)
        self.published = [key for key in self.published if key is not old] + [self.keys[algorithm]]
        return self.keys[algorithm]

    def token(self, algorithm="RS256", key: SigningKey | None = None, headers=None, lifetime=300, **claims) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": "gateway", "sub": "ada@example.com", "iat": now, "exp": now + lifetime,
                   **claims}  # fmt: skip
        payload = {name: value for name, value in payload.items() if value is not None}
        key = key or self.keys[algorithm]
        return jwt.encode(payload, key.private, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})})

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
