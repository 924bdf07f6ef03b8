//! How each kind of row is written and read. A row that does not parse is reported as
//! corrupt with its kind and id, never defaulted.

use super::*;

/// A row that does not parse, named by its kind and id so that an operator can find it.
pub(super) fn corrupt(row: impl Display, why: impl Display) -> StoreError {
    StoreError::Corrupt(format!("{row}: {why}"))
}

pub(super) fn parse_doc(instance: Uuid, id: &str, doc: &str) -> Result<KeyMeta, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("key {id} of instance {instance}"), err))
}

pub(super) fn to_doc(key: &KeyMeta) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|err| corrupt(format_args!("key {}", key.id), err))
}

pub(super) fn vp_of(bytes: &[u8], row: impl Display) -> Result<Vp, StoreError> {
    bytes
        .try_into()
        .map(Vp)
        .map_err(|_| corrupt(row, "its VP is not 32 bytes"))
}

/// The VP column of a blob: the blob's own prefix. A unit's reply that reports another master
/// key than the blob carries is refused, so the count under each VP never trusts a report.
pub(super) fn recorded_vp(
    blob: &[u8],
    reported: &Vp,
    row: impl Display,
) -> Result<Vec<u8>, StoreError> {
    match rotor_proto::binding::blob_vp(blob) {
        Some(own) if own.matches(reported) => Ok(own.0.to_vec()),
        Some(own) => Err(StoreError::Refused(format!(
            "{row}: the unit reported master key {reported} for a blob wrapped under {own}; not stored"
        ))),
        None => Err(StoreError::Refused(format!(
            "{row}: the blob is too short to name its master key; not stored"
        ))),
    }
}

/// A unit identity row.
pub(super) fn unit_record_of(
    unit: Uuid,
    identity: &str,
    last_counter: i64,
) -> Result<UnitRecord, StoreError> {
    Ok(UnitRecord {
        identity: serde_json::from_str(identity)
            .map_err(|err| corrupt(format_args!("identity of unit {unit}"), err))?,
        last_counter: u64::try_from(last_counter)
            .map_err(|err| corrupt(format_args!("last counter of unit {unit}"), err))?,
    })
}

