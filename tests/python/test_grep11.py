"""The GREP11 service of `rotor dev` through a Python gRPC client generated at test time by
grpcio-tools from the service's .proto, cross-checked against Python's `cryptography` and
hashlib, plus requests encoded by hand from the GREP11 reference's field numbers (so the .proto
is checked against the reference, not only against itself)."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kphelpers import REPO_ROOT

PROTO_DIR = REPO_ROOT / "crates" / "rotor-server" / "proto"

CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512 = 0x220, 0x255, 0x250, 0x260, 0x270
CKM_SHA256_HMAC = 0x251
CKM_GENERIC_SECRET_KEY_GEN = 0x350
CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384 = 0x1040, 0x1041, 0x1044, 0x1045
CKM_AES_KEY_GEN, CKM_AES_ECB, CKM_AES_CBC_PAD, CKM_AES_GCM = 0x1080, 0x1081, 0x1085, 0x1087
CKA_VALUE_LEN, CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY = 0x161, 0x104, 0x105, 0x108, 0x10A
CKA_EC_PARAMS = 0x180
CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_SIGNATURE_INVALID, CKR_MECHANISM_INVALID = 0x68, 0xC0, 0x70
CKR_IBM_WKID_MISMATCH, CKR_IBM_BLOB_ERROR, CKR_IBM_GREP11_NOT_AUTHENTICATED = 0x80010001, 0x80010004, 0x80040001
P256_OID = bytes.fromhex("06082A8648CE3D030107")


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """The modules grpcio-tools generates from the .proto: (messages, stubs)."""
    out = tmp_path_factory.mktemp("grep11-stubs")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
         f"--grpc_python_out={out}", "grep11.proto"],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("grep11_pb2"), importlib.import_module("grep11_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def channel(rotor):
    address = rotor.info.get("grep11_address")
    assert address, "rotor dev wrote no grep11_address"
    with open(rotor.info["ca_cert"], "rb") as ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        yield channel


def auth(rotor, name):
    return [("authorization", f"Bearer {rotor.token_for(name)}")]


@pytest.fixture(scope="module")
def writer(rotor, channel, pb):
    return pb[1].CryptoStub(channel), auth(rotor, "writer")


@pytest.fixture(scope="module")
def reader(rotor, channel, pb):
    return pb[1].CryptoStub(channel), auth(rotor, "reader")


# A minimal protobuf wire codec, written from the encoding spec, for the hand-made requests
# and for the error detail (google.rpc.Status).
def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def parse(message: bytes) -> dict[int, list]:
    fields: dict[int, list] = {}
    at = 0

    def read_varint():
        nonlocal at
        shift = value = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(message):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(number, []).append(read_varint())
        elif wire == 2:
            length = read_varint()
            fields.setdefault(number, []).append(message[at:at + length])
            at += length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return fields


def grep11_error(error: grpc.RpcError) -> tuple[int, str]:
    """Code and detail of the one Grep11Error in the status details."""
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert details, error
    status = parse(details)
    (anything,) = status[3]
    any_fields = parse(anything)
    assert any_fields[1] == [b"type.googleapis.com/grep11.Grep11Error"]
    detail = parse(any_fields[2][0])
    return detail[1][0], detail.get(2, [b""])[0].decode()


def call_raw(channel, method: str, request: bytes, metadata) -> bytes:
    rpc = channel.unary_unary(f"/grep11.Crypto/{method}", request_serializer=None, response_deserializer=None)
    return rpc(request, metadata=metadata)


def mech(pb, mechanism, parameter=None):
    if parameter is None:
        return pb[0].Mechanism(Mechanism=mechanism)
    return pb[0].Mechanism(Mechanism=mechanism, ParameterB=parameter)


def flag(pb, value: bool):
    return pb[0].AttributeValue(AttributeTF=value)


def test_hand_encoded_requests_follow_the_reference_field_numbers(rotor, channel):
    metadata = auth(rotor, "reader")
    # GenerateRandomRequest {Len=1}; GenerateRandomResponse {Rnd=1}.
    reply = parse(call_raw(channel, "GenerateRandom", field_varint(1, 48), metadata))
    assert len(reply[1][0]) == 48
    # DigestSingleRequest {Mech=1 {Mechanism=1}, Data=2}; DigestSingleResponse {Digest=3}.
    data = os.urandom(1000)
    request = field_bytes(1, field_varint(1, CKM_SHA384)) + field_bytes(2, data)
    reply = parse(call_raw(channel, "DigestSingle", request, metadata))
    assert reply[3][0] == hashlib.sha384(data).digest()
    # GetMechanismInfoRequest {Mech=2}; response {MechInfo=3 {MinKeySize=1, MaxKeySize=2, Flags=3}}.
    reply = parse(call_raw(channel, "GetMechanismInfo", field_varint(2, CKM_AES_KEY_GEN), metadata))
    info = parse(reply[3][0])
    assert (info[1][0], info[2][0], info[3][0]) == (16, 32, 0x8000)


def test_digests_match_hashlib_in_one_call_and_in_parts(reader, pb):
    stub, metadata = reader
    for mechanism, algorithm in [(CKM_SHA_1, "sha1"), (CKM_SHA224, "sha224"), (CKM_SHA256, "sha256"),
                                 (CKM_SHA384, "sha384"), (CKM_SHA512, "sha512")]:
        for size in (0, 1, 55, 64, 1000, 100_000):
            data = os.urandom(size)
            expected = hashlib.new(algorithm, data).digest()
            single = stub.DigestSingle(pb[0].DigestSingleRequest(Mech=mech(pb, mechanism), Data=data), metadata=metadata)
            assert single.Digest == expected
            state = stub.DigestInit(pb[0].DigestInitRequest(Mech=mech(pb, mechanism)), metadata=metadata).State
            state = stub.DigestUpdate(pb[0].DigestUpdateRequest(State=state, Data=data[: size // 2]), metadata=metadata).State
            final = stub.Digest(pb[0].DigestRequest(State=state, Data=data[size // 2:]), metadata=metadata)
            assert final.Digest == expected


def ec_pair(writer, pb):
    stub, metadata = writer
    return stub.GenerateKeyPair(
        pb[0].GenerateKeyPairRequest(
            Mech=mech(pb, CKM_EC_KEY_PAIR_GEN),
            PrivKeyTemplate={CKA_SIGN: flag(pb, True)},
            PubKeyTemplate={CKA_EC_PARAMS: pb[0].AttributeValue(AttributeB=P256_OID), CKA_VERIFY: flag(pb, True)},
        ),
        metadata=metadata,
    )


def test_ecdsa_signatures_cross_check_with_cryptography(writer, reader, pb):
    stub, metadata = writer
    pair = ec_pair(writer, pb)
    public = serialization.load_der_public_key(pair.PubKeyBytes)
    assert isinstance(public.curve, ec.SECP256R1)
    message = os.urandom(300)
    for mechanism, hash_algorithm in [(CKM_ECDSA_SHA256, hashes.SHA256()), (CKM_ECDSA_SHA384, hashes.SHA384())]:
        # Signed by rotor (the newer KeyBlob field), verified by cryptography.
        signature = stub.SignSingle(
            pb[0].SignSingleRequest(Mech=mech(pb, mechanism), Data=message, PrivKeyBlob=pair.PrivKey),
            metadata=metadata,
        ).Signature
        assert len(signature) == 64
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        public.verify(der, message, ec.ECDSA(hash_algorithm))
    # Signed by cryptography, verified by rotor (raw SPKI as the public key), hashed and raw.
    private = ec.generate_private_key(ec.SECP256R1())
    spki = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    reader_stub, reader_metadata = reader
    reader_stub.VerifySingle(
        pb[0].VerifySingleRequest(Mech=mech(pb, CKM_ECDSA_SHA256), PubKey=spki, Data=message, Signature=raw),
        metadata=reader_metadata,
    )
    reader_stub.VerifySingle(
        pb[0].VerifySingleRequest(Mech=mech(pb, CKM_ECDSA), PubKey=spki, Data=hashlib.sha256(message).digest(), Signature=raw),
        metadata=reader_metadata,
    )
    with pytest.raises(grpc.RpcError) as refused:
        reader_stub.VerifySingle(
            pb[0].VerifySingleRequest(Mech=mech(pb, CKM_ECDSA_SHA256), PubKey=spki, Data=message + b"!", Signature=raw),
            metadata=reader_metadata,
        )
    assert grep11_error(refused.value)[0] == CKR_SIGNATURE_INVALID


def aes_key(writer, pb, usages=(CKA_ENCRYPT, CKA_DECRYPT), length=32):
    stub, metadata = writer
    template = {usage: flag(pb, True) for usage in usages}
    template[CKA_VALUE_LEN] = pb[0].AttributeValue(AttributeI=length)
    return stub.GenerateKey(pb[0].GenerateKeyRequest(Mech=mech(pb, CKM_AES_KEY_GEN), Template=template), metadata=metadata)


def test_aes_modes_round_trip_and_keep_their_shape(writer, pb):
    stub, metadata = writer
    for length in (16, 24, 32):
        key = aes_key(writer, pb, length=length)
        assert key.CheckSum[3:] == (length * 8).to_bytes(4, "big")
        # ECB is deterministic per block: equal blocks encrypt alike (NIST SP 800-38A §6.1).
        block = os.urandom(16)
        ecb = stub.EncryptSingle(pb[0].EncryptSingleRequest(Mech=mech(pb, CKM_AES_ECB), Key=key.KeyBytes, Plain=block * 2),
                                 metadata=metadata).Ciphered
        assert ecb[:16] == ecb[16:]
        for mechanism, parameter, size, expected in [
            (CKM_AES_CBC_PAD, os.urandom(16), 33, 48),
            (CKM_AES_GCM, os.urandom(12), 33, 49),
        ]:
            plain = os.urandom(size)
            ciphered = stub.EncryptSingle(
                pb[0].EncryptSingleRequest(Mech=mech(pb, mechanism, parameter), KeyBlob=key.Key, Plain=plain),
                metadata=metadata,
            ).Ciphered
            assert len(ciphered) == expected
            state = stub.DecryptInit(pb[0].DecryptInitRequest(Mech=mech(pb, mechanism, parameter), Key=key.KeyBytes),
                                     metadata=metadata).State
            update = stub.DecryptUpdate(pb[0].DecryptUpdateRequest(State=state, Ciphered=ciphered[:20]), metadata=metadata)
            final = stub.Decrypt(pb[0].DecryptRequest(State=update.State, Ciphered=ciphered[20:]), metadata=metadata)
            assert update.Plain + final.Plain == plain


def test_hmac_and_template_enforcement(writer, pb):
    stub, metadata = writer
    secret = stub.GenerateKey(
        pb[0].GenerateKeyRequest(
            Mech=mech(pb, CKM_GENERIC_SECRET_KEY_GEN),
            Template={CKA_VALUE_LEN: pb[0].AttributeValue(AttributeI=32), CKA_SIGN: flag(pb, True)},
        ),
        metadata=metadata,
    )
    data = os.urandom(100)
    tag = stub.SignSingle(pb[0].SignSingleRequest(Mech=mech(pb, CKM_SHA256_HMAC), PrivKey=secret.KeyBytes, Data=data),
                          metadata=metadata).Signature
    assert len(tag) == 32
    # CKA_VERIFY is off: verification is refused with its code.
    with pytest.raises(grpc.RpcError) as refused:
        stub.VerifySingle(pb[0].VerifySingleRequest(Mech=mech(pb, CKM_SHA256_HMAC), PubKey=secret.KeyBytes, Data=data,
                                                    Signature=tag), metadata=metadata)
    assert grep11_error(refused.value)[0] == CKR_KEY_FUNCTION_NOT_PERMITTED
    encrypt_only = aes_key(writer, pb, usages=(CKA_ENCRYPT,))
    with pytest.raises(grpc.RpcError) as refused:
        stub.DecryptSingle(pb[0].DecryptSingleRequest(Mech=mech(pb, CKM_AES_ECB), Key=encrypt_only.KeyBytes,
                                                      Ciphered=bytes(16)), metadata=metadata)
    assert grep11_error(refused.value)[0] == CKR_KEY_FUNCTION_NOT_PERMITTED


def test_bad_input_is_a_grep11_error(rotor, channel, writer, pb):
    stub, metadata = writer
    key = aes_key(writer, pb)
    tampered = bytearray(key.KeyBytes)
    tampered[-1] ^= 1
    # Tampered and truncated blobs do not open; one naming an unknown master key says so.
    for blob, code in ((bytes(tampered), CKR_IBM_BLOB_ERROR), (key.KeyBytes[:40], CKR_IBM_BLOB_ERROR),
                       (b"\x00" * 100, CKR_IBM_WKID_MISMATCH)):
        with pytest.raises(grpc.RpcError) as refused:
            stub.EncryptSingle(pb[0].EncryptSingleRequest(Mech=mech(pb, CKM_AES_ECB), Key=blob, Plain=bytes(16)),
                               metadata=metadata)
        assert grep11_error(refused.value)[0] == code
    with pytest.raises(grpc.RpcError) as refused:
        stub.EncryptSingle(pb[0].EncryptSingleRequest(Mech=mech(pb, 0x4242), Key=key.KeyBytes, Plain=bytes(16)),
                           metadata=metadata)
    assert grep11_error(refused.value)[0] == CKR_MECHANISM_INVALID
    # Garbage that is no protobuf at all.
    with pytest.raises(grpc.RpcError) as refused:
        call_raw(channel, "EncryptSingle", b"\xff\xff\xff", metadata)
    assert refused.value.code() != grpc.StatusCode.OK
    # No token.
    with pytest.raises(grpc.RpcError) as refused:
        stub.GenerateRandom(pb[0].GenerateRandomRequest(Len=8))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grep11_error(refused.value)[0] == CKR_IBM_GREP11_NOT_AUTHENTICATED
    # The units are still serving.
    assert len(stub.GenerateRandom(pb[0].GenerateRandomRequest(Len=8), metadata=metadata).Rnd) == 8
