//! PKCS #11 numbers as EP11 and GREP11 use them (PKCS #11 v2.40 base specification §2-§3 and
//! IBM's `header_consts.go` for the `CKM_IBM_*`/`CKR_IBM_*` values). Only the numbers rotor
//! reads or answers with are listed.

/// Object classes (`CKO_*`).
pub mod cko {
    /// `CKO_PUBLIC_KEY`
    pub const PUBLIC_KEY: u64 = 2;
    /// `CKO_PRIVATE_KEY`
    pub const PRIVATE_KEY: u64 = 3;
    /// `CKO_SECRET_KEY`
    pub const SECRET_KEY: u64 = 4;
}

/// Key types (`CKK_*`).
pub mod ckk {
    /// `CKK_EC`
    pub const EC: u64 = 3;
    /// `CKK_GENERIC_SECRET`
    pub const GENERIC_SECRET: u64 = 0x10;
    /// `CKK_AES`
    pub const AES: u64 = 0x1F;
}

/// Attribute types (`CKA_*`).
pub mod cka {
    /// `CKA_CLASS`
    pub const CLASS: u64 = 0;
    /// `CKA_TOKEN`
    pub const TOKEN: u64 = 1;
    /// `CKA_PRIVATE`
    pub const PRIVATE: u64 = 2;
    /// `CKA_LABEL`
    pub const LABEL: u64 = 3;
    /// `CKA_VALUE`
    pub const VALUE: u64 = 0x11;
    /// `CKA_TRUSTED`
    pub const TRUSTED: u64 = 0x86;
    /// `CKA_CHECK_VALUE`
    pub const CHECK_VALUE: u64 = 0x90;
    /// `CKA_KEY_TYPE`
    pub const KEY_TYPE: u64 = 0x100;
    /// `CKA_ID`
    pub const ID: u64 = 0x102;
    /// `CKA_SENSITIVE`
    pub const SENSITIVE: u64 = 0x103;
    /// `CKA_ENCRYPT`
    pub const ENCRYPT: u64 = 0x104;
    /// `CKA_DECRYPT`
    pub const DECRYPT: u64 = 0x105;
    /// `CKA_WRAP`
    pub const WRAP: u64 = 0x106;
    /// `CKA_UNWRAP`
    pub const UNWRAP: u64 = 0x107;
    /// `CKA_SIGN`
    pub const SIGN: u64 = 0x108;
    /// `CKA_VERIFY`
    pub const VERIFY: u64 = 0x10A;
    /// `CKA_DERIVE`
    pub const DERIVE: u64 = 0x10C;
    /// `CKA_VALUE_LEN`
    pub const VALUE_LEN: u64 = 0x161;
    /// `CKA_EXTRACTABLE`
    pub const EXTRACTABLE: u64 = 0x162;
    /// `CKA_LOCAL`
    pub const LOCAL: u64 = 0x163;
    /// `CKA_NEVER_EXTRACTABLE`
    pub const NEVER_EXTRACTABLE: u64 = 0x164;
    /// `CKA_ALWAYS_SENSITIVE`
    pub const ALWAYS_SENSITIVE: u64 = 0x165;
    /// `CKA_MODIFIABLE`
    pub const MODIFIABLE: u64 = 0x170;
    /// `CKA_COPYABLE`
    pub const COPYABLE: u64 = 0x171;
    /// `CKA_EC_PARAMS`
    pub const EC_PARAMS: u64 = 0x180;
    /// `CKA_EC_POINT`
    pub const EC_POINT: u64 = 0x181;
    /// `CKA_WRAP_WITH_TRUSTED`
    pub const WRAP_WITH_TRUSTED: u64 = 0x210;
}

/// Mechanisms (`CKM_*`).
pub mod ckm {
    /// `CKM_SHA_1`
    pub const SHA_1: u64 = 0x220;
    /// `CKM_SHA_1_HMAC`
    pub const SHA_1_HMAC: u64 = 0x221;
    /// `CKM_SHA256`
    pub const SHA256: u64 = 0x250;
    /// `CKM_SHA256_HMAC`
    pub const SHA256_HMAC: u64 = 0x251;
    /// `CKM_SHA224`
    pub const SHA224: u64 = 0x255;
    /// `CKM_SHA224_HMAC`
    pub const SHA224_HMAC: u64 = 0x256;
    /// `CKM_SHA384`
    pub const SHA384: u64 = 0x260;
    /// `CKM_SHA384_HMAC`
    pub const SHA384_HMAC: u64 = 0x261;
    /// `CKM_SHA512`
    pub const SHA512: u64 = 0x270;
    /// `CKM_SHA512_HMAC`
    pub const SHA512_HMAC: u64 = 0x271;
    /// `CKM_GENERIC_SECRET_KEY_GEN`
    pub const GENERIC_SECRET_KEY_GEN: u64 = 0x350;
    /// `CKM_EC_KEY_PAIR_GEN`
    pub const EC_KEY_PAIR_GEN: u64 = 0x1040;
    /// `CKM_ECDSA`: the data is the hash.
    pub const ECDSA: u64 = 0x1041;
    /// `CKM_ECDSA_SHA1`
    pub const ECDSA_SHA1: u64 = 0x1042;
    /// `CKM_ECDSA_SHA224`
    pub const ECDSA_SHA224: u64 = 0x1043;
    /// `CKM_ECDSA_SHA256`
    pub const ECDSA_SHA256: u64 = 0x1044;
    /// `CKM_ECDSA_SHA384`
    pub const ECDSA_SHA384: u64 = 0x1045;
    /// `CKM_ECDSA_SHA512`
    pub const ECDSA_SHA512: u64 = 0x1046;
    /// `CKM_AES_KEY_GEN`
    pub const AES_KEY_GEN: u64 = 0x1080;
    /// `CKM_AES_ECB`
    pub const AES_ECB: u64 = 0x1081;
    /// `CKM_AES_CBC`
    pub const AES_CBC: u64 = 0x1082;
    /// `CKM_AES_CBC_PAD`
    pub const AES_CBC_PAD: u64 = 0x1085;
    /// `CKM_AES_GCM`
    pub const AES_GCM: u64 = 0x1087;
}

