//! A throwaway PostgreSQL cluster for development and tests, made from the system's binaries:
//! `initdb` into a directory, `postgres` listening on 127.0.0.1 at a free port (and on a Unix
//! socket in the directory), durable as a real one (`fsync` on). When the process is root, the
//! cluster runs as the `postgres` user (PostgreSQL refuses to run as root): the directory is
//! given to that user, and the directories above it get search permission for others.

use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The superuser the cluster is made with.
const SUPERUSER: &str = "rotor";
/// The system user a root process runs the cluster as.
const SYSTEM_USER: &str = "postgres";
/// Longest Unix socket directory PostgreSQL can bind in (the socket path is at most 107 bytes).
const MAX_SOCKET_DIR: usize = 80;
/// The settings file of the cluster's data directory that each start writes.
const SETTINGS: &str = "rotor.conf";
/// How long a start may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a throwaway cluster could not be made, started or stopped.
#[derive(Debug)]
pub struct ClusterError(String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

fn fail(why: impl Into<String>) -> ClusterError {
    ClusterError(why.into())
}

/// A running throwaway cluster; stopped when dropped.
#[derive(Debug)]
pub struct TempCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Whether commands run as [`SYSTEM_USER`] (this process is root).
    as_system_user: bool,
    running: bool,
}

impl TempCluster {
    /// Starts the cluster in `dir`, making it first if `dir` holds none (`dir` is created).
    pub fn start(dir: &Path) -> Result<Self, ClusterError> {
        let bin = binaries()?;
        let as_system_user = is_root()?;
        std::fs::create_dir_all(dir)
            .map_err(|err| fail(format!("cannot create {}: {err}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|err| fail(format!("cannot resolve {}: {err}", dir.display())))?;
        if as_system_user {
            give_to_system_user(&dir)?;
        }
        let port = free_port()?;
        let cluster = Self {
            bin,
            dir,
            port,
            as_system_user,
            running: false,
        };
        if !cluster.data().join("PG_VERSION").exists() {
            cluster.init()?;
        }
        cluster.write_settings()?;
        if cluster.data().join("postmaster.pid").exists() {
            // A server of an earlier run that was killed before it could stop its cluster (a
            // SIGKILL of `rotor dev`) may still hold the directory: stop it, keeping its
            // committed work. If none runs, pg_ctl says so, and that is fine.
            let _ = cluster
                .command("pg_ctl")
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(cluster.data())
                .output();
        }
        let mut cluster = cluster;
        cluster.launch()?;
        Ok(cluster)
    }

    /// The URL of the cluster's `postgres` database (TCP on 127.0.0.1, trusted, no password).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of the database `name` of the cluster.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, ClusterError> {
        let output = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                name,
            ])
            .output()
            .map_err(|err| fail(format!("cannot run createdb: {err}")))?;
        checked(&output, "createdb")?;
        Ok(self.url_of(name))
    }

