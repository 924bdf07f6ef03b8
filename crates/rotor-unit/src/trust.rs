//! Which unit: what a workstation or a service knows of a unit it trusts. The identity was
//! enrolled out of band (its fingerprint), and the highest transaction counter seen in the
//! unit's signed statuses is remembered. A unit presenting another identity is an impostor or a
//! replacement; one whose counter went backwards runs on an older copy of its state, on which
//! old signed commands replay and removed admins return. Both are refused.

use rotor_crypto::{Fingerprint, PublicKey};
use serde::{Deserialize, Serialize};

/// A unit's enrolled identity and the highest counter seen from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// SHA-256 of the unit's identity public key, compared out of band.
    pub fingerprint: Fingerprint,
    /// The highest transaction counter seen in a status signed by that identity.
    #[serde(default)]
    pub last_counter: u64,
}

/// Why a unit's verified status is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustRefusal {
    /// The status is signed by another identity than the enrolled one.
    IdentityChanged {
        /// The enrolled fingerprint.
        enrolled: Fingerprint,
        /// The fingerprint of the identity that signed.
        presented: Fingerprint,
    },
    /// The counter is below one already seen: the unit's state was rolled back.
    RolledBack {
        /// The highest counter seen before.
        seen: u64,
        /// The counter the unit reports now.
        presented: u64,
    },
}

impl std::fmt::Display for TrustRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IdentityChanged {
                enrolled,
                presented,
            } => write!(
                f,
                "it presents identity fingerprint {presented}, not the enrolled {enrolled}"
            ),
            Self::RolledBack { seen, presented } => write!(
                f,
                "it reports transaction counter {presented}, below the {seen} already seen: its state was replaced by an older copy (a rollback), on which old signed commands would replay and removed admins return"
            ),
        }
    }
}

impl std::error::Error for TrustRefusal {}

impl Enrollment {
    /// The enrollment of `fingerprint`, with `counter` seen.
    pub fn new(fingerprint: Fingerprint, counter: u64) -> Self {
        Self {
            fingerprint,
            last_counter: counter,
        }
    }

    /// Checks a verified status's signer and counter against this enrollment; returns the
    /// enrollment with the counter advanced to `counter`.
    pub fn check(&self, identity: &PublicKey, counter: u64) -> Result<Self, TrustRefusal> {
        let presented = identity.fingerprint();
        if presented != self.fingerprint {
            return Err(TrustRefusal::IdentityChanged {
                enrolled: self.fingerprint,
                presented,
            });
        }
        if counter < self.last_counter {
            return Err(TrustRefusal::RolledBack {
                seen: self.last_counter,
                presented: counter,
            });
        }
        Ok(Self::new(self.fingerprint, counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rotor_crypto::{SigAlg, SigningKey};

    #[test]
    fn the_enrolled_identity_passes_and_its_counter_only_advances() {
        let identity = SigningKey::generate(SigAlg::P256Sha256).public_key();
        let enrolled = Enrollment::new(identity.fingerprint(), 5);
        assert_eq!(enrolled.check(&identity, 5).unwrap().last_counter, 5);
        let advanced = enrolled.check(&identity, 9).unwrap();
        assert_eq!(advanced.last_counter, 9);
        assert_eq!(
            advanced.check(&identity, 8),
            Err(TrustRefusal::RolledBack {
                seen: 9,
                presented: 8
            })
        );
    }

    #[test]
    fn another_identity_is_refused_whatever_its_counter() {
        let identity = SigningKey::generate(SigAlg::P256Sha256).public_key();
        let impostor = SigningKey::generate(SigAlg::P256Sha256).public_key();
        let enrolled = Enrollment::new(identity.fingerprint(), 0);
        assert_eq!(
            enrolled.check(&impostor, 100),
            Err(TrustRefusal::IdentityChanged {
                enrolled: identity.fingerprint(),
                presented: impostor.fingerprint()
            })
        );
    }
}
