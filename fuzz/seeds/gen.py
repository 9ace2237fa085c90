#!/usr/bin/env python3
"""Writes the seed corpora in this folder (committed; rerun only to change them).

Session seeds are sealed like the proxy seals them (see proxy/src/session/envelope.rs) with
the fuzz targets' fixed key (32 bytes of 0x42, id `fz`), so the fuzzer starts from values that
open. Needs python3-cryptography.
"""
import base64, os, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_800_000_000


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def text(s):
    b = s.encode()
    return varint(len(b)) + b


def opt(v, enc):
    return b"\x00" if v is None else b"\x01" + enc(v)


def session(user, email, groups, expires, tokens=None):
    """postcard encoding of proxy::session::Session."""
    out = text(user) + opt(email, text) + varint(len(groups)) + b"".join(text(g) for g in groups)
    out += text("oidc:test") + varint(NOW) + varint(NOW) + varint(expires)
    def tok(t):
        return text(t[0]) + opt(t[1], text) + varint(t[2]) + opt(t[3], text)
    return out + opt(tokens, tok)


def seal(plain, cookie="__Host-vouchrs_session", key=b"\x42" * 32, kid=b"fz"):
    header = bytes([1, len(kid)]) + kid
    nonce = bytes(range(12))
    sealed = AESGCM(key).encrypt(nonce, plain, header + cookie.encode())
    return base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode()


def session_seed(mode, now, body):
    return bytes([mode]) + struct.pack("<Q", now) + (body.encode() if isinstance(body, str) else body)


# session_cookie: mode even = Cookie header to scan and open, odd = plaintext to seal.
alice = seal(session("alice", "alice@example.com", ["dev", "ops"], NOW + 86400))
bob = seal(session("bob", None, [], NOW + 60, ("test", "rt", NOW + 30, "idt")))
write("session_cookie", "valid", session_seed(0, NOW, f"__Host-vouchrs_session={alice}"))
write("session_cookie", "expired", session_seed(0, NOW + 86400, f"__Host-vouchrs_session={alice}"))
write("session_cookie", "tokens", session_seed(0, NOW, f"a=1; __Host-vouchrs_session={bob}; b=2"))
write("session_cookie", "tossed", session_seed(0, NOW, f"__Host-vouchrs_session=AAAA\n__Host-vouchrs_session={alice}; __host-vouchrs_session=x"))
half = len(alice) // 2
write("session_cookie", "chunks", session_seed(0, NOW, f"__Host-vouchrs_session_0={alice[:half]}; __Host-vouchrs_session_1={alice[half:]}"))
write("session_cookie", "other_name", session_seed(0, NOW, f"__Host-vouchrs_session={seal(b'x', cookie='other')}"))
write("session_cookie", "seal", session_seed(1, 7, session("carol", "c@example.com", ["g"], NOW)))

# return_to: raw rd values and request paths.
for i, v in enumerate(["/", "/app/page?x=1&y=2", "//evil.com", "/\\evil.com", "https://evil.com",
                       "/%2F%2Fevil.com", "%2F%2Fevil.com", "/\t/evil.com", "/a b?rd=https://evil#f",
                       "/\u00e9", "/a/../..//evil.com"]):
    write("return_to", f"seed{i}", v)

# skip_auth_path: request paths near the `/public/*` rule.
for i, v in enumerate(["/public/app.js", "/public/my%20file.css", "/public/..%2Fadmin",
                       "/public/%2e%2e/admin", "/public//x", "/public;x/../admin", "/public\\..\\admin",
                       "/public/%c0%ae%c0%ae/admin", "/public/caf%C3%A9?x=1", "/public/%252e"]):
    write("skip_auth_path", f"seed{i}", v)

# request_headers: flags byte, then `name: value` lines.
def headers(flags, lines):
    return bytes([flags]) + "\n".join(lines).encode()
write("request_headers", "spoof", headers(2, [
    "host: app.example.com", "x-auth-request-user: mallory", "x_auth_request_user: m",
    "X-Auth-Request-Email: m@evil", "x-forwarded-for: 1.2.3.4", "x_forwarded_for: 5.6.7.8",
    "forwarded: for=1.2.3.4", "x-real-ip: 1.2.3.4", "x-forwarded-host: evil.com",
    "connection: keep-alive, x-secret", "x-secret: 1", "te: trailers", "transfer_encoding: chunked",
    "cookie: a=1; __Host-vouchrs_session=V; vouchrs_session_oidc=x", "cookie: __secure-VOUCHRS_SESSION=y; b=2"]))
write("request_headers", "trusted", headers(1 | 4, [
    "x-forwarded-for: 198.51.100.1", "x-forwarded-proto: http", "x-forwarded-host: app.example.com",
    "cookie: theme=dark"]))

# config: selector byte, then TOML.
with open(os.path.join(HERE, "..", "..", "config", "proxy.example.toml"), "rb") as f:
    write("config", "example", b"\x00" + f.read())
write("config", "minimal", b"\x01[upstream]\nurl = \"http://127.0.0.1:3000\"\n")
write("config", "full", b"\x02" + b"""[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
public_url = "https://app.example.com"
max_connections = 10
header_read_timeout = "1s 500ms"
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[upstream]
url = "https://app.internal:8443"
response_timeout = "2m"
[session]
cookie_name = "sess"
secure = false
duration_hours = 8
refresh_hours = 1
[auth]
prefix = "/_auth"
skip_auth = ["/health", "/static/*"]
[identity_headers]
user = "X-User"
email = "X-Email"
groups = "X-Groups"
[[oidc.providers]]
name = "google"
issuer = "https://accounts.google.com"
client_id = "id"
client_secret_env = "SECRET"
[access]
allowed_domains = ["example.com"]
allowed_groups = ["dev"]
required_claims = { hd = "example.com" }
""")
