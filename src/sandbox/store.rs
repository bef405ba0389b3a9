//! The sandbox's shared in-memory mail store: users and their folders, a
//! recipient routing table the SMTP side consults, and a broadcast of
//! changes so IMAP sessions in IDLE hear of new mail at once. Everything is
//! behind one mutex that is never held across an await; limits on message
//! size and folder length keep a runaway test from eating memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

/// Bounds on what the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    pub max_messages_per_folder: usize,
    pub max_message_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_messages_per_folder: 10_000,
            max_message_bytes: 10 * 1024 * 1024,
        }
    }
}

/// What the SMTP receiver does with mail for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Store it in `folder` of `user`.
    Deliver { user: String, folder: String },
    /// Accept it, then drop it: a black hole.
    Discard,
    /// Refuse the recipient with this reply, e.g. `550` and `5.1.1 User unknown`.
    Reject { code: u16, text: String },
}

impl Route {
    pub fn deliver(user: impl Into<String>, folder: impl Into<String>) -> Route {
        Route::Deliver {
            user: user.into(),
            folder: folder.into(),
        }
    }
    pub fn reject(code: u16, text: impl Into<String>) -> Route {
        Route::Reject {
            code,
            text: text.into(),
        }
    }
    /// What unknown recipients get.
    pub fn unknown_user() -> Route {
        Route::reject(550, "5.1.1 Recipient address rejected: User unknown")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no such user {0:?}")]
    NoSuchUser(String),
    #[error("no such folder {0:?}")]
    NoSuchFolder(String),
    #[error("folder {0:?} exists already")]
    FolderExists(String),
    #[error("invalid folder name {0:?}")]
    InvalidName(String),
    #[error("message of {size} bytes is larger than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("folder {folder:?} is full ({max} messages)")]
    FolderFull { folder: String, max: usize },
}

/// One stored message.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub uid: u32,
    pub raw: Arc<[u8]>,
    /// System flags in their canonical spelling (`\Seen`, `\Deleted`, ...) and keywords.
    pub flags: Vec<String>,
    pub internal_date: DateTime<Utc>,
}

impl StoredMessage {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// A change to a folder, for IMAP sessions to resynchronise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailEvent {
    pub user: String,
    pub folder: String,
}

#[derive(Debug)]
pub(crate) struct Folder {
    pub uid_validity: u32,
    pub uid_next: u32,
    /// Ascending by UID.
    pub messages: Vec<StoredMessage>,
}

impl Folder {
    pub fn get(&self, uid: u32) -> Option<&StoredMessage> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| &self.messages[i])
    }
    pub fn get_mut(&mut self, uid: u32) -> Option<&mut StoredMessage> {
        match self.messages.binary_search_by_key(&uid, |m| m.uid) {
            Ok(i) => Some(&mut self.messages[i]),
            Err(_) => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct User {
    password: String,
    pub folders: BTreeMap<String, Folder>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    users: HashMap<String, User>,
    routes: HashMap<String, Route>,
    default_route: Route,
    pub limits: StoreLimits,
    next_uid_validity: u32,
}

/// `INBOX` is case-insensitive (RFC 3501 5.1); other names are kept as given.
pub(crate) fn folder_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.to_string()
    }
}

fn valid_folder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
        && !name.starts_with('/')
        && !name.ends_with('/')
}

impl Inner {
    pub fn user(&self, user: &str) -> Result<&User, StoreError> {
        self.users
            .get(user)
            .ok_or_else(|| StoreError::NoSuchUser(user.to_string()))
    }
    pub fn user_mut(&mut self, user: &str) -> Result<&mut User, StoreError> {
        self.users
            .get_mut(user)
            .ok_or_else(|| StoreError::NoSuchUser(user.to_string()))
    }
    pub fn folder(&self, user: &str, folder: &str) -> Result<&Folder, StoreError> {
        self.user(user)?
            .folders
            .get(&folder_name(folder))
            .ok_or_else(|| StoreError::NoSuchFolder(folder.to_string()))
    }
    pub fn folder_mut(&mut self, user: &str, folder: &str) -> Result<&mut Folder, StoreError> {
        self.user_mut(user)?
            .folders
            .get_mut(&folder_name(folder))
            .ok_or_else(|| StoreError::NoSuchFolder(folder.to_string()))
    }

    fn new_folder(&mut self) -> Folder {
        let uid_validity = self.next_uid_validity;
        self.next_uid_validity = self.next_uid_validity.wrapping_add(1).max(1);
        Folder {
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
        }
    }

    pub fn create_folder(&mut self, user: &str, folder: &str) -> Result<(), StoreError> {
        let name = folder_name(folder);
        if !valid_folder_name(&name) {
            return Err(StoreError::InvalidName(folder.to_string()));
        }
        if self.user(user)?.folders.contains_key(&name) {
            return Err(StoreError::FolderExists(name));
        }
        let f = self.new_folder();
        self.user_mut(user)?.folders.insert(name, f);
        Ok(())
    }