/// An import token's document: every field but the sealed private key, which has its own
/// column. Field names are those of the previous version's documents.
#[derive(Serialize, Deserialize)]
pub(super) struct ImportTokenDoc {
    id: Uuid,
    created: i64,
    expires: i64,
    max_retrievals: u32,
    remaining: u32,
    #[serde(with = "b64")]
    public_key: Vec<u8>,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

pub(super) fn parse_import_token(
    instance: Uuid,
    doc: &str,
    sealed_private_key: Option<Vec<u8>>,
) -> Result<ImportToken, StoreError> {
    let row = format!("import token of instance {instance}");
    let doc: ImportTokenDoc = serde_json::from_str(doc).map_err(|err| corrupt(&row, err))?;
    let sealed_private_key =
        sealed_private_key.ok_or_else(|| corrupt(&row, "it has no sealed private key"))?;
    Ok(ImportToken {
        id: doc.id,
        created: doc.created,
        expires: doc.expires,
        max_retrievals: doc.max_retrievals,
        remaining: doc.remaining,
        public_key: doc.public_key,
        nonce: doc.nonce,
        sealed_private_key,
    })
}

/// The instance's import token, if it has one.
pub(super) fn read_import_token(
    connection: &Connection,
    instance: Uuid,
) -> Result<Option<ImportToken>, StoreError> {
    let row: Option<(String, Option<Vec<u8>>)> = connection
        .query_row(
            "SELECT doc, sealed_private_key FROM import_tokens WHERE instance = ?1",
            params![instance.to_string()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    row.map(|(doc, sealed)| parse_import_token(instance, &doc, sealed))
        .transpose()
}

pub(super) fn import_token_doc(instance: Uuid, token: &ImportToken) -> Result<String, StoreError> {
    serde_json::to_string(&ImportTokenDoc {
        id: token.id,
        created: token.created,
        expires: token.expires,
        max_retrievals: token.max_retrievals,
        remaining: token.remaining,
        public_key: token.public_key.clone(),
        nonce: token.nonce.clone(),
    })
    .map_err(|err| corrupt(format_args!("import token of instance {instance}"), err))
}

pub(super) fn parse_journal(instance: Uuid, doc: &str) -> Result<Journal, StoreError> {
    serde_json::from_str(doc)
        .map_err(|err| corrupt(format_args!("rotation journal of instance {instance}"), err))
}

/// version, id, blob, vp, created
type VersionRow = (u32, String, Vec<u8>, Vec<u8>, i64);

pub(super) fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

pub(super) fn to_version(
    key: Uuid,
    (version, id, blob, vp, created): VersionRow,
) -> Result<KeyVersion, StoreError> {
    let row = format!("version {version} of key {key}");
    Ok(KeyVersion {
        version,
        id: Uuid::parse_str(&id).map_err(|err| corrupt(&row, err))?,
        blob,
        vp: vp_of(&vp, &row)?,
        created,
    })
}

pub(super) fn load(tx: &Transaction<'_>, instance: Uuid, id: Uuid) -> Result<KeyMeta, StoreError> {
    let doc: Option<String> = tx
        .query_row(
            "SELECT doc FROM keys WHERE instance = ?1 AND id = ?2",
            params![instance.to_string(), id.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    let doc = doc.ok_or_else(|| StoreError::NotFound(format!("key {id} does not exist")))?;
    parse_doc(instance, &id.to_string(), &doc)
}

pub(super) fn save(tx: &Transaction<'_>, key: &KeyMeta) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keys SET state = ?3, extractable = ?4, key_ring = ?5, doc = ?6 WHERE instance = ?1 AND id = ?2",
        params![
            key.instance.to_string(),
            key.id.to_string(),
            u8::from(key.state),
            key.extractable,
            key.key_ring,
            to_doc(key)?
        ],
    )?;
    Ok(())
}

pub(super) fn insert_version(
    tx: &Transaction<'_>,
    key: &KeyMeta,
    version: &KeyVersion,
) -> Result<(), StoreError> {
    let vp = recorded_vp(
        &version.blob,
        &version.vp,
        format_args!("version {} of key {}", version.version, key.id),
    )?;
    let closed = tx
        .prepare_cached("SELECT 1 FROM rotations WHERE instance = ?1 AND closed_vp = ?2")?
        .exists(params![key.instance.to_string(), vp])?;
    if closed {
        return Err(StoreError::Retired(version.vp));
    }
    tx.prepare_cached(
        "INSERT INTO key_versions (instance, key_id, version, id, blob, vp, created, extractable) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
            key.instance.to_string(),
            key.id.to_string(),
            version.version,
            version.id.to_string(),
            version.blob,
            vp,
            version.created,
            key.extractable
        ])?;
    Ok(())
}

pub(super) fn insert_alias(
    tx: &Transaction<'_>,
    instance: Uuid,
    key: Uuid,
    alias: &str,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO aliases (instance, alias, key_id) VALUES (?1, ?2, ?3)",
        params![instance.to_string(), alias, key.to_string()],
    )?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "alias '{alias}' is already in use in this instance"
        )));
    }
    Ok(())
}

/// An instance's policies document: each record named by its type, so a record that does not
/// parse is reported with the policy and the instance.
pub(super) fn parse_instance_policies(
    instance: Uuid,
    doc: &str,
) -> Result<InstancePolicies, StoreError> {
    let records: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(doc).map_err(|err| {
            corrupt(
                format_args!("instance policies of instance {instance}"),
                err,
            )
        })?;
    records
        .into_iter()
        .map(|(name, record)| {
            let record = serde_json::from_value(record).map_err(|err| {
                corrupt(
                    format_args!("instance policy {name} of instance {instance}"),
                    err,
                )
            })?;
            Ok((name, record))
        })
        .collect()
}
