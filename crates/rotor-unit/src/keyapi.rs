//! The unit's key operations for the service, as pure functions of its master keys: generate,
//! import, export (standard keys only), wrap, unwrap, rewrap, and their batch forms. The request
//! and reply types are in [`rotor_proto::keyops`]; each request type implements
//! [`KeyOperation`] here, and the daemon and the in-process backend both call it.
//!
//! Root key material and DEKs are unwrapped only here. Unwrapped root keys are cached in memory
//! (keyed by blob and binding) so that hot keys cost one AES-GCM operation per request; a key's
//! cached versions are dropped when the service reports it deleted or purged ([`ForgetKey`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rotor_crypto::{constant_time_eq, fill_random, sha256};
pub use rotor_proto::keyops::*;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{BlobBinding, KeyError, Masters, open_key, seal_key, unwrap_dek, wrap_dek};

/// A key operation the unit performs with its master keys alone.
pub trait KeyOperation: UnitOp {
    /// The operation takes long enough (an RSA-4096 key generation or decryption, thousands of
    /// blobs) that it must not hold an async worker thread: the daemon runs it as blocking work.
    const BLOCKING: bool = false;

    /// Runs the operation; `masters` are the unit's current and committed new master keys, and
    /// whether a rotation pinned the new one.
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<Self::Reply, KeyError>;
}

/// Unwrapped key material, shared between the cache and requests using it.
type Material = Arc<Zeroizing<Vec<u8>>>;

/// Largest number of unwrapped root keys kept in memory.
const CACHE_LIMIT: usize = 100_000;

/// Unwrapped root keys, keyed by SHA-256 of binding and blob. The blob names its master key's
/// VP, which every lookup checks against the current register first, so clearing or replacing
/// the register makes cached keys unreachable; a deleted key's versions are dropped
/// ([`RootKeyCache::forget`]).
#[derive(Default)]
pub struct RootKeyCache {
    keys: Mutex<HashMap<[u8; 32], CachedKey>>,
}

/// One unwrapped key version and the key it belongs to.
struct CachedKey {
    /// Instance and key id, so that every version of a key can be forgotten at once.
    owner: (Uuid, Uuid),
    material: Material,
}

impl RootKeyCache {
    fn cache_key(key: &KeyRef) -> [u8; 32] {
        let mut input = serde_json::to_vec(&key.binding).unwrap_or_default();
        input.extend_from_slice(&key.blob);
        sha256(&input)
    }

    /// The material of `key`, unwrapped under `master` or taken from the cache.
    pub fn open(&self, masters: &Masters, key: &KeyRef) -> Result<Material, KeyError> {
        let master = masters.for_blob(&key.blob)?;
        let id = Self::cache_key(key);
        if let Some(found) = self
            .keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(&id).map(|cached| Arc::clone(&cached.material)))
        {
            return Ok(found);
        }
        let material = Arc::new(open_key(master, &key.binding, &key.blob)?);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= CACHE_LIMIT {
                keys.clear();
            }
            let cached = CachedKey {
                owner: (key.binding.instance, key.binding.key),
                material: Arc::clone(&material),
            };
            keys.insert(id, cached);
        }
        Ok(material)
    }

    /// Drops every cached version of one key; answers how many there were. Material still in
    /// use by a running request is wiped when that request ends.
    pub fn forget(&self, instance: Uuid, key: Uuid) -> usize {
        let Ok(mut keys) = self.keys.lock() else {
            return 0;
        };
        let before = keys.len();
        keys.retain(|_, cached| cached.owner != (instance, key));
        before - keys.len()
    }
}

impl KeyOperation for GenerateRequest {
    fn perform(&self, masters: &Masters, _cache: &RootKeyCache) -> Result<SealedKey, KeyError> {
        let master = masters.wrapping();
        if ![16, 24, 32].contains(&self.length) {
            return Err(KeyError::Size(
                "generated keys are 16, 24 or 32 bytes".to_owned(),
            ));
        }
        let mut material = Zeroizing::new(vec![0u8; self.length]);
        fill_random(&mut material);
        let blob = seal_key(master, &self.binding, &material)?;
        Ok(SealedKey {
            blob,
            vp: master.vp(),
            material: self.binding.extractable.then_some(material),
        })
    }
}

