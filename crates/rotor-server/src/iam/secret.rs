//! The key that signs tokens, kept in a file so tokens survive a restart.

use super::*;

fn secret_error(path: &Path, problem: impl Into<String>) -> IamError {
    IamError::SecretFile {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Reads the 32-byte key that signs tokens from `path`, or creates it (mode 0600, through a
/// temporary file linked into place, so that a crash or a concurrent start never leaves a partial
/// key). A file of another length is refused.
pub fn load_or_create_secret(path: &Path) -> Result<Secret32, IamError> {
    if let Some(secret) = read_secret(path)? {
        return Ok(secret);
    }
    create_secret(path)
}

fn read_secret(path: &Path) -> Result<Option<Secret32>, IamError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(secret_error(path, format!("cannot be read: {err}"))),
    };
    let metadata = file
        .metadata()
        .map_err(|err| secret_error(path, format!("cannot be read: {err}")))?;
    if !metadata.is_file() {
        return Err(secret_error(path, "is not a regular file"));
    }
    if metadata.len() != SECRET_LEN as u64 {
        return Err(secret_error(
            path,
            format!(
                "holds {} bytes instead of {SECRET_LEN}, so it is not a rotor IAM key file; \
                 remove it to create a new key (tokens issued under the old key then stop \
                 verifying)",
                metadata.len()
            ),
        ));
    }
    if metadata.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the IAM token signing key file is readable by other users; restrict it to mode 0600"
        );
    }
    let mut bytes = [0u8; SECRET_LEN];
    file.read_exact(&mut bytes)
        .map_err(|err| secret_error(path, format!("cannot be read: {err}")))?;
    let secret = Secret32::from_bytes(bytes);
    bytes.fill(0);
    Ok(Some(secret))
}

fn create_secret(path: &Path) -> Result<Secret32, IamError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| secret_error(path, "is not a file path"))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        hex::encode(suffix)
    ));

    let secret = Secret32::random();
    let placed = write_new(&tmp, secret.expose()).and_then(|()| link_into_place(&tmp, path));
    // The temporary name is gone already when the file was renamed into place.
    let _ = fs::remove_file(&tmp);
    match placed {
        Ok(true) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|err| secret_error(path, format!("cannot sync its directory: {err}")))?;
            tracing::info!(path = %path.display(), "created the IAM token signing key");
            Ok(secret)
        }
        // Another process created the file first: use its key.
        Ok(false) => read_secret(path)?
            .ok_or_else(|| secret_error(path, "disappeared while it was being created")),
        Err(err) => Err(secret_error(path, format!("cannot be created: {err}"))),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives the complete temporary file its final name unless that exists already. Returns whether
/// the file was placed.
fn link_into_place(tmp: &Path, path: &Path) -> io::Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: a rename, which cannot detect a concurrent creator.
        Err(_) => fs::rename(tmp, path).map(|()| true),
    }
}
