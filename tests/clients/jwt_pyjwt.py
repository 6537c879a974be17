"""JWTs as PyJWT, a JWT library nobody here wrote, makes and reads them.
Used by tests/independent_tokens.rs.

usage:
  python jwt_pyjwt.py mint
      prints one JSON object: fresh keys (an EC P-256 and an RSA 2048 pair,
      PEM) and, for each of HS256, RS256 and ES256, a token for user "ann"
      and channels ["room/*"] that expires in 60 s, an expired one, and one
      without a kid; the HS256 secret is SECRET below.
  python jwt_pyjwt.py verify
      reads {"tokens": {alg: token}, "keys": {alg: public key or secret}}
      on stdin and prints {alg: claims, or {"error": why}}.
"""

import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "a test secret of thirty-two bytes"
CLAIMS = {"sub": "ann", "channels": ["room/*"], "info": {"name": "Ann"}}


def pem_pair(private):
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def mint() -> None:
    ec_private, ec_public = pem_pair(ec.generate_private_key(ec.SECP256R1()))
    rsa_private, rsa_public = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    signing = {"HS256": SECRET, "RS256": rsa_private, "ES256": ec_private}
    now = int(time.time())
    out = {"keys": {"RS256": [rsa_private, rsa_public], "ES256": [ec_private, ec_public]}, "tokens": {}}
    for alg, key in signing.items():
        out["tokens"][alg] = {
            "valid": jwt.encode({**CLAIMS, "exp": now + 60}, key, algorithm=alg, headers={"kid": alg.lower()}),
            "expired": jwt.encode({**CLAIMS, "exp": now - 10}, key, algorithm=alg, headers={"kid": alg.lower()}),
            "no_kid": jwt.encode({**CLAIMS, "exp": now + 60}, key, algorithm=alg),
        }
    print(json.dumps(out), flush=True)


def verify() -> None:
    request = json.load(sys.stdin)
    out = {}
    for alg, token in request["tokens"].items():
        try:
            out[alg] = jwt.decode(token, request["keys"][alg], algorithms=[alg])
        except jwt.PyJWTError as error:
            out[alg] = {"error": str(error)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    {"mint": mint, "verify": verify}[sys.argv[1]]()