impl KeyOperation for ImportRequest {
    fn perform(&self, masters: &Masters, _cache: &RootKeyCache) -> Result<SealedKey, KeyError> {
        let master = masters.wrapping();
        if !self.binding.extractable && ![16, 24, 32].contains(&self.material.len()) {
            return Err(KeyError::Size(
                "root key material must be 16, 24 or 32 bytes".to_owned(),
            ));
        }
        let blob = seal_key(master, &self.binding, &self.material)?;
        Ok(SealedKey {
            blob,
            vp: master.vp(),
            material: None,
        })
    }
}

impl KeyOperation for ImportTokenRequest {
    const BLOCKING: bool = true;

    fn perform(
        &self,
        masters: &Masters,
        _cache: &RootKeyCache,
    ) -> Result<ImportTokenKeys, KeyError> {
        let master = masters.wrapping();
        let (public_key, private) =
            rotor_crypto::rsa_oaep_generate().map_err(|_| KeyError::Invalid)?;
        Ok(ImportTokenKeys {
            public_key,
            sealed_private_key: crate::keys::seal_import_key(
                master,
                self.instance,
                self.token,
                &private,
            )?,
        })
    }
}

impl KeyOperation for SecureImportRequest {
    const BLOCKING: bool = true;

    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<SealedKey, KeyError> {
        let hash = match self.algorithm.as_str() {
            "RSAES_OAEP_SHA_256" => rotor_crypto::OaepHash::Sha256,
            "RSAES_OAEP_SHA_1" => rotor_crypto::OaepHash::Sha1,
            other => {
                return Err(KeyError::Size(format!(
                    "encryption algorithm '{other}' is not RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1"
                )));
            }
        };
        let private = crate::keys::open_import_key(
            masters.for_blob(&self.sealed_private_key)?,
            self.binding.instance,
            self.token,
            &self.sealed_private_key,
        )?;
        let material = rotor_crypto::rsa_oaep_decrypt(&private, hash, &self.encrypted_material)
            .map_err(|_| KeyError::Invalid)?;
        let nonce = rotor_crypto::open_aes_gcm_with_key(&material, &self.iv, &self.encrypted_nonce)
            .map_err(|_| KeyError::Invalid)?;
        if !constant_time_eq(&nonce, &self.nonce) {
            return Err(KeyError::Invalid);
        }
        ImportRequest {
            binding: self.binding.clone(),
            material,
        }
        .perform(masters, cache)
    }
}

impl KeyOperation for ExportRequest {
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<Plaintext, KeyError> {
        if !self.key.binding.extractable {
            return Err(KeyError::NotExtractable);
        }
        let material = cache.open(masters, &self.key)?;
        Ok(Plaintext {
            plaintext: Zeroizing::new(material.to_vec()),
        })
    }
}

impl KeyOperation for WrapRequest {
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<Wrapped, KeyError> {
        if self.key.binding.extractable {
            return Err(KeyError::Size("only root keys wrap other keys".to_owned()));
        }
        let root = cache.open(masters, &self.key)?;
        let mut generated = None;
        let dek: &[u8] = match &self.plaintext {
            Some(given) => given,
            None => {
                let fresh = generated.insert(Zeroizing::new(vec![0u8; 32]));
                fill_random(fresh);
                fresh
            }
        };
        let ciphertext = wrap_dek(&root, &self.key.binding, dek, &self.aad)?;
        Ok(Wrapped {
            ciphertext,
            plaintext: generated,
        })
    }
}

impl KeyOperation for UnwrapRequest {
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<Plaintext, KeyError> {
        let root = cache.open(masters, &self.key)?;
        let plaintext = unwrap_dek(&root, &self.key.binding, &self.ciphertext, &self.aad)?;
        Ok(Plaintext { plaintext })
    }
}

impl KeyOperation for RewrapRequest {
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<Wrapped, KeyError> {
        let from = cache.open(masters, &self.from)?;
        let to = cache.open(masters, &self.to)?;
        let plaintext = unwrap_dek(&from, &self.from.binding, &self.ciphertext, &self.aad)?;
        let ciphertext = wrap_dek(&to, &self.to.binding, &plaintext, &self.aad)?;
        Ok(Wrapped {
            ciphertext,
            plaintext: self.reveal_plaintext.then_some(plaintext),
        })
    }
}

