//! `rotor login`: checks an API key against the service and remembers it with the endpoint.

use anyhow::Result;
use serde_json::json;

use crate::output::print_json;
use crate::session::Ctx;

/// `rotor login`
pub async fn login(ctx: &Ctx, endpoint: &str, api_key: &str) -> Result<()> {
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let mut probe = Ctx::new(ctx.home.clone(), ctx.json, ctx.yes, Some(endpoint.clone()));
    probe.api_key = Some(api_key.to_owned());
    let instances = probe.instances().await?;
    let mut settings = ctx.home.settings()?;
    settings.endpoint = Some(endpoint.clone());
    settings.api_key = Some(api_key.to_owned());
    ctx.home.save_settings(&settings)?;
    if ctx.json {
        print_json(&json!({"endpoint": endpoint, "instances": instances.len()}));
    } else {
        println!("Logged in to {endpoint} ({} instance(s)).", instances.len());
    }
    Ok(())
}
