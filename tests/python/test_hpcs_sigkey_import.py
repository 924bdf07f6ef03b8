"""`rotor sigkeys import` reads signature key files in the HPCS TKE CLI format. The files here are
written by an independent implementation (Python's `cryptography`) following that format:
PBKDF2-HMAC-SHA-256 (4096 rounds) over the password and `seaSalt`, AES-256-GCM `nonce ‖
ciphertext` in `enckey` of a PEM private key, and `ski` = SHA-256 of the uncompressed point."""

import hashlib
import json
import os
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from conftest import _rotor_bin

PASSWORD = "hpcs sigkey password"


def hpcs_sigkey(path, password=PASSWORD, private_format=serialization.PrivateFormat.PKCS8):
    key = ec.generate_private_key(ec.SECP521R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    pem = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
    salt = os.urandom(32)
    kek = PBKDF2HMAC(algorithm=SHA256(), length=32, salt=salt, iterations=4096).derive(password.encode())
    nonce = os.urandom(12)
    document = {
        "keyType": "p521ec",
        "ski": hashlib.sha256(point).hexdigest(),
        "seaSalt": salt.hex(),
        "enckey": (nonce + AESGCM(kek).encrypt(nonce, pem, None)).hex(),
    }
    path.write_text(json.dumps(document))
    return document


def rotor(home, *args, password=PASSWORD):
    env = dict(os.environ, ROTOR_HOME=str(home), ROTOR_PASSWORD=password)
    return subprocess.run([str(_rotor_bin()), *args], env=env, capture_output=True, text=True, timeout=60)


def test_imports_pkcs8_and_sec1_keys_with_their_ski(tmp_path):
    home = tmp_path / "home"
    for number, private_format in enumerate(
        [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL], start=1
    ):
        source = tmp_path / f"{number}.sigkey"
        document = hpcs_sigkey(source, private_format=private_format)
        done = rotor(home, "sigkeys", "import", str(source), "--name", f"hpcs admin {number}", "--json")
        assert done.returncode == 0, done.stderr
        imported = json.loads(done.stdout)
        assert imported["ski"] == document["ski"]
        assert imported["curve"] == "p521"
    listed = json.loads(rotor(home, "sigkeys", "--json").stdout)["sigkeys"]
    assert [key["curve"] for key in listed] == ["p521", "p521"]
    assert "panicked" not in done.stderr


def test_wrong_password_and_tampered_files_are_refused_and_import_nothing(tmp_path):
    home = tmp_path / "home"
    source = tmp_path / "1.sigkey"
    document = hpcs_sigkey(source)
    refused = rotor(home, "sigkeys", "import", str(source), "--name", "x", password="not the password")
    assert refused.returncode == 1 and "wrong password" in refused.stderr
    cases = {
        "another ski": dict(document, ski="00" * 32),
        "legacy RSA": dict(document, keyType="rsa2048"),
        "bad salt": dict(document, seaSalt="zz"),
        "flipped ciphertext": dict(document, enckey=document["enckey"][:-2] + ("00" if document["enckey"][-2:] != "00" else "01")),
    }
    for what, bad in cases.items():
        source.write_text(json.dumps(bad))
        refused = rotor(home, "sigkeys", "import", str(source), "--name", "x")
        assert refused.returncode == 1, what
        assert "panicked" not in refused.stderr, what
        assert str(source) in refused.stderr, f"{what}: {refused.stderr}"
    source.write_text("{not json")
    assert rotor(home, "sigkeys", "import", str(source), "--name", "x").returncode == 1
    assert json.loads(rotor(home, "sigkeys", "--json").stdout)["sigkeys"] == []
