//! Records for the tests of every backend (the conformance suite and a backend's own tests): a
//! key, a version wrapped under a given VP, an import token.

use rotor_crypto::Vp;
use rotor_util::time::now_ms;
use uuid::Uuid;

use crate::{ImportToken, KeyMeta, KeyPolicies, KeyState, KeyVersion};

pub(crate) fn key(instance: Uuid, name: &str) -> KeyMeta {
    KeyMeta {
        instance,
        id: Uuid::new_v4(),
        name: name.to_owned(),
        description: String::new(),
        extractable: false,
        imported: false,
        state: KeyState::Active,
        key_ring: "default".to_owned(),
        aliases: vec![format!("{name}-alias")],
        created: now_ms(),
        created_by: "test".to_owned(),
        updated: now_ms(),
        last_rotated: None,
        deletion: None,
        deletion_authorization: None,
        policies: KeyPolicies::default(),
        newest_version: 1,
        labels: Vec::new(),
    }
}

/// Version `n`, its blob wrapped (by its prefix) under VP `[vp; 32]`.
pub(crate) fn version(n: u32, vp: u8) -> KeyVersion {
    KeyVersion {
        version: n,
        id: Uuid::new_v4(),
        blob: [vec![vp; 32], vec![n as u8; 28]].concat(),
        vp: Vp([vp; 32]),
        created: now_ms(),
    }
}

pub(crate) fn token() -> ImportToken {
    ImportToken {
        id: Uuid::new_v4(),
        created: 1,
        expires: 2,
        max_retrievals: 3,
        remaining: 3,
        public_key: vec![1, 2, 3],
        nonce: vec![4; 12],
        sealed_private_key: vec![5; 40],
    }
}
