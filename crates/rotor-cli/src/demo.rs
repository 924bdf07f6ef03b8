//! `rotor demo`: the main job end to end on a fresh local instance (units as real processes,
//! SQLite keystore). It runs the key-part ceremony, creates N root keys each wrapping a DEK,
//! rotates the master key with `rotor auto rotate` while a concurrent load unwraps DEKs through
//! the Key Protect API, and finally unwraps every DEK and compares it with its original.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_server::dev::DevInfo;
use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::args::{DemoArgs, DevArgs};
use crate::cmd::dev::{initialize, start_dev, step};
use crate::cmd::replicas::Replicas;
use crate::demo_grep11::Grep11App;
use crate::load::{access_token, percentile_ms};
use crate::output::print_json;

/// Keys per bulk creation request.
const CREATE_BATCH: usize = 5_000;
/// Concurrent clients of the load during the rotation.
const LOAD_CLIENTS: usize = 16;
/// Concurrent clients of the final verification.
const VERIFY_CLIENTS: usize = 32;

/// One demo key: its id, its DEK ciphertext and the DEK.
struct DemoKey {
    id: Uuid,
    ciphertext: String,
    dek: Zeroizing<[u8; 32]>,
}

/// A Key Protect client of the dev instance, spreading its requests over the service
/// replicas in turn.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    /// Requests sent again to another replica because their connection broke.
    retried: Arc<AtomicU64>,
    instance: Uuid,
    token: Arc<String>,
}

impl Client {
    async fn new(info: &DevInfo) -> Result<Self> {
        let http = rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(&info.ca_cert))?
            .pool_max_idle_per_host(VERIFY_CLIENTS * 2)
            .build()?;
        let api_key = info
            .api_keys
            .get("writer")
            .context("the dev instance has no writer API key")?;
        let token = access_token(&http, &info.endpoint, api_key).await?;
        let endpoints = if info.endpoints.is_empty() {
            vec![info.endpoint.clone()]
        } else {
            info.endpoints.clone()
        };
        Ok(Self {
            http,
            endpoints: Arc::new(endpoints),
            next: Arc::default(),
            retried: Arc::default(),
            instance: info.instance,
            token: Arc::new(token),
        })
    }

    /// Sends `request` (given a base URL) to the next replica in turn. When the connection
    /// breaks before an answer (the replica went away), it goes to the following replica, as a
    /// load balancer would do; any answer, errors included, is final.
    async fn send(
        &self,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let endpoint = &self.endpoints[(first + attempt) % self.endpoints.len()];
            match request(endpoint).send().await {
                Err(err)
                    if attempt + 1 < self.endpoints.len()
                        && (err.is_connect() || err.is_request()) =>
                {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    async fn create(&self, first: usize, count: usize) -> Result<Vec<DemoKey>> {
        let mut deks = Vec::with_capacity(count);
        let mut items = Vec::with_capacity(count);
        for n in first..first + count {
            let mut dek = Zeroizing::new([0u8; 32]);
            rotor_crypto::fill_random(dek.as_mut());
            items.push(json!({"name": format!("demo-{n:07}"), "dek": B64.encode(dek.as_ref())}));
            deks.push(dek);
        }
        let body = json!({ "keys": items });
        let response = self
            .send(|endpoint| {
                self.http
                    .post(format!(
                        "{endpoint}/v1/instances/{}/keys/batch",
                        self.instance
                    ))
                    .bearer_auth(self.token.as_str())
                    .json(&body)
            })
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("creating keys failed ({status}): {body}");
        }
        let created = body["keys"].as_array().cloned().unwrap_or_default();
        if created.len() != count {
            bail!("the service created {} keys, not {count}", created.len());
        }
        created
            .into_iter()
            .zip(deks)
            .map(|(key, dek)| {
                Ok(DemoKey {
                    id: key["id"]
                        .as_str()
                        .and_then(|id| Uuid::parse_str(id).ok())
                        .context("a created key has no id")?,
                    ciphertext: key["ciphertext"]
                        .as_str()
                        .context("a created key has no ciphertext")?
                        .to_owned(),
                    dek,
                })
            })
            .collect()
    }

    /// A Key Protect request; the answer's body if it succeeded.
    async fn kp(&self, path: &str, body: &Value) -> Option<Value> {
        let response = self
            .send(|endpoint| {
                self.http
                    .post(format!("{endpoint}{path}"))
                    .bearer_auth(self.token.as_str())
                    .header("bluemix-instance", self.instance.to_string())
                    .json(body)
            })
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        // Rotate answers 204 without a body.
        Some(response.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// Unwraps the key's DEK through the Key Protect API; true if it is the original.
    async fn unwrap_matches(&self, key: &DemoKey) -> bool {
        let path = format!("/api/v2/keys/{}/actions/unwrap", key.id);
        self.kp(&path, &json!({ "ciphertext": key.ciphertext }))
            .await
            .and_then(|body| body["plaintext"].as_str().and_then(|t| B64.decode(t).ok()))
            .is_some_and(|plain| plain.as_slice() == key.dek.as_ref())
    }

    /// Creates a root key through the Key Protect API and wraps a fresh DEK under it: three
    /// requests (create, wrap, unwrap); returns how many succeeded, all of them only if the DEK
    /// comes back.
    async fn create_and_use(&self, name: &str) -> u64 {
        let create = json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}],
        });
        let Some(created) = self.kp("/api/v2/keys", &create).await else {
            return 0;
        };
        let Some(id) = created["resources"][0]["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return 0;
        };
        let mut dek = Zeroizing::new([0u8; 32]);
        rotor_crypto::fill_random(dek.as_mut());
        let wrap = json!({ "plaintext": B64.encode(dek.as_ref()) });
        let path = format!("/api/v2/keys/{id}/actions/wrap");
        let Some(ciphertext) = self
            .kp(&path, &wrap)
            .await
            .and_then(|body| body["ciphertext"].as_str().map(str::to_owned))
        else {
            return 1;
        };
        let key = DemoKey {
            id,
            ciphertext,
            dek,
        };
        if self.unwrap_matches(&key).await {
            3
        } else {
            2
        }
    }

    /// Rotates a key through the Key Protect API, then unwraps its DEK, whose ciphertext now
    /// names an older version: two requests; returns how many succeeded.
    async fn rotate_and_unwrap(&self, key: &DemoKey) -> u64 {
        let path = format!("/api/v2/keys/{}/actions/rotate", key.id);
        if self.kp(&path, &json!({})).await.is_none() {
            return 0;
        }
        if self.unwrap_matches(key).await { 2 } else { 1 }
    }
}

