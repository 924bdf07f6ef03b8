//! ECDSA signatures (FIPS 186-5) of admins and units: P-256/SHA-256 and P-521/SHA-512.

use p256::elliptic_curve::Generate;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::*;

/// An ECDSA curve and hash pairing accepted for admin and unit signatures (FIPS 186-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigAlg {
    /// ECDSA over P-256 with SHA-256; signatures are 64 bytes `r ‖ s`. The default, and what
    /// PKCS#11 tokens return for `CKM_ECDSA`.
    #[serde(rename = "p256")]
    P256Sha256,
    /// ECDSA over P-521 with SHA-512; signatures are 132 bytes `r ‖ s`. What HPCS TKE uses.
    #[serde(rename = "p521")]
    P521Sha512,
}

impl SigAlg {
    /// The short name used in files and output.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256Sha256 => "p256",
            Self::P521Sha512 => "p521",
        }
    }

    /// Parses [`SigAlg::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "p256" | "P-256" => Some(Self::P256Sha256),
            "p521" | "P-521" | "p521ec" => Some(Self::P521Sha512),
            _ => None,
        }
    }
}

/// A public signature key: an algorithm and the uncompressed SEC1 point.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey {
    /// The algorithm.
    pub alg: SigAlg,
    /// `04 ‖ X ‖ Y`.
    #[serde(with = "hex::serde")]
    pub sec1: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.alg.name(),
            hex::encode(&self.sec1)
        )
    }
}

impl PublicKey {
    /// Parses and validates a point, returning it in uncompressed form.
    pub fn parse(alg: SigAlg, sec1: &[u8]) -> Result<Self, Opaque> {
        let sec1 = match alg {
            SigAlg::P256Sha256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map_err(|_| Opaque)?
                .to_sec1_point(false)
                .as_bytes()
                .to_vec(),
            SigAlg::P521Sha512 => p521::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map_err(|_| Opaque)?
                .to_sec1_point(false)
                .as_bytes()
                .to_vec(),
        };
        Ok(Self { alg, sec1 })
    }

    /// The subject key identifier: SHA-256 of the uncompressed point, as HPCS computes it.
    pub fn ski(&self) -> [u8; 32] {
        sha256(&self.sec1)
    }

    /// The identity fingerprint people compare out of band: SHA-256 (FIPS 180-4) of the
    /// uncompressed point.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(sha256(&self.sec1))
    }

    /// Verifies `signature` (fixed-size `r ‖ s`) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Opaque> {
        use p256::ecdsa::signature::Verifier;
        match self.alg {
            SigAlg::P256Sha256 => {
                let key =
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.sec1).map_err(|_| Opaque)?;
                let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|_| Opaque)?;
                key.verify(message, &sig).map_err(|_| Opaque)
            }
            SigAlg::P521Sha512 => {
                let key =
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(&self.sec1).map_err(|_| Opaque)?;
                let sig = p521::ecdsa::Signature::from_slice(signature).map_err(|_| Opaque)?;
                key.verify(message, &sig).map_err(|_| Opaque)
            }
        }
    }
}

/// A unit identity's fingerprint: SHA-256 of its uncompressed public point, shown and read as
/// 64 lowercase hex characters. Whoever holds it can tell the unit from an impostor.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of an identity public key.
    pub fn of(identity: &PublicKey) -> Self {
        identity.fingerprint()
    }

    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (either case; surrounding blanks and `:` separators ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(digits).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a fingerprint is 64 hex characters"))
    }
}

/// A private signature key (admin sigkey or unit identity). Zeroized on drop by the curve crates.
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA P-256 / SHA-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-521 / SHA-512.
    P521(p521::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg().name())
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(alg: SigAlg) -> Self {
        match alg {
            SigAlg::P256Sha256 => Self::P256(p256::ecdsa::SigningKey::generate()),
            SigAlg::P521Sha512 => Self::P521(p521::ecdsa::SigningKey::generate()),
        }
    }

    /// Restores a key from its scalar bytes.
    pub fn from_scalar(alg: SigAlg, scalar: &[u8]) -> Result<Self, Opaque> {
        Ok(match alg {
            SigAlg::P256Sha256 => {
                Self::P256(p256::ecdsa::SigningKey::from_slice(scalar).map_err(|_| Opaque)?)
            }
            SigAlg::P521Sha512 => {
                Self::P521(p521::ecdsa::SigningKey::from_slice(scalar).map_err(|_| Opaque)?)
            }
        })
    }

    /// The scalar bytes, for storing in a sealed file.
    pub fn to_scalar(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            Self::P256(key) => key.to_bytes().to_vec(),
            Self::P521(key) => key.to_bytes().to_vec(),
        })
    }

    /// A P-521 key from PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), as HPCS TKE
    /// signature key files hold it.
    pub fn p521_from_pem(pem: &str) -> Result<Self, Opaque> {
        use p521::pkcs8::DecodePrivateKey;
        let secret = p521::SecretKey::from_pkcs8_pem(pem)
            .or_else(|_| p521::SecretKey::from_sec1_pem(pem))
            .map_err(|_| Opaque)?;
        Self::from_scalar(SigAlg::P521Sha512, &secret.to_bytes())
    }

    /// The algorithm.
    pub fn alg(&self) -> SigAlg {
        match self {
            Self::P256(_) => SigAlg::P256Sha256,
            Self::P521(_) => SigAlg::P521Sha512,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let sec1 = match self {
            Self::P256(key) => key.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            Self::P521(key) => key.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
        };
        PublicKey {
            alg: self.alg(),
            sec1,
        }
    }

    /// ECDSA signature over `message` (hashed with the algorithm's digest), as fixed `r ‖ s`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match self {
            Self::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(message);
                sig.to_vec()
            }
            Self::P521(key) => {
                let sig: p521::ecdsa::Signature = key.sign(message);
                sig.to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_point_and_reads_back_from_its_hex() {
        let key = SigningKey::generate(SigAlg::P256Sha256).public_key();
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.as_bytes(), &sha256(&key.sec1));
        let text = fingerprint.to_string();
        assert_eq!(text, hex::encode(sha256(&key.sec1)));
        assert_eq!(
            Fingerprint::from_hex(&text.to_uppercase()),
            Some(fingerprint)
        );
        assert_eq!(Fingerprint::from_hex(&text[..62]), None);
    }
}
