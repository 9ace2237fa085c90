//! The file credential store: one JSON file, the default on a single machine.
//!
//! Every write takes an exclusive lock on `FILE.lock` (an OS file lock, so registrations in
//! several processes sharing the file serialize too), re-reads the file, applies the change,
//! writes a temporary file beside it, fsyncs it and renames it over the old one: a crash leaves
//! either the old or the new file, never half of one. Reads come from the in-memory index,
//! which [`FileStore::reload_if_changed`] refreshes when another process wrote the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::store::{Contents, CredentialStore, Index, StoreError, StoredCredential};

pub struct FileStore {
    path: PathBuf,
    index: Index,
    /// Serializes writers inside this process (the file lock covers other processes) and
    /// remembers the file's modification time as last seen.
    writer: Mutex<Option<SystemTime>>,
}

impl FileStore {
    /// Opens (or starts) the store at `path`; its directory must exist.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Fail at startup, not at the first registration, when the file cannot be written.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(io(format!("directory {} does not exist", dir.display())));
        }
        let store = Self {
            path: path.to_owned(),
            index: Index::default(),
            writer: Mutex::new(None),
        };
        let contents = store.read()?;
        store.index.replace(&contents);
        *store.writer.lock().unwrap_or_else(|p| p.into_inner()) = store.modified();
        Ok(store)
    }

    /// Re-reads the file when another process changed it. Returns whether it did.
    pub fn reload_if_changed(&self) -> Result<bool, StoreError> {
        let mut seen = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.modified();
        if now == *seen {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let contents = self.read()?;
        self.index.replace(&contents);
        *seen = self.modified();
        Ok(true)
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    fn read(&self) -> Result<Contents, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io(format!(
                    "{} is not a credential store: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
            Err(e) => Err(io(format!("cannot read {}: {e}", self.path.display()))),
        }
    }

    /// The cross-process lock, held while the returned file is open.
    fn lock(&self) -> Result<File, StoreError> {
        let lock_path = sibling(&self.path, ".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(format!("cannot open {}: {e}", lock_path.display())))?;
        file.lock()
            .map_err(|e| io(format!("cannot lock {}: {e}", lock_path.display())))?;
        Ok(file)
    }

    /// Locks, re-reads, applies `change`, writes atomically and refreshes the index.
    fn write_with(
        &self,
        change: impl FnOnce(&mut Contents) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut seen = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _lock = self.lock()?;
        let mut contents = self.read()?;
        change(&mut contents)?;
        let text = serde_json::to_vec_pretty(&contents)
            .map_err(|e| io(format!("cannot encode the store: {e}")))?;
        let temp = sibling(&self.path, &format!(".tmp{}", std::process::id()));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io(format!("cannot write {}: {e}", self.path.display())));
        }
        self.index.replace(&contents);
        *seen = self.modified();
        Ok(())
    }
}

impl CredentialStore for FileStore {
    fn index(&self) -> &Index {
        &self.index
    }

    fn invitation_used(&self, invitation: &str) -> bool {
        self.index.invitation_used(invitation)
    }

    fn add(&self, credential: StoredCredential) -> Result<(), StoreError> {
        self.write_with(|c| c.add(credential))
    }

    fn update(&self, credential: StoredCredential) -> Result<(), StoreError> {
        self.write_with(|c| c.update(credential))
    }

    fn remove(&self, user: &str, id: &str) -> Result<(), StoreError> {
        self.write_with(|c| c.remove(user, id))
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

fn io(text: String) -> StoreError {
    StoreError::Io(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn credential(id: &str, user: &str, invitation: Option<&str>) -> StoredCredential {
        StoredCredential {
            id: id.into(),
            user: user.into(),
            email: Some(format!("{user}@example.com")),
            groups: vec![],
            user_handle: "00000000-0000-0000-0000-000000000000".into(),
            name: "test".into(),
            created: 1,
            last_used: None,
            invitation: invitation.map(str::to_owned),
            passkey: crate::passkey::store::fixture_passkey(),
        }
    }

    #[test]
    fn credentials_survive_a_restart_and_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passkeys.json");
        let store = FileStore::open(&path).unwrap();
        store.add(credential("c1", "alice", None)).unwrap();
        store.add(credential("c2", "alice", Some("inv1"))).unwrap();
        drop(store);

        let reopened = FileStore::open(&path).unwrap();
        assert!(reopened.contains("c1") && reopened.contains("c2"));
        assert!(reopened.invitation_used("inv1"));
        assert_eq!(reopened.for_email("ALICE@example.com").len(), 2);
        assert!(matches!(
            reopened.remove("bob", "c1"),
            Err(StoreError::NotFound)
        ));
        reopened.remove("alice", "c1").unwrap();
        assert!(!reopened.contains("c1"));
        let again = FileStore::open(&path).unwrap();
        assert!(!again.contains("c1") && again.contains("c2"));
        assert!(
            !dir.path().read_dir().unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")),
            "no temporary file is left behind"
        );
    }

    #[test]
    fn an_invitation_and_a_credential_id_are_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("p.json")).unwrap();
        store.add(credential("c1", "a", Some("inv"))).unwrap();
        assert!(matches!(
            store.add(credential("c2", "a", Some("inv"))),
            Err(StoreError::InvitationUsed)
        ));
        assert!(matches!(
            store.add(credential("c1", "b", None)),
            Err(StoreError::Duplicate)
        ));
        assert!(!store.contains("c2"));
    }

    #[test]
    fn concurrent_registrations_in_two_stores_on_one_file_all_land() {
        // Two store instances stand for two processes: only the file lock and the re-read
        // under it keep one writer from overwriting the other's credentials.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let stores = [
            Arc::new(FileStore::open(&path).unwrap()),
            Arc::new(FileStore::open(&path).unwrap()),
        ];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = stores[t % 2].clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        store
                            .add(credential(&format!("c{t}-{i}"), &format!("u{t}"), None))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let fresh = FileStore::open(&path).unwrap();
        for t in 0..8 {
            assert_eq!(fresh.for_user(&format!("u{t}")).len(), 10, "user u{t}");
        }
        // The other instance sees the other's writes once it notices the file changed.
        stores[0].reload_if_changed().unwrap();
        assert!(stores[0].contains("c1-9") && stores[0].contains("c0-9"));
    }

    #[test]
    fn the_file_store_keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("p.json")).unwrap();
        crate::passkey::store_contract::check(&store, "t-");
        // And the same once more after a restart, on the same file.
        drop(store);
        let store = FileStore::open(&dir.path().join("p.json")).unwrap();
        crate::passkey::store_contract::check(&store, "u-");
    }

    #[test]
    fn a_corrupt_file_is_refused_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(FileStore::open(&path), Err(StoreError::Io(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }
}