    /// Appends a message; returns its UID.
    pub fn append(
        &mut self,
        user: &str,
        folder: &str,
        raw: Arc<[u8]>,
        flags: Vec<String>,
        internal_date: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let limits = self.limits;
        if raw.len() > limits.max_message_bytes {
            return Err(StoreError::TooLarge {
                size: raw.len(),
                max: limits.max_message_bytes,
            });
        }
        let f = self.folder_mut(user, folder)?;
        if f.messages.len() >= limits.max_messages_per_folder {
            return Err(StoreError::FolderFull {
                folder: folder.to_string(),
                max: limits.max_messages_per_folder,
            });
        }
        let uid = f.uid_next;
        f.uid_next = f.uid_next.saturating_add(1);
        f.messages.push(StoredMessage {
            uid,
            raw,
            flags,
            internal_date,
        });
        Ok(uid)
    }

    /// Removes the messages with these UIDs; returns the UIDs removed, ascending.
    pub fn remove(&mut self, user: &str, folder: &str, uids: &[u32]) -> Result<Vec<u32>, StoreError> {
        let f = self.folder_mut(user, folder)?;
        let mut removed = Vec::new();
        f.messages.retain(|m| {
            let gone = uids.contains(&m.uid);
            if gone {
                removed.push(m.uid);
            }
            !gone
        });
        Ok(removed)
    }

    /// Copies messages to another folder (all or none). Returns the
    /// (source, destination) UID pairs.
    pub fn copy(
        &mut self,
        user: &str,
        from: &str,
        uids: &[u32],
        to: &str,
    ) -> Result<(Vec<(u32, u32)>, u32), StoreError> {
        let src: Vec<StoredMessage> = {
            let f = self.folder(user, from)?;
            uids.iter().filter_map(|&u| f.get(u).cloned()).collect()
        };
        let max = self.limits.max_messages_per_folder;
        let dst = self.folder_mut(user, to)?;
        if dst.messages.len() + src.len() > max {
            return Err(StoreError::FolderFull {
                folder: to.to_string(),
                max,
            });
        }
        let mut pairs = Vec::with_capacity(src.len());
        for m in src {
            let uid = dst.uid_next;
            dst.uid_next = dst.uid_next.saturating_add(1);
            pairs.push((m.uid, uid));
            dst.messages.push(StoredMessage { uid, ..m });
        }
        Ok((pairs, dst.uid_validity))
    }

    pub fn folder_names(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.user(user)?.folders.keys().cloned().collect())
    }
}

/// The shared store; clones share the same mailboxes.
#[derive(Clone)]
pub struct MailStore {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<MailEvent>,
}

impl Default for MailStore {
    fn default() -> Self {
        MailStore::new()
    }
}

impl std::fmt::Debug for MailStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailStore")
    }
}

/// Enough for bursts; a session that lags just resynchronises.
const EVENT_CAPACITY: usize = 1024;

impl MailStore {
    pub fn new() -> MailStore {
        MailStore::with_limits(StoreLimits::default())
    }

    pub fn with_limits(limits: StoreLimits) -> MailStore {
        // Seeded from the clock so that a new sandbox looks like a new
        // mailbox to a watcher that kept its cursor from an earlier run.
        let seed = u32::try_from(Utc::now().timestamp() & 0x7fff_ffff).unwrap_or(1).max(1);
        let inner = Inner {
            users: HashMap::new(),
            routes: HashMap::new(),
            default_route: Route::unknown_user(),
            limits,
            next_uid_validity: seed,
        };
        MailStore {
            inner: Arc::new(Mutex::new(inner)),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    /// The lock, surviving a panic elsewhere (the data stays consistent:
    /// every change is a single step).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.lock())
    }

    pub(crate) fn notify(&self, user: &str, folder: &str) {
        // No subscriber is fine: nobody is waiting.
        let _ = self.events.send(MailEvent {
            user: user.to_string(),
            folder: folder_name(folder),
        });
    }

    /// Changes to folders (new mail, expunges, moves) as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<MailEvent> {
        self.events.subscribe()
    }

    pub fn limits(&self) -> StoreLimits {
        self.lock().limits
    }

    /// Adds a user with `INBOX` and `Junk`, or sets the password of an existing one.
    pub fn add_user(&self, user: &str, password: &str) {
        let mut inner = self.lock();
        if let Some(u) = inner.users.get_mut(user) {
            u.password = password.to_string();
            return;
        }
        let mut folders = BTreeMap::new();
        for name in ["INBOX", "Junk"] {
            let f = inner.new_folder();
            folders.insert(name.to_string(), f);
        }
        inner.users.insert(
            user.to_string(),
            User {
                password: password.to_string(),
                folders,
            },
        );
    }

    pub fn check_password(&self, user: &str, password: &str) -> bool {
        self.lock().users.get(user).is_some_and(|u| u.password == password)
    }

    pub fn create_folder(&self, user: &str, folder: &str) -> Result<(), StoreError> {
        self.lock().create_folder(user, folder)
    }

    pub fn folders(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.lock().folder_names(user)
    }

    /// Routes mail for `address` (case-insensitive); replaces any earlier route.
    pub fn set_route(&self, address: &str, route: Route) {
        self.lock().routes.insert(address.trim().to_ascii_lowercase(), route);
    }

