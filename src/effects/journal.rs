//! The write-ahead journal: one JSON file per session under `<state dir>/sessions/`, each
//! written atomically (temporary file, fsync, rename, fsync of the directory) before anything
//! that depends on it is done.
//!
//! # Guarantees
//! - A crash at any instant leaves each record either as it was or as it was written,
//!   never torn: the rename is the commit point.
//! - A record that cannot be decoded is moved to `<state dir>/quarantine/` and reported; the
//!   others keep working.
//! - A record written by a newer schema is refused, not misread, and left in place.
//! - Reading a record is a pure function of its bytes and file name ([`decode`]), which
//!   never panics and returns either the record or a [`DecodeError`]; the generated-input
//!   tests in `tests/fuzz/journal.rs` hold it to that.
//!
//! # Caveats
//! Files are 0600 in a 0700 directory; the journal trusts its own directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::session::{SCHEMA, SessionRecord};

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal directory could not be created.
    #[error("creating the journal directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record could not be written durably.
    #[error("writing the journal record {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The journal directory could not be listed.
    #[error("listing the journal directory {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("encoding the journal record for session {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why the bytes of a record file are not a record this agent can use.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Written by a newer agent: leave it for that agent.
    #[error("schema {found} is newer than this agent's {SCHEMA}")]
    NewerSchema {
        /// The record's schema number.
        found: u64,
    },
    /// Not JSON, or not the shape of a [`SessionRecord`].
    #[error("{source}")]
    Invalid {
        #[source]
        source: serde_json::Error,
    },
    /// A valid record stored under another session's file name.
    #[error("its key {key} does not match its file name")]
    KeyMismatch {
        /// The key inside the record.
        key: String,
    },
}

/// The bytes [`Journal::write`] stores for `rec`.
///
/// # Errors
/// [`JournalError::Encode`] when the record holds something JSON cannot (a path that is
/// not UTF-8).
pub fn encode(rec: &SessionRecord) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec_pretty(rec).map_err(|source| JournalError::Encode {
        key: rec.key.clone(),
        source,
    })
}

/// Reads a record from the bytes of the file `<file_stem>.json`.
///
/// # Guarantees
/// Never panics. A record comes back only when the bytes are a whole record of this schema
/// or an older one whose key is `file_stem`: a file cut short is an error, never a shorter
/// record. (A byte changed inside a value, such as one digit of a pid, can still give a
/// valid record; nothing short of a checksum would tell.)
///
/// # Errors
/// [`DecodeError::NewerSchema`] when the bytes are JSON whose `schema` is above
/// [`SCHEMA`], whatever their shape; [`DecodeError::Invalid`] or
/// [`DecodeError::KeyMismatch`] for a record to quarantine.
pub fn decode(bytes: &[u8], file_stem: &str) -> Result<SessionRecord, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Invalid { source })?;
    if let Some(found) = value.get("schema").and_then(serde_json::Value::as_u64)
        && found > u64::from(SCHEMA)
    {
        return Err(DecodeError::NewerSchema { found });
    }
    let rec = serde_json::from_value::<SessionRecord>(value)
        .map_err(|source| DecodeError::Invalid { source })?;
    if rec.key != file_stem {
        return Err(DecodeError::KeyMismatch { key: rec.key });
    }
    Ok(rec)
}

/// A problem with one record found while loading; the record was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadProblem {
    /// The file was not a valid record; it was moved to `moved_to`.
    Quarantined {
        path: PathBuf,
        moved_to: PathBuf,
        why: String,
    },
    /// The record was written by a newer agent (schema `found`); it was left in place.
    NewerSchema { path: PathBuf, found: u64 },
    /// The file could not be read.
    Unreadable { path: PathBuf, why: String },
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadProblem::Quarantined {
                path,
                moved_to,
                why,
            } => write!(
                f,
                "journal record {} is corrupt ({why}); moved to {}",
                path.display(),
                moved_to.display()
            ),
            LoadProblem::NewerSchema { path, found } => write!(
                f,
                "journal record {} has schema {found}, newer than this agent's {SCHEMA}; upgrade telepolice-agent to read it (left untouched)",
                path.display()
            ),
            LoadProblem::Unreadable { path, why } => {
                write!(f, "journal record {} cannot be read: {why}", path.display())
            }
        }
    }
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    quarantine: PathBuf,
}

