//! What the two load drivers, `rotor demo` and `rotor bench`, share: an IAM token for an API
//! key, and latency percentiles.

use anyhow::{Context, Result};
use serde_json::Value;

/// An IAM access token for `api_key`.
pub(crate) async fn access_token(
    http: &reqwest::Client,
    endpoint: &str,
    api_key: &str,
) -> Result<String> {
    let token: Value = http
        .post(format!("{endpoint}/identity/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={api_key}"
        ))
        .send()
        .await?
        .json()
        .await?;
    Ok(token["access_token"]
        .as_str()
        .context("the token endpoint gave no token")?
        .to_owned())
}

/// The `p` quantile (nearest rank: the smallest value with at least `p` of the values at or
/// below it) of `sorted` latencies in microseconds, in milliseconds; 0 for none.
pub(crate) fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    f64::from(sorted[index]) / 1000.0
}
