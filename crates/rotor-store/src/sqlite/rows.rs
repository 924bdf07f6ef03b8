//! How each kind of row is written and read. A row that does not parse is reported as
//! corrupt with its kind and id, never defaulted.

use super::*;
pub(super) use crate::records::*;

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
