//! `rotor bench`: the Key Protect wrap, unwrap and rewrap paths driven by N connections for a
//! while, with the request rate and latency percentiles, and optionally the same drive of an
//! in-process yardstick in the same run.
//!
//! The yardstick is the least a key service can do per request: an HTTPS server on the same TLS
//! and HTTP stack as the service (`rotor_tls::serve`), one JSON body with a base64 ciphertext
//! in, one AES-256-GCM operation on a 32-byte DEK under a key in memory, one JSON answer out; no
//! authentication, no storage, no crypto unit. The ratio of the two rates says how much of the
//! machine the service's own work (tokens, key metadata, the unit hop) takes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rotor_crypto::Secret32;
use rotor_server::dev::DevInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::args::{BenchArgs, BenchOp};
use crate::load::{access_token, percentile_ms};
use crate::output::print_json;

/// Requests in the first second are not counted: connections and caches warm up.
const WARM_UP: Duration = Duration::from_secs(1);

/// Where the requests go and how they are authenticated.
struct Target {
    http: reqwest::Client,
    endpoint: String,
    instance: Uuid,
    token: String,
}

/// One measured drive.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// Requests answered 200 within the measured time.
    pub requests: u64,
    /// Requests that failed (any other answer, or no answer).
    pub failures: u64,
    /// Measured time in seconds.
    pub seconds: f64,
    /// `requests / seconds`.
    pub requests_per_second: f64,
    /// Median latency of the successful requests.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// The request of one operation: a path and a JSON body serialized once, the same for every
/// call.
struct Call {
    path: String,
    body: axum::body::Bytes,
}

/// Runs `rotor bench`.
pub async fn bench(args: BenchArgs, json_output: bool) -> Result<()> {
    let connections = usize::from(args.connections);
    let duration = Duration::from_secs(args.seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let target = Target::from_info(&args.info_file, connections).await?;
    let call = target.prepare(args.op).await?;
    let service = drive(&target, &call, connections, duration).await;
    let baseline = if args.baseline {
        let yardstick = Yardstick::start()?;
        let target = yardstick.target(connections)?;
        let call = target.prepare_yardstick(args.op).await?;
        let measured = drive(&target, &call, connections, duration).await;
        yardstick.stop();
        Some(measured)
    } else {
        None
    };
    let ratio = baseline
        .as_ref()
        .filter(|b| b.requests_per_second > 0.0)
        .map(|b| service.requests_per_second / b.requests_per_second);
    let shared =
        format!("the load generator, the service and its units share this machine's {cores} cores");
    if json_output {
        print_json(&json!({
            "op": args.op.name(),
            "connections": args.connections,
            "cores": cores,
            "service": service,
            "baseline": baseline,
            "ratio_to_baseline": ratio,
            "note": shared,
        }));
        return Ok(());
    }
    println!(
        "{} with {} connections for {} s ({shared}):",
        args.op.name(),
        args.connections,
        args.seconds
    );
    print_row("rotor", &service);
    if let Some(baseline) = &baseline {
        print_row("yardstick", baseline);
    }
    if let Some(ratio) = ratio {
        println!("rotor ÷ yardstick: {ratio:.2}");
    }
    if service.failures > 0 {
        bail!("{} requests failed", service.failures);
    }
    Ok(())
}

fn print_row(what: &str, m: &Measured) {
    println!(
        "  {what:<10} {:>9.0} requests/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({} requests, {} failed)",
        m.requests_per_second, m.p50_ms, m.p99_ms, m.p999_ms, m.requests, m.failures
    );
}

impl Target {
    /// The service `rotor dev --info-file` described, as its writer API key.
    async fn from_info(path: &Path, connections: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let info: DevInfo = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not the info file of 'rotor dev --info-file'",
                path.display()
            )
        })?;
        let http = client(&info.ca_cert, connections)?;
        let api_key = info
            .api_keys
            .get("writer")
            .context("the dev instance has no writer API key")?;
        let token = access_token(&http, &info.endpoint, api_key).await?;
        Ok(Self {
            http,
            endpoint: info.endpoint,
            instance: info.instance,
            token,
        })
    }

    /// Creates a root key and, for unwrap and rewrap, a DEK wrapped under it.
    async fn prepare(&self, op: BenchOp) -> Result<Call> {
        let create = json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{
                "type": "application/vnd.ibm.kms.key+json",
                "name": format!("bench-{}", Uuid::new_v4()),
                "extractable": false,
            }],
        });
        let created = self.post("/api/v2/keys", &create).await?;
        let id = created["resources"][0]["id"]
            .as_str()
            .context("the service created no key")?
            .to_owned();
        let mut dek = Zeroizing::new([0u8; 32]);
        rotor_crypto::fill_random(dek.as_mut());
        let plaintext = json!({ "plaintext": B64.encode(dek.as_ref()) });
        let body = match op {
            BenchOp::Wrap => plaintext,
            BenchOp::Unwrap | BenchOp::Rewrap => {
                let wrapped = self
                    .post(&format!("/api/v2/keys/{id}/actions/wrap"), &plaintext)
                    .await?;
                let ciphertext = wrapped["ciphertext"]
                    .as_str()
                    .context("the service wrapped nothing")?;
                json!({ "ciphertext": ciphertext })
            }
        };
        Ok(Call {
            path: format!("/api/v2/keys/{id}/actions/{}", op.name()),
            body: serde_json::to_vec(&body)?.into(),
        })
    }

    /// The same request shapes for the yardstick, its ciphertext made by its own wrap.
    async fn prepare_yardstick(&self, op: BenchOp) -> Result<Call> {
        let mut dek = Zeroizing::new([0u8; 32]);
        rotor_crypto::fill_random(dek.as_mut());
        let plaintext = json!({ "plaintext": B64.encode(dek.as_ref()) });
        let body = match op {
            BenchOp::Wrap => plaintext,
            BenchOp::Unwrap | BenchOp::Rewrap => {
                let wrapped = self.post("/wrap", &plaintext).await?;
                json!({ "ciphertext": wrapped["ciphertext"] })
            }
        };
        Ok(Call {
            path: format!("/{}", op.name()),
            body: serde_json::to_vec(&body)?.into(),
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .request(path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path} answered {status}: {answer}");
        }
        Ok(answer)
    }

    fn request(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.endpoint))
            .bearer_auth(&self.token)
            .header("bluemix-instance", self.instance.to_string())
    }
}