/// Mechanism flags (`CKF_*`) of `GetMechanismInfo`.
pub mod ckf {
    /// `CKF_ENCRYPT`
    pub const ENCRYPT: u64 = 0x100;
    /// `CKF_DECRYPT`
    pub const DECRYPT: u64 = 0x200;
    /// `CKF_DIGEST`
    pub const DIGEST: u64 = 0x400;
    /// `CKF_SIGN`
    pub const SIGN: u64 = 0x800;
    /// `CKF_VERIFY`
    pub const VERIFY: u64 = 0x2000;
    /// `CKF_GENERATE`
    pub const GENERATE: u64 = 0x8000;
    /// `CKF_GENERATE_KEY_PAIR`
    pub const GENERATE_KEY_PAIR: u64 = 0x10000;
}

/// Return values (`CKR_*`), carried in the GREP11 error detail.
pub mod ckr {
    /// `CKR_GENERAL_ERROR`
    pub const GENERAL_ERROR: u64 = 5;
    /// `CKR_FUNCTION_FAILED`
    pub const FUNCTION_FAILED: u64 = 6;
    /// `CKR_ARGUMENTS_BAD`
    pub const ARGUMENTS_BAD: u64 = 7;
    /// `CKR_ATTRIBUTE_READ_ONLY`
    pub const ATTRIBUTE_READ_ONLY: u64 = 0x10;
    /// `CKR_ATTRIBUTE_SENSITIVE`
    pub const ATTRIBUTE_SENSITIVE: u64 = 0x11;
    /// `CKR_ATTRIBUTE_TYPE_INVALID`
    pub const ATTRIBUTE_TYPE_INVALID: u64 = 0x12;
    /// `CKR_ATTRIBUTE_VALUE_INVALID`
    pub const ATTRIBUTE_VALUE_INVALID: u64 = 0x13;
    /// `CKR_DATA_INVALID`
    pub const DATA_INVALID: u64 = 0x20;
    /// `CKR_DATA_LEN_RANGE`
    pub const DATA_LEN_RANGE: u64 = 0x21;
    /// `CKR_ENCRYPTED_DATA_INVALID`
    pub const ENCRYPTED_DATA_INVALID: u64 = 0x40;
    /// `CKR_ENCRYPTED_DATA_LEN_RANGE`
    pub const ENCRYPTED_DATA_LEN_RANGE: u64 = 0x41;
    /// `CKR_KEY_TYPE_INCONSISTENT`
    pub const KEY_TYPE_INCONSISTENT: u64 = 0x63;
    /// `CKR_KEY_FUNCTION_NOT_PERMITTED`
    pub const KEY_FUNCTION_NOT_PERMITTED: u64 = 0x68;
    /// `CKR_MECHANISM_INVALID`
    pub const MECHANISM_INVALID: u64 = 0x70;
    /// `CKR_MECHANISM_PARAM_INVALID`
    pub const MECHANISM_PARAM_INVALID: u64 = 0x71;
    /// `CKR_OPERATION_NOT_INITIALIZED`
    pub const OPERATION_NOT_INITIALIZED: u64 = 0x91;
    /// `CKR_SIGNATURE_INVALID`
    pub const SIGNATURE_INVALID: u64 = 0xC0;
    /// `CKR_SIGNATURE_LEN_RANGE`
    pub const SIGNATURE_LEN_RANGE: u64 = 0xC1;
    /// `CKR_TEMPLATE_INCOMPLETE`
    pub const TEMPLATE_INCOMPLETE: u64 = 0xD0;
    /// `CKR_TEMPLATE_INCONSISTENT`
    pub const TEMPLATE_INCONSISTENT: u64 = 0xD1;
    /// `CKR_IBM_WKID_MISMATCH`: the blob is under another master key.
    pub const IBM_WKID_MISMATCH: u64 = 0x8001_0001;
    /// `CKR_IBM_BLOB_ERROR`
    pub const IBM_BLOB_ERROR: u64 = 0x8001_0004;
    /// `CKR_IBM_WK_NOT_INITIALIZED`: no current master key.
    pub const IBM_WK_NOT_INITIALIZED: u64 = 0x8001_0009;
    /// `CKR_IBM_GREP11_NOT_AUTHENTICATED`
    pub const IBM_GREP11_NOT_AUTHENTICATED: u64 = 0x8004_0001;
    /// `CKR_IBM_GREP11_CANNOT_UNMARSHAL`
    pub const IBM_GREP11_CANNOT_UNMARSHAL: u64 = 0x8004_0002;
}
