//! Group commit, shared by the event log's sequencer and the access log's writer: callers hand a
//! request to one writer task per log and wait; each round takes every request waiting (up to a
//! cap), decides and writes them in one transaction, and answers each with its own outcome — or,
//! if the transaction fails, every request of the round with the error, acknowledging nothing.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// One caller's items, what the writer needs beside them (`A`), and where to send its outcome.
pub(crate) struct Request<T, O, A = ()> {
    pub(crate) items: Vec<T>,
    pub(crate) attached: A,
    pub(crate) reply: oneshot::Sender<Result<O>>,
}

/// The way to a writer task: `None` before it starts and after shutdown.
pub(crate) type Slot<T, O, A = ()> = Mutex<Option<mpsc::Sender<Request<T, O, A>>>>;

/// Hands `items` (and `attached`) to the writer behind `slot` and waits for its answer; `closed`
/// says why there is no writer.
pub(crate) async fn submit<T, O, A>(slot: &Slot<T, O, A>, items: Vec<T>, attached: A, closed: &str) -> Result<O> {
    let sender = slot.lock().expect("writer lock").clone().ok_or_else(|| Error::Unavailable(closed.into()))?;
    let (reply, rx) = oneshot::channel();
    sender
        .send(Request { items, attached, reply })
        .await
        .map_err(|_| Error::Unavailable("the log is shutting down".into()))?;
    rx.await.map_err(|_| Error::Unavailable("the log stopped before answering".into()))?
}

/// The requests of one round.
pub(crate) struct Group<T, O, A = ()> {
    requests: Vec<Request<T, O, A>>,
    started: std::time::Instant,
}

impl<T, O, A> Group<T, O, A> {
    /// Waits for a request, then takes every request waiting behind it, up to `max_items` items;
    /// `None` once every sender is dropped and nothing is left.
    pub(crate) async fn next(rx: &mut mpsc::Receiver<Request<T, O, A>>, max_items: usize) -> Option<Self> {
        let first = rx.recv().await?;
        let started = std::time::Instant::now();
        let mut n = first.items.len();
        let mut requests = vec![first];
        while n < max_items {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.items.len();
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
        Some(Group { requests, started })
    }

    /// Each request's items, in arrival order.
    pub(crate) fn items(&self) -> Vec<&[T]> {
        self.requests.iter().map(|r| r.items.as_slice()).collect()
    }

    /// What each request attached, in arrival order.
    pub(crate) fn attached(&self) -> Vec<&A> {
        self.requests.iter().map(|r| &r.attached).collect()
    }

    /// Answers each request with its outcome, or every request with the round's error (`what`
    /// names the log in the error trace).
    /// `committed` is how many entries the round's transaction wrote (idempotent resends and
    /// refusals write nothing).
    pub(crate) fn answer(self, what: &'static str, result: Result<Vec<Result<O>>>, committed: usize) {
        let items = self.requests.iter().map(|r| r.items.len()).sum();
        let seconds = self.started.elapsed().as_secs_f64();
        match result {
            Ok(outcomes) => {
                crate::metrics::round(what, items, committed, seconds, false);
                for (req, outcome) in self.requests.into_iter().zip(outcomes) {
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                crate::metrics::round(what, items, 0, seconds, true);
                tracing::error!(error = %e, log = what, requests = self.requests.len(), "round failed; nothing was recorded");
                for req in self.requests {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
