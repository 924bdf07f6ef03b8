"""rotor's Key Protect API v2 driven through IBM's official Python SDK (`keyprotect`).

Every test makes its own keys, rings and aliases (names carry a per-run tag), so tests need no
order among themselves; they share only the session's `rotor dev` instance (see conftest.py).
Requests the SDK cannot send (bad tokens, malformed bodies) go through `requests` with a token
from the SDK's own IAM authenticator.

Other identities (reader, writer, manager2, admin) use the API keys `rotor dev` lists under
`api_keys` in its info file; without that list, tokens are forged with the service's own signing
key (DIR/service/iam.key). Tests marked "white-box" always forge tokens (an expired one, one for
every instance); they skip when that file is not readable.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import itertools
import json
import os
import time
import uuid

import jwt
import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator, IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

from kphelpers import COLLECTION_MEDIA_TYPE, RUN_ID, b64d, b64e, b64url, body, body_of, find_leaks

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
ALL_STATES = [1, 2, 3, 5]
#: The states listed when no filter is given (Key Protect: 0-3; rotor has no pre-activation keys).
#: The helpers pass it explicitly because the SDK sends an empty `state=` when the caller gives
#: none, which rotor refuses (see test_sdk_list_calls_without_a_state_filter).
DEFAULT_STATES = [1, 2, 3]

_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{RUN_ID}-{next(_counter)}"


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def expect_status(*statuses):
    """The SDK call inside must raise ApiException with one of `statuses`."""
    with pytest.raises(ApiException) as info:
        yield info
    err = info.value
    text = err.http_response.text if err.http_response is not None else ""
    assert err.status_code in statuses, (
        f"expected HTTP {statuses}, got {err.status_code}: {err.message}; body: {text[:500]}"
    )
    if err.http_response is not None and "errorMsg" in text:
        # Key Protect's error body is a collection, answered with the collection media type.
        assert err.http_response.headers["Content-Type"] == COLLECTION_MEDIA_TYPE


def key_resource(name, *, extractable=False, payload=None, description=None, aliases=None, **extra):
    resource = {"type": KEY_TYPE, "name": name, "extractable": extractable}
    if description is not None:
        resource["description"] = description
    if payload is not None:
        resource["payload"] = b64e(payload)
    if aliases is not None:
        resource["aliases"] = aliases
    resource.update(extra)
    return {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [resource]}


def single(result: dict) -> dict:
    assert result["metadata"]["collectionTotal"] == 1, result
    assert len(result["resources"]) == 1, result
    return result["resources"][0]


def create_key(kp, rotor, *, name=None, extractable=False, payload=None, ring=None, aliases=None,
               description=None) -> dict:
    """Creates (or imports, with `payload`) a key through the SDK; records every secret seen."""
    name = name or unique("key")
    if payload is not None:
        rotor.secrets.add(f"imported material of {name}", payload)
    response = kp.create_key(
        rotor.instance,
        body(key_resource(name, extractable=extractable, payload=payload, aliases=aliases,
                          description=description)),
        x_kms_key_ring=ring,
    )
    assert response.get_status_code() == 201
    assert response.get_headers()["Content-Type"] == COLLECTION_MEDIA_TYPE
    result = body_of(response.get_result())
    assert result["metadata"]["collectionType"] == KEY_TYPE
    key = single(result)
    if "payload" in key:
        rotor.secrets.add(f"payload of {name} at creation", b64d(key["payload"]))
    assert key["name"] == name
    assert key["extractable"] is extractable
    uuid.UUID(key["id"])
    return key


def get_key(kp, rotor, key_id) -> dict:
    response = kp.get_key(key_id, rotor.instance)
    assert response.get_status_code() == 200
    assert response.get_headers()["Content-Type"] == COLLECTION_MEDIA_TYPE
    key = single(body_of(response.get_result()))
    if "payload" in key:
        rotor.secrets.add(f"payload of {key['id']}", b64d(key["payload"]))
    return key


def metadata(kp, rotor, key_id) -> dict:
    response = kp.get_key_metadata(key_id, rotor.instance)
    assert response.get_status_code() == 200
    key = single(body_of(response.get_result()))
    assert "payload" not in key, "metadata must never carry key material"
    return key


def versions(kp, rotor, key_id) -> list[str]:
    response = kp.get_key_versions(key_id, rotor.instance)
    assert response.get_status_code() == 200
    return [v["id"] for v in body_of(response.get_result())["resources"]]


def key_total(kp, rotor, **filters) -> int:
    filters.setdefault("state", DEFAULT_STATES)
    response = kp.get_key_collection_metadata(rotor.instance, **filters)
    assert response.get_status_code() == 200
    assert body_of(response.get_result()) is None
    return int(response.get_headers()["Key-Total"])


def list_ids(kp, rotor, **filters) -> list[str]:
    filters.setdefault("state", DEFAULT_STATES)
    response = kp.get_keys(rotor.instance, limit=5000, **filters)
    assert response.get_status_code() == 200
    assert response.get_headers()["Content-Type"] == COLLECTION_MEDIA_TYPE
    result = body_of(response.get_result())
    resources = result.get("resources", [])
    assert result["metadata"]["collectionTotal"] == len(resources)
    for key in resources:
        assert "payload" not in key, "a key list must never carry key material"
    return [key["id"] for key in resources]


def wrap(kp, rotor, key_id, plaintext=None, aad=None) -> dict:
    request = {}
    if plaintext is not None:
        rotor.secrets.add("DEK given to wrap", plaintext)
        request["plaintext"] = b64e(plaintext)
    if aad is not None:
        request["aad"] = aad
    response = kp.wrap_key(key_id, rotor.instance, key_action_wrap_body=body(request))
    assert response.get_status_code() == 200
    # Flat bodies are plain JSON, which the SDK decodes itself.
    assert isinstance(response.get_result(), dict)
    result = body_of(response.get_result())
    assert b64d(result["ciphertext"])
    if plaintext is None:
        generated = b64d(result["plaintext"])
        rotor.secrets.add("DEK generated by wrap", generated)
    return result


def unwrap(kp, rotor, key_id, ciphertext, aad=None) -> dict:
    request = {"ciphertext": ciphertext}
    if aad is not None:
        request["aad"] = aad
    response = kp.unwrap_key(key_id, rotor.instance, body(request))
    assert response.get_status_code() == 200
    assert isinstance(response.get_result(), dict)
    result = body_of(response.get_result())
    rotor.secrets.add("DEK returned by unwrap", b64d(result["plaintext"]))
    return result


def rotate(kp, rotor, key_id, payload=None):
    request = {}
    if payload is not None:
        rotor.secrets.add("rotation material", payload)
        request["payload"] = b64e(payload)
    response = kp.rotate_key(key_id, rotor.instance, key_action_rotate_body=body(request))
    assert response.get_status_code() in (200, 204)


def delete(kp, rotor, key_id) -> dict | None:
    response = kp.delete_key(key_id, rotor.instance)
    assert response.get_status_code() in (200, 204)
    result = body_of(response.get_result())
    if result is not None:
        key = single(result)
        assert key["deleted"] is True
        return key
    return None


def instance_dual_auth(kp, rotor, enabled: bool):
    response = kp.put_instance_policy(
        rotor.instance,
        {
            "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
            "resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": enabled}}],
        },
        policy="dualAuthDelete",
    )
    assert response.get_status_code() == 204


def flip(ciphertext: str, index: int) -> str:
    data = bytearray(b64d(ciphertext))
    data[index] ^= 0x01
    return b64e(bytes(data))


def sdk_with_token(rotor, token) -> IbmKeyProtectApiV2:
    service = IbmKeyProtectApiV2(authenticator=BearerTokenAuthenticator(token))
    service.set_service_url(rotor.endpoint)
    return service


def sub_of(service: IbmKeyProtectApiV2) -> str:
    """The identity (`sub`) in the access token an SDK client sends."""
    authenticator = service.authenticator
    token = (authenticator.token_manager.get_token() if hasattr(authenticator, "token_manager")
             else authenticator.bearer_token)
    return jwt.decode(token, options={"verify_signature": False})["sub"]


# ---------------------------------------------------------------------------------------------
# IAM


def test_iam_sdk_authenticator_fetches_and_decodes_the_token(kp, rotor):
    token = kp.authenticator.token_manager.get_token()
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["iss"] == "rotor"
    assert isinstance(claims["sub"], str) and claims["sub"]
    names = [name for name, key in (rotor.info.get("api_keys") or {}).items() if key == rotor.api_key]
    if names:
        assert claims["sub"] in names
    assert claims["role"] == "Manager"
    assert claims["instances"] == [rotor.instance]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["exp"] > time.time() + 3000
    # The SDK stored the expiry it decoded from the token.
    assert kp.authenticator.token_manager.expire_time == claims["exp"]
    response = kp.list_key_rings(rotor.instance)
    assert response.get_status_code() == 200
    assert "default" in [ring["id"] for ring in body_of(response.get_result())["resources"]]
    response = kp.get_keys(rotor.instance, state=DEFAULT_STATES)
    assert response.get_status_code() == 200
    assert body_of(response.get_result())["metadata"]["collectionType"] == KEY_TYPE


def test_iam_token_endpoint_answers_like_ibm_iam(rotor):
    url = rotor.endpoint + "/identity/token"
    response = requests.post(
        url,
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": rotor.api_key},
        headers={"Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert token["expiration"] == claims["exp"]
    assert "no-store" in response.headers.get("Cache-Control", "")

    bad_grant = requests.post(url, data={"grant_type": "password", "apikey": rotor.api_key}, timeout=30)
    assert bad_grant.status_code == 400
    assert bad_grant.json()["errorCode"] == "BXNIM0109E"
    no_key = requests.post(url, data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey"}, timeout=30)
    assert no_key.status_code == 400
    assert no_key.json()["errorCode"] == "BXNIM0109E"


def test_iam_wrong_api_key_fails_at_the_token_endpoint(rotor):
    wrong = "rotor_" + b64url(os.urandom(32))
    service = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(wrong, url=rotor.endpoint))
    service.set_service_url(rotor.endpoint)
    with expect_status(400) as info:
        service.get_keys(rotor.instance)
    # The error came from the token endpoint, not from the key routes.
    assert info.value.http_response.url.endswith("/identity/token")
    assert "API key" in info.value.message
    assert wrong not in info.value.http_response.text

    raw = requests.post(
        rotor.endpoint + "/identity/token",
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": wrong},
        timeout=30,
    )
    assert raw.status_code == 400
    assert raw.json()["errorCode"] == "BXNIM0415E"


def _bad_tokens(rotor, raw):
    good = raw.token()
    header_b64, payload_b64, _ = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    other_key = os.urandom(32)

    def sign(header, payload, key):
        signing_input = f"{header}.{payload}".encode()
        return f"{header}.{payload}.{b64url(hmac.new(key, signing_input, hashlib.sha256).digest())}"

    elevated = dict(claims, sub="mallory", exp=claims["exp"] + 10_000)
    elevated_b64 = b64url(json.dumps(elevated).encode())
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    tokens = {
        "garbage": "garbage",
        "wrongly signed (same claims, another HMAC key)": sign(header_b64, payload_b64, other_key),
        "claims altered, signature kept": f"{header_b64}.{elevated_b64}.{good.split('.')[2]}",
        "alg none": f"{none_header}.{payload_b64}.",
        "truncated signature": good[:-5],
        "four parts": good + ".AAAA",
        "empty": "",
        "8 KiB+ token": "a" * 9000,
    }
    return tokens


def test_iam_bad_tokens_get_401(rotor, raw):
    for what, token in _bad_tokens(rotor, raw).items():
        response = raw.request("GET", "/api/v2/keys", token=token)
        assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:300]}"
        if len(token) > 8:
            assert token not in response.text, f"{what}: the token is echoed"
    # No Authorization header at all, and another scheme.
    response = requests.get(rotor.endpoint + "/api/v2/keys", headers={"Bluemix-Instance": rotor.instance},
                            timeout=30)
    assert response.status_code == 401
    response = requests.get(rotor.endpoint + "/api/v2/keys",
                            headers={"Bluemix-Instance": rotor.instance, "Authorization": "Basic Zm9vOmJhcg=="},
                            timeout=30)
    assert response.status_code == 401
    # Through the SDK: its error handling sees a 401.
    with expect_status(401):
        sdk_with_token(rotor, "garbage").get_keys(rotor.instance)


def test_iam_expired_token_gets_401(rotor, raw):
    """White-box: a correctly signed token whose 'exp' has passed."""
    expired = rotor.forge_token(exp_in=-60)
    response = raw.request("GET", "/api/v2/keys", token=expired)
    assert response.status_code == 401, response.text
    assert "expired" in response.text
    with expect_status(401):
        sdk_with_token(rotor, expired).get_keys(rotor.instance)
    # The same forging with the right expiry works, so the 401 above is about expiry alone.
    assert raw.request("GET", "/api/v2/keys", token=rotor.forge_token()).status_code == 200


def test_iam_bluemix_instance_header(kp, rotor, raw):
    missing = raw.request("GET", "/api/v2/keys", instance=None)
    assert 400 <= missing.status_code < 500, missing.text
    assert missing.status_code == 400
    malformed = raw.request("GET", "/api/v2/keys", instance="not-an-instance")
    assert malformed.status_code == 400, malformed.text
    unknown = str(uuid.uuid4())
    with expect_status(400, 401, 403, 404):
        kp.get_keys(unknown)
    with expect_status(400, 401, 403, 404):
        kp.create_key(unknown, body(key_resource(unique("unknown-instance"))))
    with expect_status(400, 401, 403, 404):
        kp.get_key_collection_metadata(unknown)


def test_iam_unknown_instance_with_wildcard_token_is_404(rotor, raw):
    """White-box: a token covering every instance reaches the instance lookup."""
    token = rotor.forge_token(instances=["*"])
    response = raw.request("GET", "/api/v2/keys", token=token, instance=str(uuid.uuid4()))
    assert response.status_code == 404, response.text


def test_iam_roles_are_enforced(kp, rotor):
    """Reader, Writer and Crypto Unit Administrator identities of `rotor dev` through the SDK (their
    API keys from the info file; forged tokens, white-box, when it lists none)."""
    reader, writer, unit_admin = rotor.client("reader"), rotor.client("writer"), rotor.client("admin")
    key = create_key(kp, rotor)
    before = key_total(kp, rotor, state=ALL_STATES)

    assert reader.get_keys(rotor.instance, state=DEFAULT_STATES).get_status_code() == 200
    assert reader.get_key_metadata(key["id"], rotor.instance).get_status_code() == 200
    with expect_status(403):
        reader.create_key(rotor.instance, body(key_resource(unique("by-reader"))))
    with expect_status(403):
        reader.rotate_key(key["id"], rotor.instance)
    with expect_status(403):
        reader.disable_key(key["id"], rotor.instance)
    with expect_status(403):
        reader.delete_key(key["id"], rotor.instance)
    with expect_status(403):
        writer.delete_key(key["id"], rotor.instance)
    with expect_status(403):
        writer.put_instance_policy(rotor.instance, {"resources": [
            {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}}]})
    with expect_status(403):
        writer.create_key_ring(unique("ring-by-writer"), rotor.instance)
    with expect_status(403):
        unit_admin.get_keys(rotor.instance, state=DEFAULT_STATES)
    with expect_status(403):
        unit_admin.create_key(rotor.instance, body(key_resource(unique("by-unit-admin"))))
    assert key_total(kp, rotor, state=ALL_STATES) == before
    assert metadata(kp, rotor, key["id"])["state"] == 1
    assert len(versions(kp, rotor, key["id"])) == 1

    response = writer.create_key(rotor.instance, body(key_resource(unique("by-writer"))))
    assert response.get_status_code() == 201
    assert single(body_of(response.get_result()))["createdBy"] == sub_of(writer)
    assert writer.rotate_key(key["id"], rotor.instance).get_status_code() in (200, 204)
    assert len(versions(kp, rotor, key["id"])) == 2


# ---------------------------------------------------------------------------------------------
# keys


def test_create_root_and_standard_keys(kp, rotor):
    before = key_total(kp, rotor)
    root = create_key(kp, rotor, description="a root key")
    assert root["type"] == KEY_TYPE
    assert root["state"] == 1
    assert root["imported"] is False
    assert root["deleted"] is False
    assert root["keyRingID"] == "default"
    assert root["description"] == "a root key"
    assert root["id"] in root["crn"]
    assert "payload" not in root, "a root key's material must never leave the service"
    uuid.UUID(root["keyVersion"]["id"])

    fetched = get_key(kp, rotor, root["id"])
    assert fetched["id"] == root["id"]
    assert fetched["name"] == root["name"]
    assert fetched["extractable"] is False
    assert "payload" not in fetched
    assert fetched["keyVersion"]["id"] == root["keyVersion"]["id"]

    standard = create_key(kp, rotor, extractable=True)
    assert standard["imported"] is False
    material = b64d(get_key(kp, rotor, standard["id"])["payload"])
    assert len(material) == 32
    if "payload" in standard:
        assert b64d(standard["payload"]) == material
    assert b64d(get_key(kp, rotor, standard["id"])["payload"]) == material, "the material is stable"
    other = create_key(kp, rotor, extractable=True)
    assert b64d(get_key(kp, rotor, other["id"])["payload"]) != material
    assert "payload" not in metadata(kp, rotor, standard["id"])
    assert key_total(kp, rotor) == before + 3


def test_import_root_key(kp, rotor):
    material = os.urandom(32)
    key = create_key(kp, rotor, payload=material)
    assert key["imported"] is True
    assert key["extractable"] is False
    assert "payload" not in key
    fetched = get_key(kp, rotor, key["id"])
    assert fetched["imported"] is True
    assert "payload" not in fetched
    assert metadata(kp, rotor, key["id"])["imported"] is True
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek)
    assert b64d(unwrap(kp, rotor, key["id"], wrapped["ciphertext"])["plaintext"]) == dek


def test_import_standard_key_returns_the_same_material(kp, rotor):
    material = os.urandom(32)
    key = create_key(kp, rotor, extractable=True, payload=material)
    assert key["imported"] is True
    assert b64d(get_key(kp, rotor, key["id"])["payload"]) == material


def test_list_paging_and_filters(kp, rotor, raw):
    roots = [create_key(kp, rotor)["id"] for _ in range(3)]
    standards = [create_key(kp, rotor, extractable=True)["id"] for _ in range(2)]
    everything = list_ids(kp, rotor)
    assert set(roots + standards) <= set(everything)
    assert len(everything) == len(set(everything))
    assert key_total(kp, rotor) == len(everything)

    for limit in (1, 2, 3):
        pages = []
        for offset in range(0, len(everything) + limit, limit):
            response = kp.get_keys(rotor.instance, limit=limit, offset=offset, state=DEFAULT_STATES)
            assert response.get_status_code() == 200
            page = [k["id"] for k in body_of(response.get_result()).get("resources", [])]
            assert page == everything[offset:offset + limit], (limit, offset)
            pages += page
        assert pages == everything

    standard_ids = list_ids(kp, rotor, extractable=True)
    root_ids = list_ids(kp, rotor, extractable=False)
    assert set(standards) <= set(standard_ids)
    assert not set(roots) & set(standard_ids)
    assert set(roots) <= set(root_ids)
    assert not set(standards) & set(root_ids)
    assert sorted(standard_ids + root_ids) == sorted(everything)
    assert key_total(kp, rotor, extractable=True) == len(standard_ids)
    assert key_total(kp, rotor, extractable=False) == len(root_ids)

    # States: one disabled, one deleted.
    disabled, deleted = roots[0], roots[1]
    assert kp.disable_key(disabled, rotor.instance).get_status_code() == 204
    delete(kp, rotor, deleted)
    assert disabled in list_ids(kp, rotor, state=[2])
    assert disabled not in list_ids(kp, rotor, state=[1])
    assert deleted in list_ids(kp, rotor, state=[5])
    assert deleted not in list_ids(kp, rotor)
    unfiltered = raw.request("GET", "/api/v2/keys", params={"limit": 5000})
    assert unfiltered.status_code == 200
    unfiltered_ids = [k["id"] for k in unfiltered.json()["resources"]]
    assert deleted not in unfiltered_ids, "deleted keys are not listed by default"
    assert disabled in unfiltered_ids and roots[2] in unfiltered_ids
    head = raw.request("HEAD", "/api/v2/keys")
    assert head.status_code == 200 and int(head.headers["Key-Total"]) == len(unfiltered_ids)
    both = list_ids(kp, rotor, state=[1, 5])
    assert deleted in both and roots[2] in both and disabled not in both
    assert key_total(kp, rotor, state=[5]) == len(list_ids(kp, rotor, state=[5]))
    assert key_total(kp, rotor, state=[2]) == len(list_ids(kp, rotor, state=[2]))
    assert key_total(kp, rotor) == len(list_ids(kp, rotor))
    for key_id in list_ids(kp, rotor, state=[2]):
        assert metadata(kp, rotor, key_id)["state"] == 2


def test_sdk_list_calls_without_a_state_filter(kp, rotor):
    """`get_keys` and `get_key_collection_metadata` without `state` are the SDK's most common
    calls; the SDK then sends an empty `state=` query parameter, which means "no filter"."""
    key = create_key(kp, rotor)
    response = kp.get_keys(rotor.instance)
    assert response.get_status_code() == 200
    assert key["id"] in [k["id"] for k in body_of(response.get_result())["resources"]]
    assert kp.get_keys(rotor.instance, limit=1, offset=0).get_status_code() == 200
    assert kp.get_keys(rotor.instance, extractable=False).get_status_code() == 200
    total = kp.get_key_collection_metadata(rotor.instance)
    assert total.get_status_code() == 200
    assert int(total.get_headers()["Key-Total"]) == key_total(kp, rotor)


def test_list_accepts_every_documented_state(kp, rotor):
    """The SDK documents states 0 (pre-activation), 1, 2, 3 and 5, e.g. `state=0,1,2,3,5`."""
    key = create_key(kp, rotor)
    assert key["id"] in list_ids(kp, rotor, state=[0, 1, 2, 3, 5])
    assert key_total(kp, rotor, state=[0, 1, 2, 3, 5]) >= 1


def test_key_total_follows_creation_and_deletion(kp, rotor):
    before = key_total(kp, rotor)
    key = create_key(kp, rotor)
    assert key_total(kp, rotor) == before + 1
    deleted_before = key_total(kp, rotor, state=[5])
    delete(kp, rotor, key["id"])
    assert key_total(kp, rotor) == before
    assert key_total(kp, rotor, state=[5]) == deleted_before + 1


def test_get_by_id_and_alias_metadata_and_versions(kp, rotor):
    alias = unique("alias")
    key = create_key(kp, rotor, aliases=[alias])
    assert key["aliases"] == [alias]
    by_alias = get_key(kp, rotor, alias)
    assert by_alias["id"] == key["id"]
    meta = metadata(kp, rotor, alias)
    assert meta["id"] == key["id"]
    assert meta["name"] == key["name"]
    assert meta["aliases"] == [alias]
    first_version = meta["keyVersion"]["id"]
    assert versions(kp, rotor, key["id"]) == [first_version]
    assert "lastRotateDate" not in meta

    rotate(kp, rotor, key["id"])
    after = metadata(kp, rotor, key["id"])
    listed = versions(kp, rotor, key["id"])
    assert len(listed) == 2
    assert set(listed) == {first_version, after["keyVersion"]["id"]}
    assert after["keyVersion"]["id"] != first_version
    assert "lastRotateDate" in after
    assert get_key(kp, rotor, key["id"])["keyVersion"]["id"] == after["keyVersion"]["id"]


def test_patch_key_moves_it_to_another_ring(kp, rotor):
    ring = unique("ring")
    assert kp.create_key_ring(ring, rotor.instance).get_status_code() == 201
    key = create_key(kp, rotor)
    response = kp.patch_key(key["id"], rotor.instance, key_patch_body=body({"keyRingID": ring}))
    assert response.get_status_code() == 200
    assert single(body_of(response.get_result()))["keyRingID"] == ring
    assert metadata(kp, rotor, key["id"])["keyRingID"] == ring
    assert list_ids(kp, rotor, x_kms_key_ring=ring) == [key["id"]]
    assert key["id"] not in list_ids(kp, rotor, x_kms_key_ring="default")
    with expect_status(404, 400):
        kp.patch_key(key["id"], rotor.instance, key_patch_body=body({"keyRingID": unique("no-such-ring")}))
    assert metadata(kp, rotor, key["id"])["keyRingID"] == ring


def test_create_key_with_policies_overrides(kp, rotor):
    name = unique("overrides")
    request = key_resource(name, rotation={"enabled": True, "interval_month": 2},
                           dualAuthDelete={"enabled": False})
    response = kp.create_key_with_policies_overrides(rotor.instance, body(request))
    assert response.get_status_code() == 201
    key = single(body_of(response.get_result()))
    assert key["name"] == name
    assert key["extractable"] is False
    assert key["dualAuthDelete"]["enabled"] is False
    policies = body_of(kp.get_policy(key["id"], rotor.instance).get_result())["resources"]
    rotation = [p["rotation"] for p in policies if "rotation" in p]
    assert rotation and rotation[0]["interval_month"] == 2
    assert rotation[0].get("enabled", True) is True
    dual = [p["dualAuthDelete"] for p in policies if "dualAuthDelete" in p]
    assert all(d["enabled"] is False for d in dual)
    # Deletable by one identity: no dual authorization.
    delete(kp, rotor, key["id"])


# ---------------------------------------------------------------------------------------------
# wrap, unwrap, rewrap


def test_wrap_and_unwrap_with_aad(kp, rotor):
    key = create_key(kp, rotor)
    version = metadata(kp, rotor, key["id"])["keyVersion"]["id"]
    dek = os.urandom(32)
    aad = ["tenant-42", "bucket/a b c", "ü"]
    wrapped = wrap(kp, rotor, key["id"], dek, aad)
    assert wrapped["keyVersion"]["id"] == version
    assert dek not in b64d(wrapped["ciphertext"])
    assert wrapped.get("plaintext") in (None, b64e(dek))
    unwrapped = unwrap(kp, rotor, key["id"], wrapped["ciphertext"], aad)
    assert b64d(unwrapped["plaintext"]) == dek
    assert unwrapped["keyVersion"]["id"] == version
    assert "rewrappedKeyVersion" not in unwrapped
    # Wrapping twice gives different ciphertexts of the same DEK.
    again = wrap(kp, rotor, key["id"], dek, aad)
    assert again["ciphertext"] != wrapped["ciphertext"]
    # Unwrapping by alias works too.
    alias = unique("wrap-alias")
    assert kp.create_key_alias(key["id"], alias, rotor.instance).get_status_code() == 201
    assert b64d(unwrap(kp, rotor, alias, again["ciphertext"], aad)["plaintext"]) == dek


def test_wrap_without_plaintext_generates_a_dek(kp, rotor):
    key = create_key(kp, rotor)
    # No body at all, as the SDK sends when key_action_wrap_body is omitted.
    response = kp.wrap_key(key["id"], rotor.instance)
    assert response.get_status_code() == 200
    result = body_of(response.get_result())
    dek = rotor.secrets.add("DEK generated by bodiless wrap", b64d(result["plaintext"]))
    assert len(dek) == 32
    assert b64d(unwrap(kp, rotor, key["id"], result["ciphertext"])["plaintext"]) == dek
    # An empty object, with AAD.
    generated = wrap(kp, rotor, key["id"], aad=["ctx"])
    dek2 = b64d(generated["plaintext"])
    assert len(dek2) == 32 and dek2 != dek
    assert b64d(unwrap(kp, rotor, key["id"], generated["ciphertext"], ["ctx"])["plaintext"]) == dek2


def test_unwrap_with_wrong_aad_is_422(kp, rotor):
    key = create_key(kp, rotor)
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek, ["a", "b"])
    for wrong in (["a", "c"], ["a"], ["a", "b", "c"], ["b", "a"], ["ab"], []):
        with expect_status(422):
            kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"], "aad": wrong}))
    with expect_status(422):
        kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    plain = wrap(kp, rotor, key["id"], os.urandom(32))
    with expect_status(422):
        kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": plain["ciphertext"], "aad": ["x"]}))
    assert b64d(unwrap(kp, rotor, key["id"], wrapped["ciphertext"], ["a", "b"])["plaintext"]) == dek


def _rotated_key_with_old_dek(kp, rotor):
    key = create_key(kp, rotor)
    v1 = metadata(kp, rotor, key["id"])["keyVersion"]["id"]
    dek = os.urandom(32)
    aad = ["rotation"]
    old = wrap(kp, rotor, key["id"], dek, aad)
    assert old["keyVersion"]["id"] == v1
    rotate(kp, rotor, key["id"])
    v2 = metadata(kp, rotor, key["id"])["keyVersion"]["id"]
    assert v2 != v1
    return key, dek, aad, old, v1, v2


def test_dek_wrapped_before_rotation_unwraps_after_it_and_rewraps(kp, rotor):
    key, dek, aad, old, v1, v2 = _rotated_key_with_old_dek(kp, rotor)

    unwrapped = unwrap(kp, rotor, key["id"], old["ciphertext"], aad)
    assert b64d(unwrapped["plaintext"]) == dek
    assert unwrapped["keyVersion"]["id"] == v1
    assert unwrapped["rewrappedKeyVersion"]["id"] == v2

    new = wrap(kp, rotor, key["id"], os.urandom(32), aad)
    assert new["keyVersion"]["id"] == v2

    response = kp.rewrap_key(key["id"], rotor.instance, body({"ciphertext": old["ciphertext"], "aad": aad}))
    assert response.get_status_code() == 200
    rewrapped = body_of(response.get_result())
    assert rewrapped["ciphertext"] != old["ciphertext"]
    assert "plaintext" not in rewrapped
    assert dek not in b64d(rewrapped["ciphertext"])
    fresh = unwrap(kp, rotor, key["id"], rewrapped["ciphertext"], aad)
    assert b64d(fresh["plaintext"]) == dek
    assert fresh["keyVersion"]["id"] == v2
    assert "rewrappedKeyVersion" not in fresh
    # The old ciphertext stays valid.
    assert b64d(unwrap(kp, rotor, key["id"], old["ciphertext"], aad)["plaintext"]) == dek
    # Rewrap needs the AAD as well.
    with expect_status(422):
        kp.rewrap_key(key["id"], rotor.instance, body({"ciphertext": old["ciphertext"], "aad": ["other"]}))


def test_unwrap_after_rotation_returns_the_rewrapped_ciphertext(kp, rotor):
    """Key Protect contract (SDK UnwrapKeyResponseBody, docs 'Unwrapping keys'): unwrapping a
    ciphertext made with an older key version also returns `ciphertext`, the DEK wrapped with the
    latest version, with `rewrappedKeyVersion` naming that version."""
    key, dek, aad, old, v1, v2 = _rotated_key_with_old_dek(kp, rotor)
    unwrapped = unwrap(kp, rotor, key["id"], old["ciphertext"], aad)
    assert unwrapped["rewrappedKeyVersion"]["id"] == v2
    assert "ciphertext" in unwrapped, f"unwrap after rotation returned no new ciphertext: {sorted(unwrapped)}"
    fresh = unwrap(kp, rotor, key["id"], unwrapped["ciphertext"], aad)
    assert b64d(fresh["plaintext"]) == dek
    assert fresh["keyVersion"]["id"] == v2


def test_rewrap_response_names_the_original_and_the_new_version(kp, rotor):
    """Key Protect contract (SDK RewrapKeyResponseBody, docs 'Rewrapping keys'): `keyVersion` is
    the version of the ciphertext sent, `rewrappedKeyVersion` the latest one, used for the new
    ciphertext."""
    key, dek, aad, old, v1, v2 = _rotated_key_with_old_dek(kp, rotor)
    rewrapped = kp.rewrap_key(key["id"], rotor.instance, body({"ciphertext": old["ciphertext"], "aad": aad}))
    result = body_of(rewrapped.get_result())
    assert result["keyVersion"]["id"] == v1, f"keyVersion should be the original version {v1}: {result}"
    assert result["rewrappedKeyVersion"]["id"] == v2, f"rewrappedKeyVersion should be {v2}: {result}"


def test_ciphertext_of_another_key_is_422(kp, rotor):
    first, second = create_key(kp, rotor), create_key(kp, rotor)
    wrapped = wrap(kp, rotor, first["id"], os.urandom(32))
    with expect_status(422):
        kp.unwrap_key(second["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    with expect_status(422):
        kp.rewrap_key(second["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    # Imported key with the same material? Still another key: refused.
    material = os.urandom(32)
    a = create_key(kp, rotor, payload=material)
    b = create_key(kp, rotor, payload=material)
    wrapped = wrap(kp, rotor, a["id"], os.urandom(32))
    with expect_status(422):
        kp.unwrap_key(b["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))


def test_tampered_ciphertext_is_422(kp, rotor):
    key = create_key(kp, rotor)
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek)
    size = len(b64d(wrapped["ciphertext"]))
    for index in sorted({0, 3, 6, 7, size // 2, size - 17, size - 1}):
        with expect_status(422):
            kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": flip(wrapped["ciphertext"], index)}))
    truncated = b64e(b64d(wrapped["ciphertext"])[:-1])
    extended = b64e(b64d(wrapped["ciphertext"]) + b"\x00")
    for bad in (truncated, extended, b64e(b"rk1"), b64e(os.urandom(size))):
        with expect_status(422):
            kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": bad}))
    assert b64d(unwrap(kp, rotor, key["id"], wrapped["ciphertext"])["plaintext"]) == dek


def test_bad_base64_is_400(kp, rotor):
    key = create_key(kp, rotor)
    for bad in ("!!!not base64!!!", "abc", "YWJj=ZGVm"):
        with expect_status(400):
            kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": bad}))
        with expect_status(400):
            kp.wrap_key(key["id"], rotor.instance, key_action_wrap_body=body({"plaintext": bad}))


def test_standard_keys_do_not_wrap(kp, rotor):
    key = create_key(kp, rotor, extractable=True)
    with expect_status(400, 409, 422):
        kp.wrap_key(key["id"], rotor.instance, key_action_wrap_body=body({"plaintext": b64e(os.urandom(32))}))


# ---------------------------------------------------------------------------------------------
# rotate


def test_rotate_generated_root_key(kp, rotor):
    key = create_key(kp, rotor)
    with expect_status(400):
        kp.rotate_key(key["id"], rotor.instance, key_action_rotate_body=body({"payload": b64e(os.urandom(32))}))
    assert len(versions(kp, rotor, key["id"])) == 1
    assert kp.rotate_key(key["id"], rotor.instance).get_status_code() in (200, 204)
    rotate(kp, rotor, key["id"])
    assert len(versions(kp, rotor, key["id"])) == 3
    dek = os.urandom(32)
    assert b64d(unwrap(kp, rotor, key["id"], wrap(kp, rotor, key["id"], dek)["ciphertext"])["plaintext"]) == dek


def test_rotate_imported_root_key_requires_a_payload(kp, rotor):
    key = create_key(kp, rotor, payload=os.urandom(32))
    dek = os.urandom(32)
    old = wrap(kp, rotor, key["id"], dek)
    with expect_status(400):
        kp.rotate_key(key["id"], rotor.instance)
    with expect_status(400):
        kp.rotate_key(key["id"], rotor.instance, key_action_rotate_body=body({}))
    assert len(versions(kp, rotor, key["id"])) == 1
    rotate(kp, rotor, key["id"], os.urandom(32))
    assert len(versions(kp, rotor, key["id"])) == 2
    meta = metadata(kp, rotor, key["id"])
    assert meta["imported"] is True
    assert "payload" not in get_key(kp, rotor, key["id"])
    assert b64d(unwrap(kp, rotor, key["id"], old["ciphertext"])["plaintext"]) == dek
    new = wrap(kp, rotor, key["id"], os.urandom(32))
    assert new["keyVersion"]["id"] == meta["keyVersion"]["id"]


def test_standard_keys_do_not_rotate(kp, rotor):
    key = create_key(kp, rotor, extractable=True)
    with expect_status(400, 409):
        kp.rotate_key(key["id"], rotor.instance)
    assert len(versions(kp, rotor, key["id"])) == 1


# ---------------------------------------------------------------------------------------------
# enable, disable


def test_disabled_key_refuses_wrap_and_unwrap_until_enabled(kp, rotor):
    key = create_key(kp, rotor)
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek)
    assert kp.disable_key(key["id"], rotor.instance).get_status_code() == 204
    assert metadata(kp, rotor, key["id"])["state"] == 2
    with expect_status(409):
        kp.wrap_key(key["id"], rotor.instance, key_action_wrap_body=body({"plaintext": b64e(dek)}))
    with expect_status(409):
        kp.wrap_key(key["id"], rotor.instance)
    with expect_status(409):
        kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    with expect_status(409):
        kp.rewrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    with expect_status(409, 400):
        kp.rotate_key(key["id"], rotor.instance)
    assert len(versions(kp, rotor, key["id"])) == 1

    assert kp.enable_key(key["id"], rotor.instance).get_status_code() == 204
    assert metadata(kp, rotor, key["id"])["state"] == 1
    assert b64d(unwrap(kp, rotor, key["id"], wrapped["ciphertext"])["plaintext"]) == dek
    again = wrap(kp, rotor, key["id"], dek)
    assert b64d(unwrap(kp, rotor, key["id"], again["ciphertext"])["plaintext"]) == dek


def test_disabled_standard_key_keeps_its_material(kp, rotor):
    key = create_key(kp, rotor, extractable=True)
    material = b64d(get_key(kp, rotor, key["id"])["payload"])
    assert kp.disable_key(key["id"], rotor.instance).get_status_code() == 204
    assert kp.enable_key(key["id"], rotor.instance).get_status_code() == 204
    assert b64d(get_key(kp, rotor, key["id"])["payload"]) == material


# ---------------------------------------------------------------------------------------------
# delete, restore, purge


def test_delete_restore_and_purge(kp, rotor):
    key = create_key(kp, rotor)
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek)

    with expect_status(409, 400):
        kp.purge_key(key["id"], rotor.instance)  # not deleted yet
    with expect_status(409, 400):
        kp.restore_key(key["id"], rotor.instance)  # not deleted

    deleted = delete(kp, rotor, key["id"])
    if deleted is not None:
        assert deleted["id"] == key["id"]
    with expect_status(410):
        kp.get_key(key["id"], rotor.instance)
    meta = metadata(kp, rotor, key["id"])
    assert meta["deleted"] is True
    assert meta["state"] == 5
    assert "deletionDate" in meta
    assert meta["deletedBy"] == sub_of(kp)
    with expect_status(409, 410):
        kp.wrap_key(key["id"], rotor.instance, key_action_wrap_body=body({"plaintext": b64e(dek)}))
    with expect_status(409, 410):
        kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    with expect_status(409, 410):
        kp.delete_key(key["id"], rotor.instance)

    response = kp.restore_key(key["id"], rotor.instance)
    assert response.get_status_code() == 201
    restored = single(body_of(response.get_result()))
    assert restored["id"] == key["id"]
    assert restored["deleted"] is False
    assert restored["state"] == 1
    assert metadata(kp, rotor, key["id"])["deleted"] is False
    assert get_key(kp, rotor, key["id"])["id"] == key["id"]
    assert b64d(unwrap(kp, rotor, key["id"], wrapped["ciphertext"])["plaintext"]) == dek

    delete(kp, rotor, key["id"])
    deleted_total = key_total(kp, rotor, state=[5])
    response = kp.purge_key(key["id"], rotor.instance)
    assert response.get_status_code() in (200, 204)
    with expect_status(404):
        kp.get_key_metadata(key["id"], rotor.instance)
    with expect_status(404):
        kp.get_key(key["id"], rotor.instance)
    with expect_status(404):
        kp.purge_key(key["id"], rotor.instance)
    with expect_status(404):
        kp.restore_key(key["id"], rotor.instance)
    with expect_status(404):
        kp.unwrap_key(key["id"], rotor.instance, body({"ciphertext": wrapped["ciphertext"]}))
    assert key["id"] not in list_ids(kp, rotor, state=ALL_STATES)
    assert key_total(kp, rotor, state=[5]) == deleted_total - 1


def test_restore_and_purge_of_a_standard_key(kp, rotor):
    key = create_key(kp, rotor, extractable=True)
    material = b64d(get_key(kp, rotor, key["id"])["payload"])
    delete(kp, rotor, key["id"])
    assert kp.restore_key(key["id"], rotor.instance).get_status_code() == 201
    assert b64d(get_key(kp, rotor, key["id"])["payload"]) == material
    delete(kp, rotor, key["id"])
    kp.purge_key(key["id"], rotor.instance)
    with expect_status(404):
        kp.get_key(key["id"], rotor.instance)


# ---------------------------------------------------------------------------------------------
# dual authorization


def _policies_by_type(result):
    return {p["policy_type"]: p["policy_data"] for p in result.get("resources", [])}


def test_dual_authorization_instance_policy(kp, rotor):
    try:
        instance_dual_auth(kp, rotor, True)
        got = kp.get_instance_policy(rotor.instance, policy="dualAuthDelete")
        assert got.get_status_code() == 200
        assert _policies_by_type(body_of(got.get_result()))["dualAuthDelete"]["enabled"] is True

        key = create_key(kp, rotor)
        with expect_status(409):
            kp.delete_key(key["id"], rotor.instance)
        assert kp.set_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
        meta = metadata(kp, rotor, key["id"])
        assert meta["dualAuthDelete"].get("keySetForDeletion") is True
        assert "authExpiration" in meta["dualAuthDelete"]
        with expect_status(409):
            kp.delete_key(key["id"], rotor.instance)  # the same identity that set it
        assert metadata(kp, rotor, key["id"])["deleted"] is False
        assert kp.unset_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
        assert metadata(kp, rotor, key["id"])["dualAuthDelete"].get("keySetForDeletion") in (None, False)
        with expect_status(409):
            kp.delete_key(key["id"], rotor.instance)

        # A second Manager identity completes the deletion.
        second = rotor.client("manager2")
        assert sub_of(second) != sub_of(kp)
        assert kp.set_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
        assert second.delete_key(key["id"], rotor.instance).get_status_code() in (200, 204)
        meta = metadata(kp, rotor, key["id"])
        assert meta["deleted"] is True
        assert meta["deletedBy"] == sub_of(second)
    finally:
        instance_dual_auth(kp, rotor, False)
    got = body_of(kp.get_instance_policy(rotor.instance, policy="dualAuthDelete").get_result())
    assert _policies_by_type(got)["dualAuthDelete"]["enabled"] is False


def test_dual_authorization_applies_only_to_keys_created_under_the_instance_policy(kp, rotor):
    """Key Protect contract ('Using dual authorization policies for the deletion of keys'): the
    instance policy 'applies to all subsequent keys' which 'automatically inherit' it; 'existing
    keys are not affected by the policy change and will still require a single authorization';
    keys created under it keep it after the instance policy is disabled, since 'after a key
    inherits a dual authorization policy, the policy cannot be reverted'."""
    problems = []
    older = create_key(kp, rotor)
    try:
        instance_dual_auth(kp, rotor, True)
        newer = create_key(kp, rotor)
        if metadata(kp, rotor, newer["id"])["dualAuthDelete"]["enabled"] is not True:
            problems.append("a key created while the instance policy is enabled shows "
                            "dualAuthDelete.enabled = false in its metadata")
        dual = [p["dualAuthDelete"] for p in body_of(kp.get_policy(newer["id"], rotor.instance).get_result())
                .get("resources", []) if "dualAuthDelete" in p]
        if dual != [{"enabled": True}]:
            problems.append(f"GET /keys/{{id}}/policies of a key created under the instance policy lists "
                            f"dualAuthDelete as {dual}, not [{{'enabled': True}}]")
        try:
            kp.delete_key(older["id"], rotor.instance)
        except ApiException as err:
            problems.append(f"a key created before the instance policy was enabled cannot be deleted by one "
                            f"identity while it is enabled: HTTP {err.status_code}")
    finally:
        instance_dual_auth(kp, rotor, False)
    try:
        kp.delete_key(newer["id"], rotor.instance)
        problems.append("once the instance policy is disabled, one identity deletes a key created under it")
    except ApiException as err:
        if err.status_code != 409:
            problems.append(f"deleting a dual-authorization key alone gave HTTP {err.status_code}, not 409")
    assert not problems, "\n".join(problems)


