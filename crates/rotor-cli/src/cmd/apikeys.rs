//! `rotor apikeys`: the API keys kept in the service's store, managed while it runs.

use anyhow::Result;
use rotor_server::iam::{API_KEY_REFRESH_SECONDS, ApiKeyView, Role};
use serde_json::json;

use crate::args::{ApiKeyRole, ApikeysCommand};
use crate::client::NewApiKey;
use crate::output::{print_json, table};
use crate::session::Session;

impl From<ApiKeyRole> for Role {
    fn from(role: ApiKeyRole) -> Self {
        match role {
            ApiKeyRole::Reader => Role::Reader,
            ApiKeyRole::Writer => Role::Writer,
            ApiKeyRole::Manager => Role::Manager,
            ApiKeyRole::CryptoUnitAdministrator => Role::CryptoUnitAdministrator,
        }
    }
}

/// `rotor apikeys …`
pub async fn apikeys(session: &Session, command: ApikeysCommand) -> Result<()> {
    let service = session.service()?;
    match command {
        ApikeysCommand::Create {
            name,
            instances,
            role,
        } => {
            let created = service
                .create_api_key(&name, role.into(), &instances)
                .await?;
            show_new(session, &created, "Created");
        }
        ApikeysCommand::List => {
            let keys = service.api_keys().await?;
            if session.json {
                print_json(&json!({ "api_keys": keys }));
            } else if keys.is_empty() {
                println!(
                    "No stored API keys ('rotor apikeys create' makes one; the keys of the service's configuration are not listed)."
                );
            } else {
                let rows: Vec<_> = keys.iter().map(row).collect();
                print!(
                    "{}",
                    table(
                        &["ID", "NAME", "ROLE", "INSTANCES", "CREATED", "STATE"],
                        &rows
                    )
                );
            }
        }
        ApikeysCommand::Rotate { id } => {
            session.confirm(&format!(
                "Rotate API key {id}? Its current value is refused at once and its tokens within {API_KEY_REFRESH_SECONDS} seconds."
            ))?;
            let rotated = service.rotate_api_key(id).await?;
            show_new(session, &rotated, "Rotated");
        }
        ApikeysCommand::Revoke { id } => {
            session.confirm(&format!(
                "Revoke API key {id} for good? It is refused at once and its tokens within {API_KEY_REFRESH_SECONDS} seconds."
            ))?;
            let revoked = service.revoke_api_key(id).await?;
            if session.json {
                print_json(&json!({ "api_key": revoked }));
            } else {
                println!(
                    "Revoked API key '{}' ({}). Its tokens are refused within {API_KEY_REFRESH_SECONDS} seconds on every replica.",
                    revoked.name, revoked.id
                );
            }
        }
    }
    Ok(())
}

/// A key just created or rotated, with its value (shown this once).
fn show_new(session: &Session, new: &NewApiKey, verb: &str) {
    let key = &new.api_key;
    if session.json {
        print_json(&json!({ "api_key": key, "key": new.key.as_str() }));
    } else {
        println!(
            "{verb} API key '{}' ({}): role {}, instances {}.",
            key.name,
            key.id,
            key.role,
            key.instances.join(", ")
        );
        println!("Its value, shown only now (keep it secret):");
        println!("{}", new.key.as_str());
    }
}

fn row(key: &ApiKeyView) -> Vec<String> {
    let state = match (&key.revoked, &key.revoked_by) {
        (Some(at), Some(by)) => format!("revoked {at} by {by}"),
        (Some(at), None) => format!("revoked {at}"),
        _ if key.generation > 1 => format!("active (rotated {} time(s))", key.generation - 1),
        _ => "active".to_owned(),
    };
    vec![
        key.id.to_string(),
        key.name.clone(),
        key.role.clone(),
        key.instances.join(","),
        key.created.clone(),
        state,
    ]
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_help_states_the_revocation_bound_the_service_keeps() {
        let mut cli = crate::args::Cli::command();
        let help = cli
            .find_subcommand_mut("apikeys")
            .expect("apikeys")
            .render_long_help()
            .to_string();
        assert!(
            help.contains(&format!("within {API_KEY_REFRESH_SECONDS} seconds")),
            "{help}"
        );
    }
}
