"""Secure import through an import token, driven by IBM's SDK: the client encrypts key material
to the token's RSA public key (RSA-OAEP) and proves it holds the material by encrypting the
token's nonce under it (AES-GCM). The RSA private key exists only inside crypto units."""

import base64
import os
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from ibm_cloud_sdk_core import ApiException

from kphelpers import b64d, b64e, body, body_of

KEY_TYPE = "application/vnd.ibm.kms.key+json"


def oaep(hash_algorithm):
    return padding.OAEP(mgf=padding.MGF1(hash_algorithm), algorithm=hash_algorithm, label=None)


def fresh_token(kp, rotor, retrievals=1):
    created = kp.post_import_token(rotor.instance, expiration=600, max_allowed_retrievals=retrievals)
    assert created.get_status_code() == 201
    assert body_of(created.get_result())["remainingRetrievals"] == retrievals
    token = body_of(kp.get_import_token(rotor.instance).get_result())
    assert token["remainingRetrievals"] == retrievals - 1
    public_key = serialization.load_pem_public_key(b64d(token["payload"]))
    assert public_key.key_size == 4096
    return public_key, b64d(token["nonce"])


def secure_body(name, public_key, nonce, material, *, extractable=False, algorithm="RSAES_OAEP_SHA_256",
                encrypted_nonce=None):
    hash_algorithm = hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()
    iv = os.urandom(12)
    if encrypted_nonce is None:
        encrypted_nonce = AESGCM(material).encrypt(iv, nonce, None)
    resource = {
        "type": KEY_TYPE,
        "name": name,
        "extractable": extractable,
        "payload": b64e(public_key.encrypt(material, oaep(hash_algorithm))),
        "encryptedNonce": b64e(encrypted_nonce),
        "iv": b64e(iv),
        "encryptionAlgorithm": algorithm,
    }
    return {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [resource]}


def test_secure_import_of_a_standard_key_keeps_the_exact_material(kp, rotor):
    public_key, nonce = fresh_token(kp, rotor)
    material = rotor.secrets.add("securely imported standard key", os.urandom(32))
    name = f"secure-std-{uuid.uuid4().hex[:8]}"
    created = kp.create_key(rotor.instance, body(secure_body(name, public_key, nonce, material, extractable=True)))
    assert created.get_status_code() == 201
    key = body_of(created.get_result())["resources"][0]
    assert key["imported"] is True
    fetched = body_of(kp.get_key(key["id"], rotor.instance).get_result())["resources"][0]
    assert b64d(fetched["payload"]) == material


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1"])
def test_secure_import_of_a_root_key_wraps_and_unwraps(kp, rotor, algorithm):
    public_key, nonce = fresh_token(kp, rotor, retrievals=2)
    material = rotor.secrets.add("securely imported root key", os.urandom(32))
    name = f"secure-root-{uuid.uuid4().hex[:8]}"
    created = kp.create_key(rotor.instance, body(secure_body(name, public_key, nonce, material, algorithm=algorithm)))
    key = body_of(created.get_result())["resources"][0]
    assert key["imported"] is True and key["extractable"] is False
    dek = rotor.secrets.add("dek under securely imported key", os.urandom(32))
    wrapped = body_of(kp.wrap_key(key["id"], rotor.instance, key_action_wrap_body=body({"plaintext": b64e(dek)})).get_result())
    unwrapped = body_of(kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]})).get_result())
    assert b64d(unwrapped["plaintext"]) == dek


def test_secure_import_refuses_a_wrong_nonce_proof_and_changes_nothing(kp, rotor, raw):
    public_key, nonce = fresh_token(kp, rotor)
    material = rotor.secrets.add("material with a forged nonce", os.urandom(32))
    before = int(kp.get_key_collection_metadata(rotor.instance, state=[1, 2, 3]).get_headers()["Key-Total"])
    iv = os.urandom(12)
    forged = AESGCM(material).encrypt(iv, b"not the nonce", None)
    with pytest.raises(ApiException) as refused:
        kp.create_key(rotor.instance, body(secure_body("forged-nonce", public_key, nonce, material, encrypted_nonce=forged)))
    assert refused.value.status_code == 422
    # Material encrypted with the wrong OAEP hash does not decrypt either.
    with pytest.raises(ApiException) as refused:
        wrong_hash = secure_body("wrong-hash", public_key, nonce, material, algorithm="RSAES_OAEP_SHA_1")
        wrong_hash["resources"][0]["encryptionAlgorithm"] = "RSAES_OAEP_SHA_256"
        kp.create_key(rotor.instance, body(wrong_hash))
    assert refused.value.status_code == 422
    with pytest.raises(ApiException) as refused:
        kp.create_key(rotor.instance, body(secure_body("bad-alg", public_key, nonce, material, algorithm="RSAES_PKCS1_V1_5")))
    assert refused.value.status_code == 400
    after = int(kp.get_key_collection_metadata(rotor.instance, state=[1, 2, 3]).get_headers()["Key-Total"])
    assert after == before


def test_import_token_retrievals_are_limited_and_bad_parameters_refused(kp, rotor):
    fresh_token(kp, rotor, retrievals=1)
    with pytest.raises(ApiException) as exhausted:
        kp.get_import_token(rotor.instance)
    assert exhausted.value.status_code == 409
    for expiration, retrievals in [(10, 1), (90000, 1), (600, 0)]:
        with pytest.raises(ApiException) as refused:
            kp.post_import_token(rotor.instance, expiration=expiration, max_allowed_retrievals=retrievals)
        assert refused.value.status_code == 400


def test_import_token_needs_the_right_roles(rotor):
    reader = rotor.client("reader")
    with pytest.raises(ApiException) as refused:
        reader.post_import_token(rotor.instance)
    assert refused.value.status_code == 403
    with pytest.raises(ApiException) as refused:
        reader.get_import_token(rotor.instance)
    assert refused.value.status_code == 403