/// Concurrent wraps, unwraps and rewraps in one exchange: each item is served exactly as it
/// would be alone, and a refusal answers that item only.
impl KeyOperation for KeyBatch {
    fn perform(&self, masters: &Masters, cache: &RootKeyCache) -> Result<KeyBatchResult, KeyError> {
        if self.items.len() > MAX_KEY_BATCH {
            return Err(KeyError::Size(format!(
                "a key batch holds at most {MAX_KEY_BATCH} requests"
            )));
        }
        let items = self
            .items
            .iter()
            .map(|item| {
                let reply = match item {
                    BatchedKeyOp::Wrap(op) => {
                        op.perform(masters, cache).map(BatchedKeyReply::Wrapped)
                    }
                    BatchedKeyOp::Unwrap(op) => {
                        op.perform(masters, cache).map(BatchedKeyReply::Plaintext)
                    }
                    BatchedKeyOp::Rewrap(op) => {
                        op.perform(masters, cache).map(BatchedKeyReply::Wrapped)
                    }
                };
                reply.map_err(|err| err.to_body())
            })
            .collect();
        Ok(KeyBatchResult { items })
    }
}

/// An application-held blob to the new master key, once a rotation has pinned it: a merely
/// committed register can still be cleared, and blobs made under it would die with it.
impl KeyOperation for RewrapToNew {
    fn perform(&self, masters: &Masters, _cache: &RootKeyCache) -> Result<SealedKey, KeyError> {
        let new = masters
            .new
            .as_ref()
            .filter(|_| masters.new_pinned())
            .ok_or(KeyError::NoNewMasterKey)?;
        let blob = crate::keys::rewrap_blob(
            masters,
            new,
            &BlobBinding::Key(self.key.binding.clone()),
            &self.key.blob,
        )?;
        Ok(SealedKey {
            blob,
            vp: new.vp(),
            material: None,
        })
    }
}

/// A GREP11 call, run by `rotor-ep11` on blobs sealed under this unit's registers. Blocking:
/// a call may carry megabytes of data.
impl KeyOperation for Grep11Request {
    const BLOCKING: bool = true;

    fn perform(&self, masters: &Masters, _cache: &RootKeyCache) -> Result<Grep11Outcome, KeyError> {
        let sealer = crate::grep11::UnitSealer {
            masters,
            instance: self.instance,
        };
        Ok(Grep11Outcome(rotor_ep11::execute(&sealer, &self.call)))
    }
}

impl KeyOperation for RewrapBatch {
    const BLOCKING: bool = true;

    fn perform(
        &self,
        masters: &Masters,
        _cache: &RootKeyCache,
    ) -> Result<RewrapBatchResult, KeyError> {
        let to = masters.wrapping();
        if !to.vp().matches(&self.to) {
            return Err(KeyError::WrongTarget {
                requested: self.to,
                wrapping: to.vp(),
            });
        }
        if self.items.len() > MAX_BATCH {
            return Err(KeyError::Size(format!(
                "at most {MAX_BATCH} blobs per batch"
            )));
        }
        // A blob under a master key this unit lacks fails the whole batch, so that the service
        // sends it to a unit that holds both registers.
        for item in &self.items {
            masters.for_blob(&item.blob)?;
        }
        let blobs = self
            .items
            .iter()
            .map(|item| crate::keys::rewrap_blob(masters, to, &item.binding, &item.blob).ok())
            .collect();
        Ok(RewrapBatchResult { blobs })
    }
}

impl KeyOperation for GenerateBatch {
    const BLOCKING: bool = true;

    fn perform(
        &self,
        masters: &Masters,
        _cache: &RootKeyCache,
    ) -> Result<GeneratedBatch, KeyError> {
        if self.items.len() > MAX_BATCH {
            return Err(KeyError::Size(format!(
                "at most {MAX_BATCH} keys per batch"
            )));
        }
        let master = masters.wrapping();
        let keys = self
            .items
            .iter()
            .map(|item| {
                if item.binding.extractable {
                    return Err(KeyError::Size(
                        "bulk creation makes root keys only".to_owned(),
                    ));
                }
                let mut material = Zeroizing::new(vec![0u8; 32]);
                fill_random(&mut material);
                let blob = seal_key(master, &item.binding, &material)?;
                let ciphertext = wrap_dek(&material, &item.binding, &item.dek, &[])?;
                Ok((blob, ciphertext))
            })
            .collect::<Result<_, _>>()?;
        Ok(GeneratedBatch {
            vp: master.vp(),
            keys,
        })
    }
}
