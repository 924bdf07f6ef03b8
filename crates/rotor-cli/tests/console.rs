//! `rotor console` as a process: only requests with its session token get an answer, only on
//! its own host name, and a state-changing request only from its own origin; it sends no
//! cross-origin headers. (The browser suite drives the pages: tests/python/test_console.py.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

use std::time::{Duration, Instant};

/// The console process, killed when dropped.
struct ConsoleProcess(std::process::Child);

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rotor console` on a fresh workstation (not logged in: the guard answers first) and
/// returns its URL.
fn start(dir: &std::path::Path) -> (ConsoleProcess, String) {
    let url_file = dir.join("console.url");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["console", "--no-open", "--url-file"])
        .arg(&url_file)
        .env("ROTOR_HOME", dir.join("home"))
        .env_remove("ROTOR_ENDPOINT")
        .env_remove("ROTOR_API_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let process = ConsoleProcess(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&url_file)
            && text.ends_with('\n')
        {
            return (process, text.trim().to_owned());
        }
        assert!(Instant::now() < deadline, "the console wrote no URL");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn only_the_token_holder_on_the_consoles_own_origin_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_console, url) = start(dir.path());
    let (origin, token) = url.split_once("/units?token=").unwrap();
    assert!(origin.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(token.len(), 64, "{url}");
    let http = reqwest::Client::new();

    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("access-control-allow-origin").is_none());
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let body = page.text().await.unwrap();
    assert!(body.contains("Crypto units"), "{body}");
    // Not logged in: the tab says so, in the page.
    assert!(body.contains("rotor login"), "{body}");

    for refused in [
        format!("{origin}/units"),
        format!("{origin}/units?token="),
        format!("{origin}/units?token={}", "0".repeat(64)),
        format!("{origin}/units?token={}", &token[..63]),
        format!("{origin}/progress"),
        format!("{origin}/"),
    ] {
        let response = http.get(&refused).send().await.unwrap();
        assert_eq!(response.status(), 403, "{refused}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }

    // A name rebound to 127.0.0.1 reaches the socket but not the console.
    let rebound = http
        .get(&url)
        .header("Host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);

    let action = serde_json::json!({"action": {"kind": "select", "units": [1]}});
    let run = format!("{origin}/run?token={token}");
    for (what, header) in [
        ("another site", Some("http://attacker.example")),
        ("another port", Some("http://127.0.0.1:1")),
        ("an opaque origin", Some("null")),
        ("no origin", None),
    ] {
        let mut request = http.post(&run).json(&action);
        if let Some(value) = header {
            request = request.header("Origin", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{what}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }

    // The console's own page may: the action runs and reports why it could not select.
    let own = http
        .post(&run)
        .header("Origin", origin)
        .json(&action)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let reply: serde_json::Value = own.json().await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("rotor login"),
        "{reply}"
    );
    assert!(!dir.path().join("home").join("settings.json").exists());
}