    /// Stops the cluster (fast shutdown: sessions are ended, committed work is kept).
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if !self.running {
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(self.data())
            .output()
            .map_err(|err| fail(format!("cannot run pg_ctl: {err}")))?;
        checked(&output, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and starts the cluster again on the
    /// same directory and port; it recovers from its write-ahead log.
    pub fn kill_and_restart(&mut self) -> Result<(), ClusterError> {
        let pid = self.postmaster_pid()?;
        let output = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output()
            .map_err(|err| fail(format!("cannot run kill: {err}")))?;
        checked(&output, "kill")?;
        self.running = false;
        let started = Instant::now();
        // The killed postmaster's backends notice its death and exit; until the last one has,
        // its shared memory is still in use and a new postmaster refuses to start.
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(err) if started.elapsed() > START_TIMEOUT => return Err(err),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `program` of the cluster's binaries, run as the system user when this process is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_system_user {
            let mut command = Command::new("runuser");
            command.args(["-u", SYSTEM_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir);
        command
    }

    fn init(&self) -> Result<(), ClusterError> {
        let output = self
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(self.data())
            .output()
            .map_err(|err| fail(format!("cannot run initdb: {err}")))?;
        checked(&output, "initdb")?;
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|err| fail(format!("cannot read {}: {err}", conf.display())))?;
        text.push_str(&format!("\ninclude_if_exists = '{SETTINGS}'\n"));
        // Rewriting in place keeps the file's owner.
        std::fs::write(&conf, text)
            .map_err(|err| fail(format!("cannot write {}: {err}", conf.display())))
    }

    /// This start's settings (the port changes from one start to the next).
    fn write_settings(&self) -> Result<(), ClusterError> {
        let socket_dir = self.dir.to_string_lossy();
        let socket_dir = if socket_dir.len() <= MAX_SOCKET_DIR {
            socket_dir.replace('\'', "''")
        } else {
            String::new()
        };
        let settings = format!(
            "# rotor's throwaway cluster, rewritten at each start\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 200\n\
             shared_buffers = 256MB\n\
             max_wal_size = 4GB\n",
            self.port
        );
        let path = self.data().join(SETTINGS);
        std::fs::write(&path, settings)
            .map_err(|err| fail(format!("cannot write {}: {err}", path.display())))?;
        if self.as_system_user {
            let (uid, gid) = system_user()?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|err| {
                fail(format!(
                    "cannot give {} to {SYSTEM_USER}: {err}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), ClusterError> {
        let output = self
            .command("pg_ctl")
            .args([
                "start",
                "-w",
                "-t",
                &START_TIMEOUT.as_secs().to_string(),
                "-D",
            ])
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .output()
            .map_err(|err| fail(format!("cannot run pg_ctl: {err}")))?;
        if let Err(err) = checked(&output, "pg_ctl start") {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(fail(format!(
                "{err}; the server log ends with: {}",
                tail.join(" | ")
            )));
        }
        self.running = true;
        Ok(())
    }

    fn postmaster_pid(&self) -> Result<u32, ClusterError> {
        let path = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .map_err(|err| fail(format!("cannot read {}: {err}", path.display())))?;
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| fail(format!("{} names no process", path.display())))
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if self.stop().is_err()
            && let Ok(pid) = self.postmaster_pid()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output();
        }
    }
}

fn checked(output: &Output, what: &str) -> Result<(), ClusterError> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(fail(format!(
        "{what} failed ({}): {}",
        output.status,
        stderr.trim()
    )))
}

/// The directory of PostgreSQL's server binaries: `$ROTOR_PG_BIN`, `pg_config --bindir`, or the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> Result<PathBuf, ClusterError> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("ROTOR_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(fail(format!(
                "ROTOR_PG_BIN={} holds no initdb and pg_ctl",
                dir.display()
            )))
        };
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        fail("PostgreSQL binaries not found; install the postgresql package or set ROTOR_PG_BIN")
    })
}

fn is_root() -> Result<bool, ClusterError> {
    std::fs::metadata("/proc/self")
        .map(|meta| meta.uid() == 0)
        .map_err(|err| fail(format!("cannot tell which user this process is: {err}")))
}

/// The uid and gid of [`SYSTEM_USER`].
fn system_user() -> Result<(u32, u32), ClusterError> {
    let id = |flag: &str| -> Result<u32, ClusterError> {
        let output = Command::new("id")
            .args([flag, SYSTEM_USER])
            .output()
            .map_err(|err| fail(format!("cannot run id: {err}")))?;
        checked(&output, "id")
            .map_err(|_| {
                fail(format!(
                    "running PostgreSQL as root needs the '{SYSTEM_USER}' user, which does not exist; install the postgresql package"
                ))
            })?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|err| fail(format!("id {flag} {SYSTEM_USER}: {err}")))
    };
    Ok((id("-u")?, id("-g")?))
}

/// Gives `dir` to the system user and lets it reach `dir` through the directories above.
fn give_to_system_user(dir: &Path) -> Result<(), ClusterError> {
    let (uid, gid) = system_user()?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|err| {
        fail(format!(
            "cannot give {} to {SYSTEM_USER}: {err}",
            dir.display()
        ))
    })?;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor)
            .map_err(|err| fail(format!("cannot read {}: {err}", ancestor.display())))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
                .map_err(|err| {
                    fail(format!(
                        "cannot let {SYSTEM_USER} reach {}: {err}",
                        ancestor.display()
                    ))
                })?;
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16, ClusterError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| fail(format!("cannot find a free port: {err}")))
}