/// Counts of a load.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failed: AtomicU64,
    created: AtomicU64,
    rotated: AtomicU64,
    /// How long each successful unwrap of the unwrapping clients took, in microseconds.
    unwrap_latencies_us: std::sync::Mutex<Vec<u32>>,
}

impl Tally {
    fn count(&self, requests: u64, succeeded: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.failed
            .fetch_add(requests - succeeded, Ordering::Relaxed);
    }

    /// The 99th percentile of the unwraps' latencies, in milliseconds.
    fn unwrap_p99_ms(&self) -> f64 {
        let mut latencies = self
            .unwrap_latencies_us
            .lock()
            .map(|latencies| latencies.clone())
            .unwrap_or_default();
        latencies.sort_unstable();
        percentile_ms(&latencies, 0.99)
    }
}

/// How long the load runs before the rotation, for the unwrap latency of an idle service.
const IDLE_LOAD: Duration = Duration::from_secs(3);

/// Runs the load from `LOAD_CLIENTS` tasks until `stop` is set: most clients unwrap DEKs spread
/// over the whole key set; one creates root keys and wraps and unwraps a DEK under each; one
/// rotates existing keys and unwraps their DEKs from the older version.
fn start_load(
    client: &Client,
    keys: &Arc<Vec<DemoKey>>,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..LOAD_CLIENTS)
        .map(|worker| {
            let (client, keys, stop, tally) = (
                client.clone(),
                Arc::clone(keys),
                Arc::clone(stop),
                Arc::clone(tally),
            );
            tokio::spawn(async move {
                // A stride coprime with most sizes walks the whole key set.
                let mut index = worker * 7919;
                let mut made = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    index = (index + 104_729) % keys.len();
                    match worker {
                        0 => {
                            made += 1;
                            let name = format!("made-during-rotation-{made}");
                            tally.count(3, client.create_and_use(&name).await);
                            tally.created.fetch_add(1, Ordering::Relaxed);
                        }
                        1 => {
                            tally.count(2, client.rotate_and_unwrap(&keys[index]).await);
                            tally.rotated.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            let sent = Instant::now();
                            let unwrapped = client.unwrap_matches(&keys[index]).await;
                            if unwrapped {
                                let micros =
                                    u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                                if let Ok(mut latencies) = tally.unwrap_latencies_us.lock() {
                                    latencies.push(micros);
                                }
                            }
                            tally.count(1, u64::from(unwrapped));
                        }
                    }
                }
            })
        })
        .collect()
}

