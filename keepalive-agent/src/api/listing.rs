//! `/sockets`, streamed: the reply is written a chunk of rows at a time,
//! each chunk built under the state lock and sent before the next is made,
//! so a reply costs the agent one chunk (and the list of cookies), not the
//! whole table, however slowly its client reads; and only a few are made
//! at once, the rest refused with 503 and counted. (A client that stops
//! reading altogether is cut off by the server's write-stall limit.)

use std::sync::Arc;

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::{filters::Filter, metrics::agent::ReasonLabels, state::Shared};

/// Rows per chunk: a few hundred KiB of JSON at most.
const CHUNK_ROWS: usize = 256;

/// Listings made at once; more wait for none and get 503.
pub const CONCURRENT_LISTINGS: usize = 4;

/// Where a listing is.
struct Listing {
    state: Shared,
    filter: Filter,
    cookies: Vec<u64>,
    next: usize,
    /// Rows written so far (for the separators).
    written: usize,
    done: bool,
    _slot: OwnedSemaphorePermit,
}

impl Listing {
    /// The next piece of the JSON array, or None after its `]`.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(64 * 1024);
        if self.next == 0 {
            out.push(b'[');
        }
        let end = (self.next + CHUNK_ROWS).min(self.cookies.len());
        if let Ok(mut s) = self.state.lock() {
            for &cookie in &self.cookies[self.next..end] {
                // Closed since the listing began: left out.
                let Some(mut row) = s.table.row_of(cookie, s.judge()) else {
                    continue;
                };
                s.naming.name_row(&mut row);
                if !self.filter.matches_row(&row) {
                    continue;
                }
                if self.written > 0 {
                    out.push(b',');
                }
                // Writing into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, &row);
                self.written += 1;
            }
        }
        self.next = end;
        if self.next >= self.cookies.len() {
            out.push(b']');
            self.done = true;
        }
        Some(Bytes::from(out))
    }
}

/// The streamed reply for `filter`, or 503 when enough are being made.
pub fn sockets(
    state: &Shared,
    slots: &Arc<tokio::sync::Semaphore>,
    filter: Filter,
) -> Result<Response, Box<Response>> {
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        if let Ok(s) = state.lock() {
            let reason = ReasonLabels { reason: "sockets" };
            s.metrics.agent.http_refused.get_or_create(&reason).inc();
        }
        return Err(Box::new(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many /sockets listings at once, retry\n",
            )
                .into_response(),
        ));
    };
    let cookies = match state.lock() {
        Ok(s) => s.table.live_cookies(),
        Err(_) => {
            return Err(Box::new(
                (StatusCode::INTERNAL_SERVER_ERROR, "agent state poisoned\n").into_response(),
            ));
        }
    };
    let listing = Listing {
        state: state.clone(),
        filter,
        cookies,
        next: 0,
        written: 0,
        done: false,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(listing, |mut l| async move {
        let chunk = l.next_chunk()?;
        Some((Ok::<_, std::convert::Infallible>(chunk), l))
    });
    // Fused: gzip's encoder polls once more after the end, which an
    // unfold may not be.
    let stream = futures_util::StreamExt::fuse(stream);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
