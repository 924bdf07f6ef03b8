//! GREP11 inside the unit: `rotor-ep11` runs the calls; this seals its key blobs and states
//! under the unit's registers, bound to the instance, and says which master key a blob needs
//! when the unit no longer holds it.

use rotor_ep11::consts::ckr;
use rotor_ep11::{Ep11Error, Ep11Result, Sealed, Sealer};
use rotor_proto::binding::{blob_vp, grep11_aad};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{KeyError, Masters, open_grep11, seal_grep11};

/// The unit's registers as the [`Sealer`] of one instance's GREP11 calls.
pub struct UnitSealer<'a> {
    /// The registers.
    pub masters: &'a Masters,
    /// The instance blobs are bound to.
    pub instance: Uuid,
}

impl Sealer for UnitSealer<'_> {
    fn seal(&self, kind: Sealed, plaintext: &[u8]) -> Ep11Result<Vec<u8>> {
        seal_grep11(self.masters, &grep11_aad(self.instance, kind), plaintext)
            .map_err(|_| Ep11Error::new(ckr::GENERAL_ERROR, "the blob could not be sealed"))
    }

    fn open(&self, kind: Sealed, sealed: &[u8]) -> Ep11Result<Zeroizing<Vec<u8>>> {
        if blob_vp(sealed).is_none() {
            return Err(Ep11Error::blob());
        }
        open_grep11(self.masters, &grep11_aad(self.instance, kind), sealed).map_err(|err| match err {
            KeyError::OtherMasterKey { blob, current } => Ep11Error::new(
                ckr::IBM_WKID_MISMATCH,
                format!(
                    "the blob is under master key {blob}, which this instance no longer holds (current master key: {current}); blobs must be rewrapped (RewrapKeyBlob) while a rotation to the new master key holds before promotion"
                ),
            ),
            _ => Ep11Error::blob(),
        })
    }

    fn rotation_pinned(&self) -> bool {
        self.masters.new_pinned()
    }
}

#[cfg(test)]
mod tests {
    use rotor_crypto::Secret32;
    use rotor_ep11::consts::{cka, ckm};
    use rotor_ep11::template::AttrValue;
    use rotor_ep11::{Call, Mechanism, Reply, execute};

    use super::*;

    fn generate(sealer: &UnitSealer<'_>) -> Vec<u8> {
        let call = Call::GenerateKey {
            mechanism: Mechanism {
                mechanism: ckm::AES_KEY_GEN,
                parameter: Vec::new(),
            },
            template: [(cka::VALUE_LEN, AttrValue::Int(32))].into_iter().collect(),
        };
        match execute(sealer, &call).unwrap() {
            Reply::Key { blob, .. } => blob,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blobs_carry_the_vp_are_bound_to_the_instance_and_name_a_retired_master_key() {
        let old = Secret32::random();
        let new = Secret32::random();
        let instance = Uuid::from_u128(7);
        let committed = Masters {
            current: old.clone(),
            new: Some(new.clone()),
            wrap_under_new: false,
        };
        let sealer = UnitSealer {
            masters: &committed,
            instance,
        };
        let blob = generate(&sealer);
        assert_eq!(blob_vp(&blob), Some(old.vp()), "committed is not pinned");
        assert!(!sealer.rotation_pinned());
        assert!(sealer.open(Sealed::Key, &blob).is_ok());
        let elsewhere = UnitSealer {
            masters: &committed,
            instance: Uuid::from_u128(8),
        };
        assert_eq!(
            elsewhere.open(Sealed::Key, &blob).unwrap_err().code,
            ckr::IBM_BLOB_ERROR
        );
        assert_eq!(
            sealer.open(Sealed::State, &blob).unwrap_err().code,
            ckr::IBM_BLOB_ERROR
        );

        let pinned = Masters {
            wrap_under_new: true,
            ..committed
        };
        let sealer = UnitSealer {
            masters: &pinned,
            instance,
        };
        let Reply::Blob(moved) =
            execute(&sealer, &Call::RewrapKeyBlob { blob: blob.clone() }).unwrap()
        else {
            panic!("no blob")
        };
        assert_eq!(blob_vp(&moved), Some(new.vp()));

        let promoted = Masters {
            current: new,
            new: None,
            wrap_under_new: false,
        };
        let sealer = UnitSealer {
            masters: &promoted,
            instance,
        };
        assert!(sealer.open(Sealed::Key, &moved).is_ok());
        let refused = sealer.open(Sealed::Key, &blob).unwrap_err();
        assert_eq!(refused.code, ckr::IBM_WKID_MISMATCH);
        assert!(
            refused.detail.contains(&old.vp().to_string()),
            "{}",
            refused.detail
        );
    }
}
