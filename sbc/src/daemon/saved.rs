//! The access realms' bindings across restarts: read back at start, saved
//! when they changed and at shutdown.

use super::*;

/// The access realms' bindings, saved across restarts (`[state]
/// bindings_file`): read back at start, written at most every 5 s when they
/// changed (off the event loop), and at shutdown.
pub(super) struct SavedBindings {
    pub(super) path: Option<std::path::PathBuf>,
    pub(super) generation: u64,
    pub(super) saved_at: Instant,
    /// The save in progress: one at a time, so an older list never lands
    /// after a newer one.
    pub(super) writing: Option<tokio::task::JoinHandle<()>>,
}

impl SavedBindings {
    pub(super) const EVERY: Duration = Duration::from_secs(5);

    pub(super) fn start(config: &Config, core: &mut Core) -> SavedBindings {
        let path = config.state.bindings_file.clone();
        if let Some(path) = &path {
            match crate::state::load(path) {
                Ok(records) => {
                    let saved = records.len();
                    let taken = core.import_bindings(now(), records);
                    info!(path = %path.display(), saved, taken, "bindings read back");
                }
                Err(e) => warn!(error = %e, "saved bindings ignored; phones register again"),
            }
        }
        SavedBindings {
            path,
            generation: core.bindings_generation(),
            saved_at: now(),
            writing: None,
        }
    }

    pub(super) fn save_if_changed(&mut self, core: &Core) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if core.bindings_generation() == self.generation
            || now().saturating_duration_since(self.saved_at) < Self::EVERY
            || self.writing.as_ref().is_some_and(|w| !w.is_finished())
        {
            return;
        }
        self.generation = core.bindings_generation();
        self.saved_at = now();
        let records = core.export_bindings(now());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::state::save(&path, &records) {
                warn!(path = %path.display(), error = %e, "bindings not saved");
            }
        }));
    }

    pub(super) async fn save_now(&mut self, core: &Core) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.await;
        }
        if let Some(path) = &self.path {
            let records = core.export_bindings(now());
            match crate::state::save(path, &records) {
                Ok(()) => info!(path = %path.display(), bindings = records.len(), "bindings saved"),
                Err(e) => warn!(path = %path.display(), error = %e, "bindings not saved"),
            }
        }
    }
}
