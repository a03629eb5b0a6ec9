//! State kept across restarts: the access realms' bindings, in one JSON
//! file (`[state] bindings_file`).
//!
//! Owns: the file's format and how it is written (a temporary file beside
//! it, readable by the owner only as it holds the phones' last credentials,
//! then renamed over it, so a crash mid-write leaves the previous one).
//! May not: decide what is saved (the call core exports and imports
//! [`BindingRecord`]s) or when (the daemon saves when they changed).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::b2bua::BindingRecord;

/// Why saved bindings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The file is not a list of bindings.
    #[error("{path} is not a saved list of bindings: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

/// The bindings saved in `path`; none when there is no such file yet.
pub fn load(path: &Path) -> Result<Vec<BindingRecord>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|source| StateError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Replaces `path` with `records`, atomically.
pub fn save(path: &Path, records: &[BindingRecord]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    serde_json::to_writer(&mut file, records).map_err(io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &str) -> BindingRecord {
        BindingRecord {
            realm: "access".into(),
            listener: "127.0.0.6:5060".parse().expect("addr"),
            source: "203.0.113.7:5062".parse().expect("addr"),
            aor: "sip:100@pbx.example".into(),
            contact: "sip:100@192.168.1.20:5062".into(),
            token: token.into(),
            expires_secs: 100,
            registrar_secs: 3_000,
            call_id: "c".into(),
            from_tag: "t".into(),
            cseq: 4,
            credentials: vec![("Authorization".into(), "Digest username=\"100\"".into())],
        }
    }

    #[test]
    fn saved_bindings_read_back_and_a_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("sbc-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bindings.json");
        assert_eq!(load(&path).expect("no file yet"), Vec::new());
        let records = vec![
            record("reg-0123456789abcdef"),
            record("reg-fedcba9876543210"),
        ];
        save(&path, &records).expect("saved");
        assert_eq!(load(&path).expect("read back"), records);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "credentials are the owner's only");
        std::fs::write(&path, b"{not json").expect("write");
        let error = load(&path).expect_err("garbage");
        assert!(error.to_string().contains("bindings.json"), "{error}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
