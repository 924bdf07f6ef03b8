//! `rotor login`: checks an API key against the service and remembers it with the endpoint.

use anyhow::Result;
use serde_json::json;

use crate::client::ServiceClient;
use crate::output::print_json;
use crate::session::Session;

/// `rotor login`
pub async fn login(session: &Session, endpoint: &str, api_key: &str) -> Result<()> {
    let ca_cert = session.ca_cert().map(std::path::absolute).transpose()?;
    let service = ServiceClient::new(endpoint, api_key.to_owned(), ca_cert.as_deref())?;
    let instances = service.instances().await?;
    let endpoint = service.endpoint();
    let mut settings = session.home.settings()?;
    settings.endpoint = Some(endpoint.to_owned());
    settings.api_key = Some(api_key.to_owned());
    settings.ca_cert = ca_cert;
    session.home.save_settings(&settings)?;
    if session.json {
        print_json(&json!({"endpoint": endpoint, "instances": instances.len()}));
    } else {
        println!("Logged in to {endpoint} ({} instance(s)).", instances.len());
    }
    Ok(())
}