/// Unwraps every key once; returns how many gave back their original DEK.
async fn verify_all(client: &Client, keys: &Arc<Vec<DemoKey>>) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let verified = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..VERIFY_CLIENTS)
        .map(|_| {
            let (client, keys, next, verified) = (
                client.clone(),
                Arc::clone(keys),
                Arc::clone(&next),
                Arc::clone(&verified),
            );
            tokio::spawn(async move {
                loop {
                    let index =
                        usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                    let Some(key) = keys.get(index) else {
                        return;
                    };
                    if client.unwrap_matches(key).await {
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    verified.load(Ordering::Relaxed)
}

fn say(json_output: bool, line: &str) {
    if !json_output {
        println!("{line}");
    }
}

/// `rotor demo`
pub async fn demo(args: DemoArgs, json_output: bool) -> Result<()> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let dev = DevArgs {
        units: 2,
        recovery_units: 1,
        dir: None,
        listen: "127.0.0.1:0".parse()?,
        info_file: None,
        imprint: true,
        purge_after_seconds: 4 * 3600,
        token_ttl_seconds: 3600,
        insecure_plain_http: false,
        replicas: args.replicas,
        postgres: args.postgres,
    };
    let mut instance = start_dev(&dev).await?;
    let info = instance.info.clone();
    let info = &info;
    say(
        json_output,
        &format!(
            "Started {} crypto units (2 operational, 1 recovery) as processes and the service at {} (TLS everywhere: the service over HTTPS, its units over mutual TLS).\nCeremony: 3 admins, thresholds 2/2, a master key from 3 key parts, commit, set immediate.",
            info.units.len(),
            info.endpoint
        ),
    );
    let old_vp = initialize(info, json_output).await?;

    say(
        json_output,
        &format!(
            "\nCreating {} root keys, each wrapping a random 32-byte DEK....",
            args.keys
        ),
    );
    let client = Client::new(info).await?;
    let created_at = Instant::now();
    let mut keys = Vec::with_capacity(args.keys);
    let mut first = 0;
    while first < args.keys {
        let count = CREATE_BATCH.min(args.keys - first);
        keys.extend(client.create(first, count).await?);
        first += count;
    }
    let keys = Arc::new(keys);
    say(
        json_output,
        &format!(
            "Created {} keys in {:.1} s.",
            keys.len(),
            created_at.elapsed().as_secs_f64()
        ),
    );

    say(
        json_output,
        &format!(
            "\nRotating the master key with 'rotor auto rotate' while {LOAD_CLIENTS} clients use the Key Protect API\n(unwrap DEKs; create keys and use them; rotate keys and unwrap from the older version)....\n$ rotor auto rotate"
        ),
    );
    // The same load without a rotation first, for the unwrap latency of an idle service.
    let idle_stop = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(Tally::default());
    let idle_load = start_load(&client, &keys, &idle_stop, &idle);
    tokio::time::sleep(IDLE_LOAD).await;
    idle_stop.store(true, Ordering::Relaxed);
    for task in idle_load {
        let _ = task.await;
    }
    // A GREP11 application uses an EC and an AES key blob made before the rotation; the
    // rotation holds before promotion so that it rewraps them (single service process only).
    let grep11 = Grep11App::start(info, &client.token).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = start_load(&client, &keys, &stop, &tally);
    let grep11_load = grep11.as_ref().map(|app| app.run(&stop));
    let rotation_started = Instant::now();
    let rotation_done = AtomicBool::new(false);
    let rotate = async {
        let rotated = match &grep11 {
            Some(app) => {
                async {
                    step(
                        info,
                        &["auto", "rotate", "--hold-before-promote", "--json"],
                        true,
                    )
                    .await?;
                    app.rewrap().await?;
                    step(info, &["auto", "rotate", "--json"], true).await
                }
                .await
            }
            None => step(info, &["auto", "rotate", "--json"], true).await,
        };
        rotation_done.store(true, Ordering::Relaxed);
        rotated
    };
    let (rotated, replicas_killed) = match instance.replicas() {
        Some(replicas) if !args.no_kill => {
            let (rotated, killed) = tokio::join!(
                rotate,
                kill_a_replica_during_reencryption(replicas, info, &rotation_done)
            );
            (rotated, killed?)
        }
        _ => (rotate.await, 0),
    };
    let rotation_seconds = rotation_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    if let Some(task) = grep11_load {
        let _ = task.await;
    }
    let grep11_counts = grep11.as_ref().map(Grep11App::counts);
    if let Some((calls, failed)) = grep11_counts {
        say(
            json_output,
            &format!(
                "GREP11 during it: {calls} calls (sign, verify, encrypt, decrypt with blobs made before the rotation, rewrapped while it held before promotion), {failed} call rounds failed."
            ),
        );
    }
    let rotated: Value = serde_json::from_str(
        rotated?
            .lines()
            .last()
            .context("'rotor auto rotate' printed nothing")?,
    )?;
    let journal: Value = serde_json::from_str(&step(info, &["mk", "--json"], true).await?)?;
    let reencryption_seconds = journal["rotation"]["reencrypted"]
        .as_i64()
        .zip(journal["rotation"]["started"].as_i64())
        .map(|(end, start)| (end - start) as f64 / 1000.0);
    let new_vp = rotated["to_vp"].as_str().unwrap_or_default().to_owned();
    // Keys made during the rotation must be under the new master key like all the others.
    let under_old: u64 = journal["key_storage"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["vp"].as_str() != Some(new_vp.as_str()))
        .filter_map(|entry| entry["key_versions"].as_u64())
        .sum();
    let created = tally.created.load(Ordering::Relaxed);
    let rotated_keys = tally.rotated.load(Ordering::Relaxed);
    let requests = tally.requests.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss)] // a rate, shown rounded
    let keys_per_second = keys.len() as f64 / rotation_seconds;
    say(
        json_output,
        &format!(
            "Rotated {} keys from master key {old_vp}\n                     to master key {new_vp}\nin {rotation_seconds:.2} s ({keys_per_second:.0} keys/s), the whole command included.\nDuring it: {requests} Key Protect requests ({created} keys created and used, {rotated_keys} keys rotated, the rest unwraps), {failed} failed; {under_old} key versions left under another master key.\nUnwrap latency, 99th percentile: {:.1} ms during the rotation, {:.1} ms with the same load before it.",
            keys.len(),
            tally.unwrap_p99_ms(),
            idle.unwrap_p99_ms()
        ),
    );

    say(
        json_output,
        "\nVerifying that every DEK unwraps to its original....",
    );
    let verify_started = Instant::now();
    let verified = verify_all(&client, &keys).await;
    say(
        json_output,
        &format!(
            "{verified} of {} DEKs unwrap to their original plaintext ({:.1} s).",
            keys.len(),
            verify_started.elapsed().as_secs_f64()
        ),
    );
    let failed_idle = idle.failed.load(Ordering::Relaxed);
    let mut summary = json!({
        "keys": keys.len(),
        "units": info.units.len(),
        "replicas": args.replicas,
        "replicas_killed": replicas_killed,
        "requests_sent_to_another_replica": client.retried.load(Ordering::Relaxed),
        "rotation_seconds": rotation_seconds,
        "keys_per_second": keys_per_second,
        "reencryption_seconds": reencryption_seconds,
        "requests_during_rotation": requests,
        "failed_requests": failed,
        "failed_requests_idle": failed_idle,
        "unwrap_p99_ms_idle": idle.unwrap_p99_ms(),
        "unwrap_p99_ms_during_rotation": tally.unwrap_p99_ms(),
        "keys_created_during_rotation": created,
        "keys_rotated_during_rotation": rotated_keys,
        "key_versions_under_other_master_keys": under_old,
        "grep11_calls_during_rotation": grep11_counts.map(|(calls, failed)| json!({"calls": calls, "failed": failed})),
        "verified_keys": verified,
        "old_vp": old_vp,
        "new_vp": new_vp,
        "store": if instance.store().is_some() { "postgres" } else { "sqlite" },
    });
    if args.baseline {
        let (rows, seconds) = match instance.store() {
            Some(store) => {
                say(
                    json_output,
                    "\nBaseline: a bare PostgreSQL rewrite of the same rows in one process....",
                );
                crate::baseline::bare_rewrite_postgres(&store.url).await?
            }
            None => {
                say(
                    json_output,
                    "\nBaseline: a bare SQLite rewrite of the same rows in one process....",
                );
                let keystore = info.dir.join("service").join("keys.db");
                rotor_util::blocking(|| crate::baseline::bare_rewrite(&keystore))?
            }
        };
        #[allow(clippy::cast_precision_loss)] // a rate, shown rounded
        let rate = rows as f64 / seconds;
        say(
            json_output,
            &format!(
                "{rows} rows in {seconds:.2} s ({rate:.0} rows/s); the rotation ran at {:.2}x that rate.",
                keys_per_second / rate
            ),
        );
        summary["baseline_rows"] = json!(rows);
        summary["baseline_seconds"] = json!(seconds);
        summary["baseline_rows_per_second"] = json!(rate);
        summary["ratio_to_baseline"] = json!(keys_per_second / rate);
    }
    if json_output {
        print_json(&summary);
    }
    if args.replicas > 1 && !args.no_kill && replicas_killed == 0 {
        bail!(
            "the demo failed: the reencryption ended before a replica could be killed during it; run it with more keys"
        );
    }
    let grep11_failed = grep11_counts.map_or(0, |(_, failed)| failed);
    if failed > 0
        || failed_idle > 0
        || grep11_failed > 0
        || verified != keys.len() as u64
        || under_old > 0
    {
        bail!(
            "the demo failed: {failed} failed requests during the rotation and {failed_idle} before it, {grep11_failed} failed GREP11 call rounds, {verified} of {} keys verified, {under_old} key versions under another master key",
            keys.len()
        );
    }
    say(
        json_output,
        "\nDone: no request failed and every key verified.",
    );
    Ok(())
}

/// Kills service replica 2 (SIGKILL) during the reencryption, then starts it again: the
/// rotation must finish and no request may fail. Returns how many replicas it killed (0 if the
/// reencryption ended before it was seen under way).
async fn kill_a_replica_during_reencryption(
    replicas: &mut Replicas,
    info: &DevInfo,
    done: &AtomicBool,
) -> Result<u64> {
    const VICTIM: usize = 1;
    let http =
        rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(&info.ca_cert))?.build()?;
    let api_key = info
        .api_keys
        .get("admin")
        .context("the dev instance has no admin API key")?;
    let token = access_token(&http, &info.endpoint, api_key).await?;
    let url = format!("{}/v1/instances/{}/rotation", info.endpoint, info.instance);
    let victim = format!("replica-{}", VICTIM + 1);
    while !done.load(Ordering::Relaxed) {
        let view: Option<Value> = match http.get(&url).bearer_auth(&token).send().await {
            Ok(response) if response.status().is_success() => response
                .json::<Value>()
                .await
                .ok()
                .map(|body| body["rotation"].clone()),
            _ => None,
        };
        // Best while it holds a slice (another replica must then take the slice over); at the
        // latest half-way through.
        let working = view.as_ref().is_some_and(|view| {
            let holds_a_slice = view["workers"]
                .as_array()
                .is_some_and(|workers| workers.iter().any(|w| w.as_str() == Some(&victim)));
            let half_done = view["done"].as_u64().unwrap_or(0) * 2
                >= view["total"].as_u64().unwrap_or(u64::MAX);
            view["phase"] == "reencrypting" && (holds_a_slice || half_done)
        });
        if working {
            replicas.kill(VICTIM)?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            replicas.restart(VICTIM).await?;
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(0)
}
