//! Service replicas as processes on one database, for `rotor dev --replicas N` and
//! `rotor demo --replicas N`: each is `rotor server` with its own port and replica name and the
//! same configuration otherwise (the same `[store]`, the same data directory, so the same token
//! signing key). A replica can be killed (SIGKILL, as a host failure would) and started again
//! on the same port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rotor_server::Config;

/// How long a replica may take to answer `/health` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One replica process.
struct Replica {
    endpoint: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Running replicas; killed on drop.
pub struct Replicas {
    program: PathBuf,
    replicas: Vec<Replica>,
    http: reqwest::Client,
}

/// A loopback port free now.
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

impl Replicas {
    /// Starts `count` replicas of `base` (its `listen` and `replica_name` replaced), writing
    /// their configurations and logs to `dir`, and waits until each answers.
    pub async fn start(
        program: &Path,
        dir: &Path,
        base: &Config,
        count: usize,
        http: reqwest::Client,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let scheme = if base.tls.is_some() { "https" } else { "http" };
        let mut replicas = Self {
            program: program.to_owned(),
            replicas: Vec::with_capacity(count),
            http,
        };
        for number in 1..=count {
            let mut config = base.clone();
            config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            config.replica_name = Some(format!("replica-{number}"));
            let path = dir.join(format!("replica-{number}.toml"));
            rotor_util::fs::write_durable(&path, config.to_toml().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            replicas.replicas.push(Replica {
                endpoint: format!("{scheme}://{}", config.listen),
                config: path,
                log: dir.join(format!("replica-{number}.log")),
                child: None,
            });
        }
        // One after the other: the first one creates what they share (the token signing key,
        // the schema).
        for index in 0..count {
            replicas.spawn(index)?;
            replicas.wait_ready(index).await?;
        }
        Ok(replicas)
    }

    /// Each replica's base URL, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|replica| replica.endpoint.clone())
            .collect()
    }

    fn replica(&mut self, index: usize) -> Result<&mut Replica> {
        let count = self.replicas.len();
        self.replicas
            .get_mut(index)
            .with_context(|| format!("there are {count} replicas; no replica {}", index + 1))
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let program = self.program.clone();
        let replica = self.replica(index)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .with_context(|| format!("cannot open {}", replica.log.display()))?;
        let child = Command::new(&program)
            .arg("server")
            .arg("--config")
            .arg(&replica.config)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        replica.child = Some(child);
        Ok(())
    }

    /// Waits until replica `index` answers `/health`.
    pub async fn wait_ready(&mut self, index: usize) -> Result<()> {
        let http = self.http.clone();
        let started = Instant::now();
        loop {
            let replica = self.replica(index)?;
            let url = format!("{}/health", replica.endpoint);
            if let Some(child) = replica.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "service replica {} exited ({status}) at start: {}",
                    index + 1,
                    last_lines(&replica.log)
                );
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "service replica {} did not answer within {} s: {}",
                    index + 1,
                    START_TIMEOUT.as_secs(),
                    last_lines(&replica.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills replica `index` with SIGKILL, as a failing host would stop it.
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let replica = self.replica(index)?;
        if let Some(mut child) = replica.child.take() {
            child.kill().context("cannot kill the replica")?;
            child.wait().context("cannot reap the replica")?;
        }
        Ok(())
    }

    /// Starts replica `index` again on its port and waits until it answers.
    pub async fn restart(&mut self, index: usize) -> Result<()> {
        self.kill(index)?;
        self.spawn(index)?;
        self.wait_ready(index).await
    }
}

/// The end of a replica's log, for an error message (the dev directory may be gone by the
/// time someone reads it).
fn last_lines(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(mut child) = replica.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
