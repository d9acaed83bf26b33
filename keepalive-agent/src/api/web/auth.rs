//! HTTP basic authentication against the file's bcrypt hashes. bcrypt is
//! slow on purpose (tens of milliseconds at cost 10), so, as the
//! exporter-toolkit does, each answer is remembered for the credentials
//! that got it (a scraper sends the same ones every time), and the
//! checks run one at a time off the async threads: a client guessing
//! passwords costs the agent at most one core, never the ring reader's.
//!
//! The header is the client's to choose: it is remembered by its SHA-256
//! (32 bytes, whatever its length), successes and failures apart, each
//! bounded and evicted one at a time, oldest first; failures never evict
//! a success, so a client guessing passwords cannot make the scraper's
//! credentials wait behind its bcrypt checks again. A header longer than
//! any real one is refused unchecked.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, OnceLock},
};

use base64::Engine as _;
use tokio::sync::Semaphore;

/// Successful credentials remembered (a few scrapers' each).
const PASSED: usize = 64;
/// Failed ones remembered.
const FAILED: usize = 256;
/// The longest `Authorization` header checked: a user name and a password
/// of a few hundred bytes each, base64-encoded (bcrypt reads 72 bytes).
pub const MAX_HEADER: usize = 4096;

type Digest = [u8; 32];

/// Digests remembered, oldest first out.
#[derive(Default)]
struct Remembered {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
}

impl Remembered {
    fn contains(&self, d: &Digest) -> bool {
        self.set.contains(d)
    }

    fn insert(&mut self, d: Digest, bound: usize) {
        if !self.set.insert(d) {
            return;
        }
        self.order.push_back(d);
        if self.order.len() > bound
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
    }
}

#[derive(Default)]
struct Answers {
    passed: Remembered,
    failed: Remembered,
}

pub struct BasicAuth {
    users: HashMap<String, String>,
    answers: Mutex<Answers>,
    checking: Arc<Semaphore>,
}

fn digest(header: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, header.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl BasicAuth {
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> Self {
        BasicAuth {
            users: users.into_iter().collect(),
            answers: Mutex::new(Answers::default()),
            checking: Arc::new(Semaphore::new(1)),
        }
    }

    /// Whether `authorization` (the header's value) names a user with the
    /// right password.
    pub async fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(header) = authorization.filter(|h| h.len() <= MAX_HEADER) else {
            return false;
        };
        let key = digest(header);
        let remembered = self.answers.lock().ok().and_then(|a| {
            if a.passed.contains(&key) {
                Some(true)
            } else {
                a.failed.contains(&key).then_some(false)
            }
        });
        if let Some(known) = remembered {
            return known;
        }
        let Some((user, password)) = decode(header) else {
            return false;
        };
        // An unknown user costs what a known one does, so that timing
        // does not tell which users exist.
        let hash = self.users.get(&user).cloned();
        let known_user = hash.is_some();
        let Ok(_turn) = self.checking.clone().acquire_owned().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || {
            let hash = hash.unwrap_or_else(|| decoy_hash().to_owned());
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        let ok = known_user && verified;
        if let Ok(mut answers) = self.answers.lock() {
            match ok {
                true => answers.passed.insert(key, PASSED),
                false => answers.failed.insert(key, FAILED),
            }
        }
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
fn decode(header: &str) -> Option<(String, String)> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A hash no password is known for, at the toolkit's usual cost.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| bcrypt::hash("keepalive-agent decoy", 10).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[tokio::test]
    async fn only_the_right_password_passes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new([("prometheus".to_owned(), hash)]);
        assert!(auth.allows(Some(&header("prometheus", "s3cret"))).await);
        // Remembered: the same answer again.
        assert!(auth.allows(Some(&header("prometheus", "s3cret"))).await);
        assert!(!auth.allows(Some(&header("prometheus", "wrong"))).await);
        assert!(!auth.allows(Some(&header("nobody", "s3cret"))).await);
        assert!(!auth.allows(Some("Bearer abc")).await);
        assert!(!auth.allows(None).await);
    }

    /// Hundreds of distinct wrong (and huge) credentials neither grow the
    /// memory past its bounds nor push the scraper's success out of it.
    #[tokio::test]
    async fn failures_are_bounded_and_never_evict_a_success() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new([("prometheus".to_owned(), hash)]);
        let good = header("prometheus", "s3cret");
        assert!(auth.allows(Some(&good)).await);
        for i in 0..(FAILED + 10) {
            assert!(
                !auth
                    .allows(Some(&header("prometheus", &format!("guess{i}"))))
                    .await
            );
        }
        let huge = header("prometheus", &"x".repeat(MAX_HEADER));
        assert!(!auth.allows(Some(&huge)).await);
        let answers = auth.answers.lock().unwrap();
        assert_eq!(answers.failed.order.len(), FAILED);
        assert_eq!(answers.failed.set.len(), FAILED);
        assert!(answers.passed.contains(&digest(&good)));
    }
}
