//! Helpers shared by the integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

/// A bearer token from the service's token endpoint for `api_key`. Runs its own runtime on a
/// separate thread, so it works from synchronous and asynchronous tests alike.
pub(crate) fn access_token(endpoint: &str, api_key: &str) -> String {
    let url = format!("{endpoint}/identity/token");
    let form =
        format!("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={api_key}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "token endpoint: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned()
        })
    })
    .join()
    .unwrap()
}
