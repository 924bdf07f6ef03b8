//! The mechanism table: the single source of what the unit does, read by the operations and
//! answered by `GetMechanismList` and `GetMechanismInfo`. Key sizes are in bytes for AES and
//! generic secrets and in bits for EC keys, as PKCS #11 v2.40 §2 states per mechanism.

use serde::{Deserialize, Serialize};

use crate::consts::{ckf, ckm};

/// `CK_MECHANISM_INFO`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismInfo {
    /// `ulMinKeySize`
    pub min_key_size: u64,
    /// `ulMaxKeySize`
    pub max_key_size: u64,
    /// `flags` (`CKF_*`)
    pub flags: u64,
}

const fn info(min_key_size: u64, max_key_size: u64, flags: u64) -> MechanismInfo {
    MechanismInfo {
        min_key_size,
        max_key_size,
        flags,
    }
}

const DIGEST: MechanismInfo = info(0, 0, ckf::DIGEST);
const AES_CIPHER: MechanismInfo = info(16, 32, ckf::ENCRYPT | ckf::DECRYPT);
const HMAC: MechanismInfo = info(1, 256, ckf::SIGN | ckf::VERIFY);
const ECDSA: MechanismInfo = info(256, 256, ckf::SIGN | ckf::VERIFY);

/// Every mechanism the unit implements, in `CKM_*` order.
pub const MECHANISMS: &[(u64, MechanismInfo)] = &[
    (ckm::SHA_1, DIGEST),
    (ckm::SHA_1_HMAC, HMAC),
    (ckm::SHA256, DIGEST),
    (ckm::SHA256_HMAC, HMAC),
    (ckm::SHA224, DIGEST),
    (ckm::SHA224_HMAC, HMAC),
    (ckm::SHA384, DIGEST),
    (ckm::SHA384_HMAC, HMAC),
    (ckm::SHA512, DIGEST),
    (ckm::SHA512_HMAC, HMAC),
    (ckm::GENERIC_SECRET_KEY_GEN, info(1, 256, ckf::GENERATE)),
    (ckm::EC_KEY_PAIR_GEN, info(256, 256, ckf::GENERATE_KEY_PAIR)),
    (ckm::ECDSA, ECDSA),
    (ckm::ECDSA_SHA1, ECDSA),
    (ckm::ECDSA_SHA224, ECDSA),
    (ckm::ECDSA_SHA256, ECDSA),
    (ckm::ECDSA_SHA384, ECDSA),
    (ckm::ECDSA_SHA512, ECDSA),
    (ckm::AES_KEY_GEN, info(16, 32, ckf::GENERATE)),
    (ckm::AES_ECB, AES_CIPHER),
    (ckm::AES_CBC, AES_CIPHER),
    (ckm::AES_CBC_PAD, AES_CIPHER),
    (ckm::AES_GCM, AES_CIPHER),
];

/// The information of one mechanism, if the unit implements it.
pub fn mechanism_info(mechanism: u64) -> Option<MechanismInfo> {
    MECHANISMS
        .iter()
        .find(|(number, _)| *number == mechanism)
        .map(|(_, info)| *info)
}

/// Every mechanism number, for `GetMechanismList`.
pub fn mechanism_list() -> Vec<u64> {
    MECHANISMS.iter().map(|(number, _)| *number).collect()
}
