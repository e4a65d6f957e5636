//! What every session task shares: the running configuration, the journal, the boards
//! `status` shows, and which session holds each Telepresence session id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{unfollowed, waiting};
use crate::config::Config;
use crate::effects::journal::{Journal, JournalError};
use crate::lifecycle;
use crate::platform;
use crate::session::SessionRecord;

/// What every session task shares.
#[derive(Debug)]
pub(super) struct Ctx {
    /// The running configuration; replaced as a whole when SIGHUP reloads it.
    cfg: std::sync::RwLock<Arc<Config>>,
    pub(super) journal: Journal,
    pub(super) uid: u32,
    /// Bumped when it is worth trying an unreachable cluster again at once (a resume, a
    /// network change); waiting repairs subscribe.
    pub(super) probe: tokio::sync::watch::Sender<u64>,
    /// Repairs waiting for their cluster, for `status`.
    pub(super) board: waiting::Board,
    /// Telepresence processes passed over or followed half-blind, for `status`.
    pub(super) unfollowed: unfollowed::Board,
    /// Which session holds each Telepresence session id: an id is claimed by one session
    /// only, checked and taken in one step (filled from the journal at start).
    claims: std::sync::Mutex<HashMap<String, String>>,
    /// Team mode: each recorded session's heartbeat Lease.
    pub(super) heartbeats: super::heartbeat::Heartbeats,
}

impl Ctx {
    pub(super) fn new(cfg: Config, journal: Journal) -> Self {
        Self {
            uid: platform::current_uid(),
            journal,
            cfg: std::sync::RwLock::new(Arc::new(cfg)),
            probe: tokio::sync::watch::Sender::new(0),
            board: waiting::Board::default(),
            unfollowed: Default::default(),
            claims: Default::default(),
            heartbeats: Default::default(),
        }
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims Telepresence session `id` for the session `key`, unless another session
    /// holds it (whose key is the error).
    pub(super) fn claim(&self, id: &str, key: &str) -> Result<(), String> {
        let mut claims = self.claims();
        match claims.get(id) {
            Some(holder) if holder != key => Err(holder.clone()),
            _ => {
                claims.insert(id.to_string(), key.to_string());
                Ok(())
            }
        }
    }

    /// The session ids claimed by sessions other than `key`.
    pub(super) fn claimed_by_others(&self, key: &str) -> HashSet<String> {
        self.claims()
            .iter()
            .filter(|(_, holder)| holder.as_str() != key)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The configuration now (a session task keeps the copy it reads for one decision).
    pub(super) fn cfg(&self) -> Arc<Config> {
        self.cfg
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_cfg(&self, cfg: Config) {
        *self
            .cfg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
    }

    /// Wakes every repair that waits for its cluster.
    pub(super) fn probe_now(&self, why: &str) {
        if !self.board.is_empty() {
            // A chatty network (address refreshes, say) would fill the log at info.
            if why.contains("network") {
                debug!("{why}: trying the unreachable clusters again now");
            } else {
                info!("{why}: trying the unreachable clusters again now");
            }
        }
        self.probe.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn save(&self, rec: &SessionRecord) {
        if let Err(e) = self.journal.write(rec) {
            // The journal is the agent's memory: say so loudly, keep going in memory.
            // (Before acting on the cluster, `save_durably` is used instead.)
            warn!(session = %rec.key, "{e}");
        }
    }

    /// Takes what follows `event` (see [`lifecycle::step`]) into the record and journals it:
    /// a session out of scope is forgotten instead.
    pub(super) fn record(
        &self,
        rec: &mut SessionRecord,
        event: lifecycle::Event,
    ) -> lifecycle::Step {
        let step = lifecycle::step(rec, event);
        lifecycle::apply(rec, &step);
        if step.forget {
            let _ = self.journal.remove(&rec.key);
        } else if !step.is_nothing() {
            self.save(rec);
        }
        step
    }

    /// Writes the record and says whether it is on disk: what must precede any action.
    pub(super) fn save_durably(&self, rec: &SessionRecord) -> Result<(), JournalError> {
        self.journal.write(rec)
    }
}

/// What the daemon's unit tests share: a context in a temp dir, and a live child process.
#[cfg(test)]
pub(super) mod testing {
    use std::path::Path;
    use std::time::Duration;

    use super::Ctx;
    use crate::config::{Config, Paths};
    use crate::effects::journal::Journal;
    use crate::platform::{self, ProcessInfo};

    /// A daemon context with default settings and every path under `dir`.
    pub(in crate::daemon) fn ctx(dir: &Path) -> Ctx {
        let paths = Paths {
            config_file: dir.join("config.toml"),
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            log_dir: dir.join("logs"),
            tmp_dir: dir.join("tmp"),
        };
        let cfg = Config::resolve(Default::default(), paths).expect("defaults");
        let journal = Journal::open(&cfg.paths.state_dir).expect("journal");
        Ctx::new(cfg, journal)
    }

    /// A `sleep 30` child and its description, asked for until it is out of `execve`.
    pub(in crate::daemon) fn sleeping_child() -> (std::process::Child, ProcessInfo) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep starts");
        let info = (0..500)
            .find_map(|_| {
                platform::process_info(child.id()).ok().or_else(|| {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                })
            })
            .expect("described");
        (child, info)
    }
}