def test_dual_authorization_key_policy(kp, rotor):
    key = create_key(kp, rotor)
    request = {
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 2},
        "resources": [
            {"type": POLICY_TYPE, "rotation": {"interval_month": 3}},
            {"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}},
        ],
    }
    response = kp.put_policy(key["id"], rotor.instance, request)
    assert response.get_status_code() == 200
    put = body_of(response.get_result())["resources"]
    assert any(p.get("rotation", {}).get("interval_month") == 3 for p in put)
    assert any(p.get("dualAuthDelete", {}).get("enabled") is True for p in put)

    got = body_of(kp.get_policy(key["id"], rotor.instance).get_result())["resources"]
    rotation = [p["rotation"] for p in got if "rotation" in p]
    dual = [p["dualAuthDelete"] for p in got if "dualAuthDelete" in p]
    assert rotation and rotation[0]["interval_month"] == 3
    assert dual == [{"enabled": True}]
    for policy in got:
        assert key["id"] in policy["crn"]
    assert metadata(kp, rotor, key["id"])["dualAuthDelete"]["enabled"] is True

    with expect_status(409):
        kp.delete_key(key["id"], rotor.instance)
    assert kp.set_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
    with expect_status(409):
        kp.delete_key(key["id"], rotor.instance)
    assert kp.unset_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
    assert metadata(kp, rotor, key["id"])["deleted"] is False

    # A second Manager identity cannot delete alone either, but completes a deletion the first
    # one set; and the other way round.
    second = rotor.client("manager2")
    with expect_status(409):
        second.delete_key(key["id"], rotor.instance)
    assert kp.set_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
    assert second.delete_key(key["id"], rotor.instance).get_status_code() in (200, 204)
    assert metadata(kp, rotor, key["id"])["deleted"] is True
    assert metadata(kp, rotor, key["id"])["deletedBy"] == sub_of(second)

    other = create_key(kp, rotor)
    assert kp.put_policy(other["id"], rotor.instance, request).get_status_code() == 200
    assert second.set_key_for_deletion(other["id"], rotor.instance).get_status_code() == 204
    with expect_status(409):
        second.delete_key(other["id"], rotor.instance)
    delete(kp, rotor, other["id"])