fn private_dir(path: &Path) -> Result<(), JournalError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(path).map_err(|source| JournalError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

impl Journal {
    /// Opens (creating if needed) the journal under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = state_dir.join("sessions");
        let quarantine = state_dir.join("quarantine");
        private_dir(&dir)?;
        // Make the new directory's entry durable too.
        if let Ok(parent) = File::open(state_dir) {
            let _ = parent.sync_all();
        }
        Ok(Self { dir, quarantine })
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Writes `rec` durably. Returns once the record survives a power loss.
    pub fn write(&self, rec: &SessionRecord) -> Result<(), JournalError> {
        let bytes = encode(rec)?;
        let path = self.path_of(&rec.key);
        let tmp = self.dir.join(format!(".{}.json.tmp", rec.key));
        let err = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// Loads every record. Records that cannot be used are reported, never dropped silently:
    /// corrupt ones are quarantined, newer-schema ones left in place.
    pub fn load_all(&self) -> Result<(Vec<SessionRecord>, Vec<LoadProblem>), JournalError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| JournalError::List {
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        let mut problems = Vec::new();
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| match e {
                Ok(e) => Some(e),
                Err(e) => {
                    problems.push(LoadProblem::Unreadable {
                        path: self.dir.clone(),
                        why: format!("a directory entry could not be read: {e}"),
                    });
                    None
                }
            })
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            match self.load_one(&path) {
                Ok(r) => records.push(r),
                Err(p) => problems.push(p),
            }
        }
        Ok((records, problems))
    }

    fn load_one(&self, path: &Path) -> Result<SessionRecord, LoadProblem> {
        let bytes = fs::read(path).map_err(|e| LoadProblem::Unreadable {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        match decode(&bytes, &stem) {
            Ok(rec) => Ok(rec),
            Err(DecodeError::NewerSchema { found }) => Err(LoadProblem::NewerSchema {
                path: path.to_path_buf(),
                found,
            }),
            Err(e) => Err(self.quarantine(path, e.to_string())),
        }
    }

    fn quarantine(&self, path: &Path, why: String) -> LoadProblem {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Nanoseconds and a counter: two corrupt files of the same name never collide.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut moved_to = self.quarantine.join(format!(
            "{}-{n}-{name}",
            jiff::Timestamp::now().as_nanosecond()
        ));
        while moved_to.exists() {
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            moved_to = self.quarantine.join(format!(
                "{}-{n}-{name}",
                jiff::Timestamp::now().as_nanosecond()
            ));
        }
        let moved = private_dir(&self.quarantine).is_ok() && fs::rename(path, &moved_to).is_ok();
        if moved {
            LoadProblem::Quarantined {
                path: path.to_path_buf(),
                moved_to,
                why,
            }
        } else {
            LoadProblem::Unreadable {
                path: path.to_path_buf(),
                why: format!(
                    "{why} (and it could not be moved to {})",
                    self.quarantine.display()
                ),
            }
        }
    }

    /// A warning about the records moved to quarantine so far, if there are any (they stay
    /// there until a person looks at them and removes them).
    pub fn quarantine_warning(&self) -> Option<String> {
        let n = fs::read_dir(&self.quarantine)
            .ok()?
            .filter_map(Result::ok)
            .count();
        (n > 0).then(|| {
            format!(
                "{n} corrupt journal record(s) were moved to {}; inspect them, then delete them",
                self.quarantine.display()
            )
        })
    }

    /// Removes the record of `key` (pruning ended sessions).
    pub fn remove(&self, key: &str) -> Result<(), JournalError> {
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Write { path, source }),
        }
    }
}

#[cfg(test)]
mod tests;
