//! `rotor bench` against a dev instance: every operation is driven for a second with the
//! yardstick beside it; the report must count answered requests and no failure. (Speed itself
//! is measured with the command, never asserted here.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[test]
fn bench_drives_each_operation_and_its_yardstick_without_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, _info) = support::start_dev(dir.path(), &[]);
    let info_file = dir.path().join("dev.json");
    for op in ["unwrap", "wrap", "rewrap"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args([
                "bench",
                "--op",
                op,
                "--connections",
                "8",
                "--seconds",
                "1",
                "--baseline",
                "--json",
            ])
            .arg("--info-file")
            .arg(&info_file)
            .env("ROTOR_HOME", dir.path().join("bench-home"))
            .output()
            .expect("run rotor bench");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "rotor bench --op {op} failed: {stderr}"
        );
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("one JSON report");
        assert_eq!(report["op"], op, "{report}");
        assert_eq!(report["connections"], 8, "{report}");
        for side in ["service", "baseline"] {
            let measured = &report[side];
            assert!(
                measured["requests"].as_u64().unwrap() > 0,
                "{side}: {report}"
            );
            assert_eq!(measured["failures"], 0, "{side}: {report}");
            let p50 = measured["p50_ms"].as_f64().unwrap();
            let p99 = measured["p99_ms"].as_f64().unwrap();
            let p999 = measured["p999_ms"].as_f64().unwrap();
            assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{side}: {report}");
        }
        assert!(
            report["ratio_to_baseline"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
}

#[test]
fn bench_refuses_a_file_that_is_not_a_dev_info_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-info.json");
    std::fs::write(&file, b"{\"hello\": 1}").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["bench", "--seconds", "1"])
        .arg("--info-file")
        .arg(&file)
        .env("ROTOR_HOME", dir.path().join("home"))
        .output()
        .expect("run rotor bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not the info file of 'rotor dev --info-file'"),
        "{stderr}"
    );
}