    /// Forgets the route of `address`; it then gets the default route.
    pub fn remove_route(&self, address: &str) {
        self.lock().routes.remove(&address.trim().to_ascii_lowercase());
    }

    /// What recipients without a route get (550 5.1.1 unless changed).
    pub fn set_default_route(&self, route: Route) {
        self.lock().default_route = route;
    }

    pub fn route_for(&self, address: &str) -> Route {
        let inner = self.lock();
        inner
            .routes
            .get(&address.trim().to_ascii_lowercase())
            .unwrap_or(&inner.default_route)
            .clone()
    }

    /// Stores a message as delivered now and wakes the folder's IDLE sessions.
    pub fn deliver(&self, user: &str, folder: &str, raw: impl Into<Arc<[u8]>>) -> Result<u32, StoreError> {
        let uid = self.lock().append(user, folder, raw.into(), Vec::new(), Utc::now())?;
        self.notify(user, folder);
        Ok(uid)
    }

    /// A snapshot of a folder's messages, ascending by UID.
    pub fn messages(&self, user: &str, folder: &str) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self.lock().folder(user, folder)?.messages.clone())
    }

    pub fn uid_validity(&self, user: &str, folder: &str) -> Result<u32, StoreError> {
        Ok(self.lock().folder(user, folder)?.uid_validity)
    }

    /// Gives the folder a new UIDVALIDITY and renumbers its messages from 1,
    /// as a server does after losing its index. Returns the new value.
    /// Sessions that have the folder selected are disconnected.
    pub fn reset_uid_validity(&self, user: &str, folder: &str) -> Result<u32, StoreError> {
        let validity = {
            let mut inner = self.lock();
            let fresh = inner.new_folder().uid_validity;
            let f = inner.folder_mut(user, folder)?;
            f.uid_validity = fresh;
            for (i, m) in f.messages.iter_mut().enumerate() {
                m.uid = u32::try_from(i + 1).unwrap_or(u32::MAX);
            }
            f.uid_next = u32::try_from(f.messages.len() + 1).unwrap_or(u32::MAX);
            fresh
        };
        self.notify(user, folder);
        Ok(validity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_case_insensitive_and_unknown_recipients_are_rejected() {
        let store = MailStore::new();
        store.add_user("alice", "pw");
        store.set_route("Alice@Example.TEST", Route::deliver("alice", "INBOX"));
        assert_eq!(store.route_for("alice@example.test"), Route::deliver("alice", "INBOX"));
        assert_eq!(store.route_for("bob@example.test"), Route::unknown_user());
        store.set_route("alice@example.test", Route::Discard);
        assert_eq!(store.route_for("ALICE@example.test"), Route::Discard);
        store.remove_route("alice@example.test");
        assert_eq!(store.route_for("alice@example.test"), Route::unknown_user());
    }

    #[test]
    fn delivery_assigns_uids_and_respects_limits() {
        let store = MailStore::with_limits(StoreLimits {
            max_messages_per_folder: 2,
            max_message_bytes: 10,
        });
        store.add_user("u", "p");
        assert_eq!(store.deliver("u", "inbox", &b"one"[..]), Ok(1));
        assert_eq!(store.deliver("u", "INBOX", &b"two"[..]), Ok(2));
        assert!(matches!(
            store.deliver("u", "INBOX", &b"three"[..]),
            Err(StoreError::FolderFull { .. })
        ));
        assert!(matches!(
            store.deliver("u", "Junk", &b"much too long"[..]),
            Err(StoreError::TooLarge { .. })
        ));
        assert!(matches!(
            store.deliver("u", "Nope", &b"x"[..]),
            Err(StoreError::NoSuchFolder(_))
        ));
        assert!(matches!(
            store.deliver("nobody", "INBOX", &b"x"[..]),
            Err(StoreError::NoSuchUser(_))
        ));
        let msgs = store.messages("u", "INBOX").unwrap();
        assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn folders_and_uid_validity() {
        let store = MailStore::new();
        store.add_user("u", "p");
        assert!(store.check_password("u", "p"));
        assert!(!store.check_password("u", "q"));
        store.create_folder("u", "Archive/2024").unwrap();
        assert!(matches!(
            store.create_folder("u", "inbox"),
            Err(StoreError::FolderExists(_))
        ));
        assert!(matches!(store.create_folder("u", ""), Err(StoreError::InvalidName(_))));
        assert_eq!(store.folders("u").unwrap(), vec!["Archive/2024", "INBOX", "Junk"]);
        store.deliver("u", "INBOX", &b"a"[..]).unwrap();
        store.deliver("u", "INBOX", &b"b"[..]).unwrap();
        store.with(|i| i.remove("u", "INBOX", &[1])).unwrap();
        let before = store.uid_validity("u", "INBOX").unwrap();
        let after = store.reset_uid_validity("u", "INBOX").unwrap();
        assert_ne!(before, after);
        assert_eq!(store.messages("u", "INBOX").unwrap()[0].uid, 1);
    }
}