def test_key_dual_authorization_cannot_be_reverted(kp, rotor):
    """Key Protect contract: 'Once a dual auth policy has been applied to a key, the policy cannot
    be changed ... a dual auth policy on a key cannot be disabled.'"""
    key = create_key(kp, rotor)
    on = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
          "resources": [{"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}]}
    off = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
           "resources": [{"type": POLICY_TYPE, "dualAuthDelete": {"enabled": False}}]}
    assert kp.put_policy(key["id"], rotor.instance, on).get_status_code() == 200
    problems = []
    try:
        response = kp.put_policy(key["id"], rotor.instance, off)
        problems.append(f"PUT dualAuthDelete enabled=false on a dual-authorization key was accepted "
                        f"(HTTP {response.get_status_code()})")
    except ApiException as err:
        assert 400 <= err.status_code < 500, err
    if metadata(kp, rotor, key["id"])["dualAuthDelete"]["enabled"] is not True:
        problems.append("the key's metadata then shows dualAuthDelete.enabled = false")
    try:
        kp.delete_key(key["id"], rotor.instance)
        problems.append("one identity then deleted the key")
    except ApiException as err:
        if err.status_code != 409:
            problems.append(f"deleting it alone gave HTTP {err.status_code}, not 409")
    assert not problems, "\n".join(problems)


def test_writer_can_set_a_key_for_deletion(kp, rotor):
    """Key Protect contract ('Deleting keys that have a dual auth policy'): 'Users with a Writer
    or Manager role can set keys for deletion, but only users with a Manager role can delete'."""
    key = create_key(kp, rotor)
    policy = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
              "resources": [{"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}]}
    assert kp.put_policy(key["id"], rotor.instance, policy).get_status_code() == 200
    writer = rotor.client("writer")
    assert writer.set_key_for_deletion(key["id"], rotor.instance).get_status_code() == 204
    delete(kp, rotor, key["id"])  # the Manager, another identity, completes it


def test_key_policy_rejects_bad_rotation_interval(kp, rotor):
    key = create_key(kp, rotor)
    for months in (0, 13, "3", None):
        request = {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
                   "resources": [{"type": POLICY_TYPE, "rotation": {"interval_month": months}}]}
        with expect_status(400):
            kp.put_policy(key["id"], rotor.instance, request)
    assert not [p for p in body_of(kp.get_policy(key["id"], rotor.instance).get_result()).get("resources", [])
                if "rotation" in p]


# ---------------------------------------------------------------------------------------------
# aliases


def test_aliases(kp, rotor):
    key, other = create_key(kp, rotor), create_key(kp, rotor)
    alias = unique("alias")
    response = kp.create_key_alias(key["id"], alias, rotor.instance)
    assert response.get_status_code() == 201
    created = single(body_of(response.get_result()))
    assert created["alias"] == alias
    assert created["keyId"] == key["id"]
    assert get_key(kp, rotor, alias)["id"] == key["id"]
    assert alias in metadata(kp, rotor, key["id"])["aliases"]

    with expect_status(409):
        kp.create_key_alias(other["id"], alias, rotor.instance)
    assert alias not in metadata(kp, rotor, other["id"]).get("aliases", [])
    assert get_key(kp, rotor, alias)["id"] == key["id"]

    response = kp.delete_key_alias(key["id"], alias, rotor.instance)
    assert response.get_status_code() == 204
    with expect_status(404):
        kp.get_key(alias, rotor.instance)
    with expect_status(404):
        kp.get_key_metadata(alias, rotor.instance)
    assert alias not in metadata(kp, rotor, key["id"]).get("aliases", [])
    with expect_status(404):
        kp.delete_key_alias(key["id"], alias, rotor.instance)
    # Now free for the other key.
    assert kp.create_key_alias(other["id"], alias, rotor.instance).get_status_code() == 201
    assert get_key(kp, rotor, alias)["id"] == other["id"]


def test_alias_rules(kp, rotor):
    key = create_key(kp, rotor)
    for bad in (str(uuid.uuid4()), "a", "has space", "x" * 91):
        with expect_status(400):
            kp.create_key_alias(key["id"], bad, rotor.instance)
    for _ in range(5):
        assert kp.create_key_alias(key["id"], unique("many"), rotor.instance).get_status_code() == 201
    with expect_status(400, 409):
        kp.create_key_alias(key["id"], unique("sixth"), rotor.instance)
    assert len(metadata(kp, rotor, key["id"])["aliases"]) == 5


# ---------------------------------------------------------------------------------------------
# key rings


def test_key_rings(kp, rotor):
    ring = unique("ring")
    response = kp.create_key_ring(ring, rotor.instance)
    assert response.get_status_code() == 201
    with expect_status(409):
        kp.create_key_ring(ring, rotor.instance)
    listed = kp.list_key_rings(rotor.instance)
    assert listed.get_status_code() == 200
    ids = [r["id"] for r in body_of(listed.get_result())["resources"]]
    assert "default" in ids and ring in ids

    moved = create_key(kp, rotor, ring=ring)
    assert moved["keyRingID"] == ring
    purged = create_key(kp, rotor, ring=ring, extractable=True)
    assert sorted(list_ids(kp, rotor, x_kms_key_ring=ring)) == sorted([moved["id"], purged["id"]])
    assert key_total(kp, rotor, x_kms_key_ring=ring) == 2

    with expect_status(409):
        kp.delete_key_ring(ring, rotor.instance)
    kp.patch_key(moved["id"], rotor.instance, key_patch_body=body({"keyRingID": "default"}))
    with expect_status(409):
        kp.delete_key_ring(ring, rotor.instance)
    delete(kp, rotor, purged["id"])
    kp.purge_key(purged["id"], rotor.instance)
    assert kp.delete_key_ring(ring, rotor.instance).get_status_code() == 204
    ids = [r["id"] for r in body_of(kp.list_key_rings(rotor.instance).get_result())["resources"]]
    assert ring not in ids and "default" in ids
    with expect_status(404):
        kp.delete_key_ring(ring, rotor.instance)
    with expect_status(404, 400):
        kp.create_key(rotor.instance, body(key_resource(unique("ringless"))), x_kms_key_ring=ring)
    assert metadata(kp, rotor, moved["id"])["keyRingID"] == "default"


# ---------------------------------------------------------------------------------------------
# registrations, openapi


def test_registrations_are_empty(kp, rotor):
    response = kp.get_registrations_all_keys(rotor.instance)
    assert response.get_status_code() == 200
    result = body_of(response.get_result())
    assert result.get("resources", []) == []
    assert result["metadata"]["collectionTotal"] == 0
    key = create_key(kp, rotor)
    response = kp.get_registrations(key["id"], rotor.instance)
    assert response.get_status_code() == 200
    assert body_of(response.get_result()).get("resources", []) == []
    with expect_status(404):
        kp.get_registrations(str(uuid.uuid4()), rotor.instance)


def test_openapi_document(rotor):
    response = requests.get(rotor.endpoint + "/openapi.json", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert str(document["openapi"]).startswith("3.")
    assert "/api/v2/keys" in document["paths"]


# ---------------------------------------------------------------------------------------------
# bad input: never a 5xx, nothing changes


@pytest.fixture(scope="module")
def victim(kp, rotor):
    """A root key and a DEK wrapped with it, which bad requests aim at."""
    key = create_key(kp, rotor, aliases=[unique("victim")])
    dek = os.urandom(32)
    wrapped = wrap(kp, rotor, key["id"], dek, ["victim"])
    return {"key": key, "dek": dek, "ciphertext": wrapped["ciphertext"]}


def snapshot(kp, rotor, victim):
    keys = body_of(kp.get_keys(rotor.instance, limit=5000, state=ALL_STATES).get_result()).get("resources", [])
    rings = body_of(kp.list_key_rings(rotor.instance).get_result())["resources"]
    return {
        "total": key_total(kp, rotor),
        "total_all_states": key_total(kp, rotor, state=ALL_STATES),
        "keys": sorted(
            (k["id"], k["state"], k["keyRingID"], tuple(k.get("aliases", [])), k["deleted"],
             k.get("lastUpdateDate"), json.dumps(k.get("dualAuthDelete"), sort_keys=True))
            for k in keys
        ),
        "rings": sorted(r["id"] for r in rings),
        "instance_policies": json.dumps(body_of(kp.get_instance_policy(rotor.instance).get_result()), sort_keys=True),
        "victim_versions": versions(kp, rotor, victim["key"]["id"]),
        "victim_policies": json.dumps(body_of(kp.get_policy(victim["key"]["id"], rotor.instance).get_result()),
                                      sort_keys=True),
    }


def _nested(depth):
    return ("[" * depth + "]" * depth).encode()


def _bad_requests(victim):
    k = victim["key"]["id"]
    create = "/api/v2/keys"
    good_key = key_resource("bad-input-should-not-exist")

    def with_resource(**fields):
        request = json.loads(json.dumps(good_key))
        request["resources"][0].update(fields)
        return json.dumps(request).encode()

    long_id = "k" * 10_000
    return [
        # (what, method, path, body, extra headers, expected statuses)
        ("malformed JSON", "POST", create, b'{"resources": [', None, {400}),
        ("not JSON at all", "POST", create, b"hello", None, {400}),
        ("non-UTF-8 body", "POST", create, b"\xff\xfe\x00\x80", None, {400}),
        ("JSON null", "POST", create, b"null", None, {400}),
        ("JSON array", "POST", create, b"[]", None, {400}),
        ("deeply nested JSON", "POST", create, _nested(100_000), None, {400, 413}),
        ("no resources", "POST", create, b'{"metadata": {}}', None, {400}),
        ("two resources", "POST", create,
         json.dumps({"resources": good_key["resources"] * 2}).encode(), None, {400}),
        ("extractable 'yes'", "POST", create, with_resource(extractable="yes"), None, {400}),
        ("name is a number", "POST", create, with_resource(name=42), None, {400}),
        ("name missing", "POST", create,
         json.dumps({"resources": [{"type": KEY_TYPE, "extractable": False}]}).encode(), None, {400}),
        ("name too short", "POST", create, with_resource(name="a"), None, {400}),
        ("name too long", "POST", create, with_resource(name="n" * 91), None, {400}),
        ("name with control char", "POST", create, with_resource(name="bad\nname"), None, {400}),
        ("description too long", "POST", create, with_resource(description="d" * 241), None, {400}),
        ("aliases not a list", "POST", create, with_resource(aliases="alias-one"), None, {400}),
        ("alias is a UUID", "POST", create, with_resource(aliases=[str(uuid.uuid4())]), None, {400}),
        ("six aliases", "POST", create,
         with_resource(aliases=[f"six-{RUN_ID}-{i}" for i in range(6)]), None, {400}),
        ("payload bad base64", "POST", create, with_resource(payload="***not-base64***"), None, {400}),
        ("payload a number", "POST", create, with_resource(payload=12345), None, {400}),
        ("payload empty", "POST", create, with_resource(payload=""), None, {400}),
        ("root payload of 1 byte", "POST", create, with_resource(payload=b64e(b"\x01")), None, {400}),
        ("root payload of 33 bytes", "POST", create, with_resource(payload=b64e(os.urandom(33))), None, {400}),
        ("standard payload over 7500 bytes", "POST", create,
         with_resource(extractable=True, payload=b64e(os.urandom(7501))), None, {400}),
        ("unknown key ring", "POST", create, json.dumps(good_key).encode(),
         {"X-Kms-Key-Ring": f"no-ring-{RUN_ID}"}, {400, 404}),
        ("2 MiB body", "POST", create, b'{"resources": [' + b" " * (2 << 20) + b"]}", None, {413}),
        ("overrides: extractable 'yes'", "POST", "/api/v2/keys_with_policy_overrides",
         with_resource(extractable="yes"), None, {400}),
        ("list: limit abc", "GET", create + "?limit=abc", None, None, {400}),
        ("list: limit -1", "GET", create + "?limit=-1", None, None, {400}),
        ("list: limit 5001", "GET", create + "?limit=5001", None, None, {400}),
        ("list: offset -1", "GET", create + "?offset=-1", None, None, {400}),
        ("list: state 9", "GET", create + "?state=9", None, None, {400}),
        ("list: state a", "GET", create + "?state=a", None, None, {400}),
        ("list: extractable yes", "GET", create + "?extractable=yes", None, None, {400}),
        ("unknown key id: get", "GET", f"/api/v2/keys/{uuid.uuid4()}", None, None, {404}),
        ("unknown key id: metadata", "GET", f"/api/v2/keys/{uuid.uuid4()}/metadata", None, None, {404}),
        ("unknown key id: versions", "GET", f"/api/v2/keys/{uuid.uuid4()}/versions", None, None, {404}),
        ("unknown key id: policies", "GET", f"/api/v2/keys/{uuid.uuid4()}/policies", None, None, {404}),
        ("unknown key id: delete", "DELETE", f"/api/v2/keys/{uuid.uuid4()}", None, None, {404}),
        ("unknown key id: purge", "DELETE", f"/api/v2/keys/{uuid.uuid4()}/purge", None, None, {404}),
        ("unknown key id: restore", "POST", f"/api/v2/keys/{uuid.uuid4()}/restore", None, None, {404}),
        ("unknown key id: wrap", "POST", f"/api/v2/keys/{uuid.uuid4()}/actions/wrap", b"{}", None, {404}),
        ("unknown key id: patch", "PATCH", f"/api/v2/keys/{uuid.uuid4()}",
         b'{"keyRingID": "default"}', None, {404}),
        ("unknown key id: alias", "POST", f"/api/v2/keys/{uuid.uuid4()}/aliases/{RUN_ID}-orphan", None, None,
         {404}),
        ("not-a-uuid-or-alias: get", "GET", "/api/v2/keys/not-a-uuid-or-alias", None, None, {404}),
        ("not-a-uuid-or-alias: unwrap", "POST", "/api/v2/keys/not-a-uuid-or-alias/actions/unwrap",
         json.dumps({"ciphertext": victim["ciphertext"]}).encode(), None, {404}),
        ("not-a-uuid-or-alias: delete", "DELETE", "/api/v2/keys/not-a-uuid-or-alias", None, None, {404}),
        ("NUL in key id", "GET", "/api/v2/keys/%00", None, None, {400, 404}),
        ("10000-char key id", "GET", f"/api/v2/keys/{long_id}", None, None, {400, 404, 414}),
        ("unknown action", "POST", f"/api/v2/keys/{k}/actions/explode", b"{}", None, {400, 404}),
        ("legacy action form without action", "POST", f"/api/v2/keys/{k}", b"{}", None, {400}),
        ("wrap: malformed JSON", "POST", f"/api/v2/keys/{k}/actions/wrap", b"{", None, {400}),
        ("wrap: plaintext a number", "POST", f"/api/v2/keys/{k}/actions/wrap", b'{"plaintext": 5}', None, {400}),
        ("wrap: plaintext bad base64", "POST", f"/api/v2/keys/{k}/actions/wrap", b'{"plaintext": "@@@"}',
         None, {400}),
        ("wrap: empty plaintext", "POST", f"/api/v2/keys/{k}/actions/wrap", b'{"plaintext": ""}', None, {400}),
        ("wrap: plaintext over 7500 bytes", "POST", f"/api/v2/keys/{k}/actions/wrap",
         json.dumps({"plaintext": b64e(b"\x00" * 7501)}).encode(), None, {400}),
        ("wrap: aad not a list", "POST", f"/api/v2/keys/{k}/actions/wrap", b'{"aad": "x"}', None, {400}),
        ("wrap: aad of numbers", "POST", f"/api/v2/keys/{k}/actions/wrap", b'{"aad": [1, 2]}', None, {400}),
        ("unwrap: no ciphertext", "POST", f"/api/v2/keys/{k}/actions/unwrap", b"{}", None, {400}),
        ("unwrap: empty body", "POST", f"/api/v2/keys/{k}/actions/unwrap", b"", None, {400}),
        ("unwrap: ciphertext a number", "POST", f"/api/v2/keys/{k}/actions/unwrap", b'{"ciphertext": 7}',
         None, {400}),
        ("unwrap: ciphertext bad base64", "POST", f"/api/v2/keys/{k}/actions/unwrap",
         b'{"ciphertext": "%%%"}', None, {400}),
        ("unwrap: empty ciphertext", "POST", f"/api/v2/keys/{k}/actions/unwrap", b'{"ciphertext": ""}', None,
         {400, 422}),
        ("unwrap: wrong aad", "POST", f"/api/v2/keys/{k}/actions/unwrap",
         json.dumps({"ciphertext": victim["ciphertext"], "aad": ["not-victim"]}).encode(), None, {422}),
        ("rewrap: no ciphertext", "POST", f"/api/v2/keys/{k}/actions/rewrap", b"{}", None, {400}),
        ("rotate: payload on a generated key", "POST", f"/api/v2/keys/{k}/actions/rotate",
         json.dumps({"payload": b64e(os.urandom(32))}).encode(), None, {400}),
        ("rotate: malformed JSON", "POST", f"/api/v2/keys/{k}/actions/rotate", b"{{", None, {400}),
        ("patch: empty object", "PATCH", f"/api/v2/keys/{k}", b"{}", None, {400}),
        ("patch: ring a number", "PATCH", f"/api/v2/keys/{k}", b'{"keyRingID": 5}', None, {400}),
        ("patch: unknown ring", "PATCH", f"/api/v2/keys/{k}", json.dumps({"keyRingID": f"none-{RUN_ID}"}).encode(),
         None, {400, 404}),
        ("patch: malformed JSON", "PATCH", f"/api/v2/keys/{k}", b"keyRingID=default", None, {400}),
        ("policies: empty list", "PUT", f"/api/v2/keys/{k}/policies", b'{"resources": []}', None, {400}),
        ("policies: unknown policy", "PUT", f"/api/v2/keys/{k}/policies", b'{"resources": [{"foo": {}}]}', None,
         {400}),
        ("policies: rotation 13 months", "PUT", f"/api/v2/keys/{k}/policies",
         b'{"resources": [{"rotation": {"interval_month": 13}}]}', None, {400}),
        ("policies: dualAuthDelete 'yes'", "PUT", f"/api/v2/keys/{k}/policies",
         b'{"resources": [{"dualAuthDelete": {"enabled": "yes"}}]}', None, {400}),
        ("policies: malformed JSON", "PUT", f"/api/v2/keys/{k}/policies", b"[", None, {400}),
        ("instance policy: unsupported type", "PUT", "/api/v2/instance/policies",
         b'{"resources": [{"policy_type": "allowedNetwork", "policy_data": {"enabled": true}}]}', None, {400}),
        ("instance policy: enabled 'yes'", "PUT", "/api/v2/instance/policies",
         b'{"resources": [{"policy_type": "dualAuthDelete", "policy_data": {"enabled": "yes"}}]}', None, {400}),
        ("instance policy: no resources", "PUT", "/api/v2/instance/policies", b"{}", None, {400}),
        ("instance policy: malformed JSON", "PUT", "/api/v2/instance/policies", b"{\"resources\"", None, {400}),
        ("alias: too short", "POST", f"/api/v2/keys/{k}/aliases/a", None, None, {400}),
        ("alias: UUID form", "POST", f"/api/v2/keys/{k}/aliases/{uuid.uuid4()}", None, None, {400}),
        ("alias: bad characters", "POST", f"/api/v2/keys/{k}/aliases/bad%20alias%21", None, None, {400}),
        ("alias: delete unknown", "DELETE", f"/api/v2/keys/{k}/aliases/none-{RUN_ID}", None, None, {404}),
        ("key ring: id too short", "POST", "/api/v2/key_rings/a", None, None, {400}),
        ("key ring: bad characters", "POST", "/api/v2/key_rings/bad_ring%21", None, None, {400}),
        ("key ring: id too long", "POST", "/api/v2/key_rings/" + "r" * 101, None, None, {400}),
        ("key ring: delete unknown", "DELETE", f"/api/v2/key_rings/none-{RUN_ID}", None, None, {404}),
        ("key ring: delete default", "DELETE", "/api/v2/key_rings/default", None, None, {400, 403, 409}),
        ("key ring: create default again", "POST", "/api/v2/key_rings/default", None, None, {409}),
        ("method not allowed", "PUT", create, b"{}", None, {405}),
        ("unknown route", "GET", "/api/v2/nothing-here", None, None, {404}),
    ]


def test_bad_input_never_yields_5xx_and_changes_nothing(kp, rotor, raw, victim):
    failures = []
    before = snapshot(kp, rotor, victim)
    for what, method, path, data, headers, expected in _bad_requests(victim):
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        try:
            response = raw.request(method, path, data=data, headers=all_headers)
        except requests.ConnectionError as err:
            failures.append(f"{what}: {method} {path[:80]} -> connection error {err}")
            continue
        if response.status_code not in expected:
            failures.append(
                f"{what}: {method} {path[:80]} -> {response.status_code} (expected {sorted(expected)}): "
                f"{response.text[:300]}"
            )
        elif response.status_code not in (404, 405) or path.startswith("/api/v2/keys"):
            # Key Protect errors carry the IBM error collection.
            if response.headers.get("Content-Type", "") == COLLECTION_MEDIA_TYPE and response.text:
                error = response.json()
                if "resources" in error:
                    reasons = error["resources"][0].get("reasons", [])
                    if reasons and reasons[0].get("status") != response.status_code:
                        failures.append(f"{what}: reason status {reasons[0].get('status')} != HTTP "
                                        f"{response.status_code}")
        if path.startswith("/api/v2") and response.status_code in (400, 413, 422):
            is_collection = response.headers.get("Content-Type", "") == COLLECTION_MEDIA_TYPE
            if not is_collection or "resources" not in response.json():
                failures.append(f"{what}: {response.status_code} without a Key Protect error body: "
                                f"{response.text[:200]}")
        after = snapshot(kp, rotor, victim)
        if after != before:
            changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
            failures.append(f"{what}: state changed: {changed}")
            before = after
    # The victim still works.
    assert b64d(unwrap(kp, rotor, victim["key"]["id"], victim["ciphertext"], ["victim"])["plaintext"]) == victim["dek"]
    assert not failures, "\n".join(failures)


def test_bad_input_through_the_sdk(kp, rotor, victim):
    """The same kind of mistakes as an SDK user makes them: the SDK surfaces a 4xx ApiException."""
    before = snapshot(kp, rotor, victim)
    with expect_status(400):
        kp.create_key(rotor.instance, io.BytesIO(b'{"resources": [{"name": "x'))
    with expect_status(400):
        kp.create_key(rotor.instance, body(key_resource(unique("typed"), extractable="yes")))
    with expect_status(404):
        kp.get_key(str(uuid.uuid4()), rotor.instance)
    with expect_status(404):
        kp.get_key("not-a-uuid-or-alias", rotor.instance)
    with expect_status(404):
        kp.wrap_key("not-a-uuid-or-alias", rotor.instance)
    with expect_status(400):
        kp.get_keys(rotor.instance, limit=100_000, state=DEFAULT_STATES)
    assert snapshot(kp, rotor, victim) == before


# ---------------------------------------------------------------------------------------------
# secrets never leak


def test_no_secret_leaks_so_far(kp, rotor):
    """Searches the service's output, every unit log and the keystore (with its WAL) for every
    DEK and key material seen so far. The session fixture repeats the search after shutdown."""
    # Make sure there is at least one secret of each kind even when run alone.
    standard = create_key(kp, rotor, extractable=True)
    get_key(kp, rotor, standard["id"])
    create_key(kp, rotor, extractable=True, payload=os.urandom(32))
    root = create_key(kp, rotor, payload=os.urandom(32))
    wrap(kp, rotor, root["id"], os.urandom(32), ["leak-check"])
    generated = wrap(kp, rotor, root["id"])
    unwrap(kp, rotor, root["id"], generated["ciphertext"])

    files = rotor.leak_files()
    assert rotor.keystore_files(), "no keystore found under DIR/service"
    assert len(rotor.unit_logs()) == 3, rotor.unit_logs()
    assert rotor.stderr_path.stat().st_size > 0
    if os.environ.get("ROTOR_LOG", "debug") in ("debug", "trace", "info"):
        # The service logs to rotor dev's output, or to each replica's log when there are several.
        service_logs = [rotor.stderr_path, *sorted((rotor.dir / "service" / "replicas").glob("*.log"))]
        assert any(b"key created" in log.read_bytes() for log in service_logs), "service logging is off: the search is vacuous"
    assert len(rotor.secrets) >= 5
    leaks = find_leaks(rotor.secrets, files)
    assert not leaks, "\n".join(leaks)