/// An HTTP/1.1 client (reqwest is built without HTTP/2, so each connection carries one
/// request at a time, as a load generator's should) keeping up to `connections` connections,
/// trusting `ca`.
fn client(ca: &Path, connections: usize) -> Result<reqwest::Client> {
    Ok(
        rotor_tls::config::http_client(&rotor_tls::ClientTls::trusting(ca))?
            .pool_max_idle_per_host(connections)
            .build()?,
    )
}

/// Sends `call` from `connections` concurrent clients, each waiting for its answer before the
/// next request, for the warm-up and then `duration`; measures what completed after the
/// warm-up.
async fn drive(target: &Target, call: &Call, connections: usize, duration: Duration) -> Measured {
    let start = Instant::now();
    let measure_from = start + WARM_UP;
    let end = measure_from + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let request = target
            .request(&call.path)
            .header("content-type", "application/json");
        let body = call.body.clone();
        clients.spawn(async move {
            let mut latencies_us: Vec<u32> = Vec::new();
            let mut failures = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let Some(request) = request.try_clone() else {
                    failures += 1;
                    break;
                };
                let ok = match request.body(body.clone()).send().await {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.is_ok() && status == StatusCode::OK
                    }
                    Err(_) => false,
                };
                if sent < measure_from {
                    continue;
                }
                if ok {
                    let micros = sent.elapsed().as_micros();
                    latencies_us.push(u32::try_from(micros).unwrap_or(u32::MAX));
                } else {
                    failures += 1;
                }
            }
            (latencies_us, failures)
        });
    }
    let mut latencies_us = Vec::new();
    let mut failures = 0;
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok((mine, failed)) => {
                latencies_us.extend(mine);
                failures += failed;
            }
            Err(_) => failures += 1,
        }
    }
    let seconds = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    summarize(latencies_us, failures, seconds)
}

