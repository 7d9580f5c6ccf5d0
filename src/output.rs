//! The one way the tool writes a file: a regular file (or a new one) atomically, through a
//! temporary file beside it renamed into place, so a crash or a full disk leaves the old file
//! whole; anything else (a device such as /dev/stdout, a pipe) in place; a symlink's target,
//! never the link. Temporary files are named `.siamese-<pid>-<n>.tmp`, so they cannot take a
//! user's name, and are removed on every exit path the process sees (errors, SIGINT, SIGTERM).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Temporary files being written now, and the lock files of run folders: what the signal
/// handler removes.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Prefix and suffix of every temporary file the tool makes.
pub const TEMP_PREFIX: &str = ".siamese-";
pub const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` as the module docs say.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let (target, system) = resolve(path).map_err(|e| Error::io(path, e))?;
    // `metadata` follows links as opening does, the kernel's own (/proc/self/fd/1 → a pipe) too.
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::io(path, std::io::Error::other("is a directory"))),
        Ok(m) if !m.is_file() || system => in_place(path, bytes).map_err(|e| Error::io(path, e)),
        _ => atomically(&target, bytes).map_err(|e| Error::io(path, e)),
    }
}

/// Where writing `path` should land: the final target of its chain of symlinks (or `path`),
/// and whether the chain is the system's (through /dev or /proc, as /dev/stdout is), whose
/// target is an open file to write into, not a name to replace.
fn resolve(path: &Path) -> std::io::Result<(PathBuf, bool)> {
    let mut path = path.to_path_buf();
    let mut system = false;
    for _ in 0..40 {
        system |= path.starts_with("/dev") || path.starts_with("/proc");
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok((path, system)),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

fn in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(bytes)?;
    f.flush()
}

fn atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (tmp, mut file) = temp_file(dir)?;
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    forget(&tmp);
    result
}

/// A new temporary file in `dir`, registered for removal on a signal.
pub fn temp_file(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}{TEMP_SUFFIX}", std::process::id()));
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => {
                live.insert(tmp.clone());
                return Ok((tmp, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Takes a file off the signal handler's list (renamed or removed).
pub fn forget(tmp: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(tmp);
}

/// Has the signal handler remove `path` too (a run folder's lock file), until [`forget`].
pub fn remove_on_signal(path: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_path_buf());
}

/// Removes the temporary files being written now; for the signal handler, before it exits.
pub fn remove_temp_files() {
    for tmp in LIVE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = std::fs::remove_file(tmp);
    }
}

/// Removes the temporary files in `dir` of processes that are gone (killed while writing).
/// Where this system cannot tell (no /proc), it leaves them.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(TEMP_PREFIX).filter(|_| name.ends_with(TEMP_SUFFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let proc = Path::new("/proc");
        if pid != std::process::id() && proc.join("self").exists() && !proc.join(pid.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
