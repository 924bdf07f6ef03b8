//! A master key moves between units only encrypted: the target makes a fresh importer key, the
//! recovery unit exports its register to it (threshold-signed), the target imports it into its
//! new register.

use anyhow::{Result, bail};
use rotor_crypto::Vp;
use rotor_unit::wire::{Action, Outcome, Register};

use crate::session::{Session, Target};

/// Copies a recovery unit's key into `target`'s new register (uncommitted); returns its VP.
pub(crate) async fn transfer_new(
    session: &Session,
    source: &Target,
    register: Register,
    target: &Target,
) -> Result<Vp> {
    let (outcome, _) = session.act(target, Action::CreateImporter).await?;
    let Outcome::Importer { public_key } = outcome else {
        bail!(
            "crypto unit {} did not return an importer key",
            target.number
        );
    };
    let export = Action::Export {
        register,
        recipient_unit: target.unit.id,
        recipient_importer: public_key.clone(),
    };
    let (outcome, _) = session.act(source, export).await?;
    let Outcome::Exported { vp, key } = outcome else {
        bail!(
            "crypto unit {} did not export its master key",
            source.number
        );
    };
    session
        .act(
            target,
            Action::ImportNew {
                importer: public_key,
                key,
            },
        )
        .await?;
    Ok(vp)
}

/// Copies the `register` of `source` into the current register of `target`.
pub(crate) async fn transfer(
    session: &Session,
    source: &Target,
    register: Register,
    target: &Target,
) -> Result<Vp> {
    let vp = transfer_new(session, source, register, target).await?;
    session.act(target, Action::Commit { vp }).await?;
    session.act(target, Action::SetImmediate { vp }).await?;
    Ok(vp)
}