/// The rate and percentiles of the successful requests' latencies (microseconds).
fn summarize(mut latencies_us: Vec<u32>, failures: u64, seconds: f64) -> Measured {
    latencies_us.sort_unstable();
    let requests = latencies_us.len() as u64;
    Measured {
        requests,
        failures,
        seconds,
        requests_per_second: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_ms: percentile_ms(&latencies_us, 0.50),
        p99_ms: percentile_ms(&latencies_us, 0.99),
        p999_ms: percentile_ms(&latencies_us, 0.999),
    }
}

/// The in-process yardstick: its own runtime on its own threads (as a separate service
/// process would have), serving HTTPS on loopback until stopped.
struct Yardstick {
    url: String,
    ca_cert: PathBuf,
    dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Deserialize)]
struct CipherBody {
    ciphertext: String,
}

#[derive(Deserialize)]
struct PlainBody {
    plaintext: String,
}

impl Yardstick {
    fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("rotor-bench-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut authority = rotor_tls::pki::Authority::create(&dir.join("ca"), "rotor bench")?;
        let issued = authority.issue(
            &rotor_tls::pki::Subject {
                role: rotor_tls::pki::Role::Api,
                dns_names: Vec::new(),
                ip_addresses: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            },
            1,
        )?;
        let (cert, key) = issued.write(&dir.join("yardstick"))?;
        let tls = rotor_tls::config::server_config(&cert, &key, None)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("https://{}", listener.local_addr()?);
        let key = Arc::new(Secret32::random());
        let router = Router::new()
            .route("/wrap", post(wrap))
            .route("/unwrap", post(unwrap))
            .route("/rewrap", post(rewrap))
            .with_state(key);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                tokio::select! {
                    () = rotor_tls::serve::serve(
                        listener,
                        rotor_tls::serve::Transport::Tls(tls),
                        router,
                        rotor_tls::serve::Limits::SERVICE,
                    ) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self {
            url,
            ca_cert: authority.ca_cert_path(),
            dir,
            stop,
            thread,
        })
    }

    fn target(&self, connections: usize) -> Result<Target> {
        Ok(Target {
            http: client(&self.ca_cert, connections)?,
            endpoint: self.url.clone(),
            instance: Uuid::nil(),
            token: "yardstick".to_owned(),
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn open(key: &Secret32, ciphertext: &str) -> Result<Zeroizing<Vec<u8>>, StatusCode> {
    let sealed = B64
        .decode(ciphertext)
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    rotor_crypto::open_aes256gcm(key, b"", &sealed).map_err(|_| StatusCode::BAD_REQUEST)
}

async fn wrap(
    State(key): State<Arc<Secret32>>,
    Json(body): Json<PlainBody>,
) -> Result<Json<Value>, StatusCode> {
    let plain = Zeroizing::new(
        B64.decode(&body.plaintext)
            .map_err(|_| StatusCode::BAD_REQUEST)?,
    );
    let sealed = rotor_crypto::seal_aes256gcm(&key, b"", &plain);
    Ok(Json(json!({ "ciphertext": B64.encode(sealed) })))
}

async fn unwrap(
    State(key): State<Arc<Secret32>>,
    Json(body): Json<CipherBody>,
) -> Result<Json<Value>, StatusCode> {
    let plain = open(&key, &body.ciphertext)?;
    Ok(Json(json!({ "plaintext": B64.encode(plain.as_slice()) })))
}

async fn rewrap(
    State(key): State<Arc<Secret32>>,
    Json(body): Json<CipherBody>,
) -> Result<Json<Value>, StatusCode> {
    let plain = open(&key, &body.ciphertext)?;
    let sealed = rotor_crypto::seal_aes256gcm(&key, b"", &plain);
    Ok(Json(json!({ "ciphertext": B64.encode(sealed) })))
}

impl BenchOp {
    /// The operation's name in Key Protect's action paths.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wrap => "wrap",
            Self::Unwrap => "unwrap",
            Self::Rewrap => "rewrap",
        }
    }
}
