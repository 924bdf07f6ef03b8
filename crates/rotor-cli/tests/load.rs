//! The load test: `rotor demo` rotates the master key under 100,000 root keys while 16 clients
//! use the Key Protect API (unwrap, create and use keys, rotate keys); no request may fail, every
//! DEK must unwrap to its original afterwards, and every key version must end under the new
//! master key. (Speed is measured by the benchmark, not here.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn a_rotation_of_100000_keys_under_load_fails_no_request() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["demo", "--keys", "100000", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rotor demo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rotor demo failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();
    assert_eq!(summary["keys"], 100_000, "{summary}");
    assert_eq!(summary["failed_requests"], 0, "{summary}");
    assert_eq!(summary["failed_requests_idle"], 0, "{summary}");
    // The unwrap latencies of the same load before and during the rotation are reported.
    for field in ["unwrap_p99_ms_idle", "unwrap_p99_ms_during_rotation"] {
        assert!(summary[field].as_f64().unwrap() > 0.0, "{field}: {summary}");
    }
    assert_eq!(summary["verified_keys"], 100_000, "{summary}");
    assert!(
        summary["requests_during_rotation"].as_u64().unwrap() > 0,
        "the load ran during the rotation: {summary}"
    );
    // Keys were created and rotated while it ran, and all of them ended under the new key.
    assert!(
        summary["keys_created_during_rotation"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["keys_rotated_during_rotation"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(
        summary["key_versions_under_other_master_keys"], 0,
        "{summary}"
    );
    assert_ne!(summary["old_vp"], summary["new_vp"], "{summary}");
    // A GREP11 application signed, verified, encrypted and decrypted throughout, rewrapping its
    // blobs while the rotation held before promotion.
    let grep11 = &summary["grep11_calls_during_rotation"];
    assert!(grep11["calls"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(grep11["failed"], 0, "{summary}");
}
