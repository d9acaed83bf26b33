//! HTTP basic authentication against the file's bcrypt hashes. bcrypt is
//! slow on purpose (tens of milliseconds at cost 10), so, as the
//! exporter-toolkit does, each answer is remembered for the credentials
//! that got it (a scraper sends the same ones every time), and the
//! checks run one at a time off the async threads: a client guessing
//! passwords costs the agent at most one core, never the ring reader's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use base64::Engine as _;
use tokio::sync::Semaphore;

/// Answers remembered before the memory is cleared.
const REMEMBERED: usize = 256;

pub struct BasicAuth {
    users: HashMap<String, String>,
    /// `Authorization` header value → whether it passed.
    answers: Mutex<HashMap<String, bool>>,
    checking: Arc<Semaphore>,
}

impl BasicAuth {
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> Self {
        BasicAuth {
            users: users.into_iter().collect(),
            answers: Mutex::new(HashMap::new()),
            checking: Arc::new(Semaphore::new(1)),
        }
    }

    /// Whether `authorization` (the header's value) names a user with the
    /// right password.
    pub async fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(header) = authorization else {
            return false;
        };
        let remembered = self
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(header).copied());
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
            if answers.len() >= REMEMBERED {
                answers.clear();
            }
            answers.insert(header.to_owned(), ok);
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
}
