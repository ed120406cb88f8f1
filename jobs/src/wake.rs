//! Wake-ups of the apalis workers, and the workarounds of two faults of apalis's poll
//! strategy that otherwise leave a worker asleep until its heartbeat.
//!
//! On Postgres, LISTEN/NOTIFY (apalis's `Pubsub`) picks up new tasks within
//! milliseconds, and this process's own pushes wake its workers directly too; on SQLite
//! (one process), the store reports to this process's signals after every transaction that
//! pushed tasks. The run worker is also woken by this process's scheduler at the instant
//! of each slot it fired ahead of time (on both backends). Other delayed tasks (retries)
//! and crash recovery ride on the heartbeat. Every wake-up stream goes through
//! [`wake_worker`]. What does not live here: which workers exist and how they are built
//! (`crate::workers`).

use futures::StreamExt;
use std::{sync::Arc, time::Duration};

/// Wakes a worker whenever this process pushed tasks to its queue, or its scheduler
/// reached a slot it fired ahead of time. On SQLite (no LISTEN/NOTIFY, one process) this
/// is the only wake-up; on Postgres it runs beside the notifications.
pub(crate) fn wakeups(
    wake: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static {
    Box::pin(futures::stream::unfold(wake, |w| async move {
        w.notified().await;
        Some(((), w))
    }))
}

/// When each wake-up of [`echoed`] is repeated.
const ECHOES: [Duration; 2] = [Duration::from_millis(25), Duration::from_millis(250)];

/// Repeats each wake-up of `inner` [`ECHOES`] later (a newer wake-up starts the echoes
/// over). apalis's stream strategy only re-polls the worker when a wake-up arrives and
/// drops the item: one that arrives while a fetch is already running is lost, and if
/// that fetch's snapshot predates the new tasks it finds nothing, so they would wait for
/// the next wake-up or heartbeat (on Postgres, a whole slot's runs could start a second
/// late). An echo arrives after that fetch and costs at most an empty fetch.
fn echoed<S>(inner: S) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static
where
    S: futures::Stream<Item = ()> + Unpin + Send + 'static,
{
    let start = (inner, Vec::<tokio::time::Instant>::new());
    Box::pin(futures::stream::unfold(
        start,
        |(mut inner, mut echoes)| async move {
            let woken = match echoes.first().copied() {
                None => inner.next().await.is_some(),
                Some(at) => tokio::select! {
                    item = inner.next() => item.is_some(),
                    () = tokio::time::sleep_until(at) => {
                        echoes.remove(0);
                        return Some(((), (inner, echoes)));
                    }
                },
            };
            if !woken {
                return None;
            }
            let now = tokio::time::Instant::now();
            echoes = ECHOES.iter().map(|d| now + *d).collect();
            Some(((), (inner, echoes)))
        },
    ))
}

/// The poll strategy stream of a worker: `inner`'s wake-ups, [`echoed`], delivered by
/// [`WakeOnly`].
pub(crate) fn wake_worker<S>(inner: S) -> WakeOnly<impl futures::Stream<Item = ()> + Unpin + Send + 'static>
where
    S: futures::Stream<Item = ()> + Unpin + Send + 'static,
{
    WakeOnly(echoed(inner))
}

/// Turns each item of a wake-up stream into a wake of the polling task, and is itself
/// always pending. apalis's `PollWith` polls its strategy stream once at the start of
/// each poll and drops the item. If that poll then ends with an empty fetch, a stream
/// that had just yielded an item has not been polled again, so no waker is registered
/// for its next item: later wake-ups are buffered but wake nobody, and the worker sleeps
/// until its heartbeat (under a steady stream of events, deliveries were held for up to
/// a heartbeat). This adapter drains every ready item and stays registered, then wakes the
/// task so that it polls (and fetches) again.
pub(crate) struct WakeOnly<S>(S);

impl<S: futures::Stream<Item = ()> + Unpin> futures::Stream for WakeOnly<S> {
    type Item = ();

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        let mut woken = false;
        loop {
            match self.0.poll_next_unpin(cx) {
                std::task::Poll::Ready(Some(())) => woken = true,
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => break,
            }
        }
        if woken {
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    }
}

/// Wake-ups from Postgres: apalis's LISTEN on new tasks of `queue`. Its trigger notifies
/// once per inserted task; a burst (a fan-out of thousands) is coalesced into one
/// wake-up, since one fetch takes a whole batch.
fn pg_notifications(
    pool: sqlx::PgPool,
    queue: &'static str,
) -> impl futures::Stream<Item = ()> + Unpin + Send {
    apalis_postgres::Pubsub::new(pool, queue.to_owned())
        .ready_chunks(4096)
        .map(|_| ())
}

/// A Postgres worker's wake-ups: notifications of new tasks in `queue`, and this
/// process's own pushes and slots (`wake`).
pub(crate) fn pg_wakeups(
    pool: sqlx::PgPool,
    queue: &'static str,
    wake: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = ()> + Unpin + Send + 'static {
    futures::stream::select(pg_notifications(pool, queue), wakeups(wake))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// Whether `stream` yields within `wait` (of paused, auto-advancing test time).
    async fn yields_within(stream: &mut (impl futures::Stream<Item = ()> + Unpin), wait: Duration) -> bool {
        tokio::time::timeout(wait, stream.next()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_is_echoed_twice_and_a_newer_one_starts_the_echoes_over() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
        let mut woken = echoed(rx);
        assert!(woken.next().now_or_never().is_none(), "nothing before a wake-up");

        tx.unbounded_send(()).unwrap();
        assert!(
            yields_within(&mut woken, Duration::from_millis(1)).await,
            "the wake-up itself"
        );
        assert!(!yields_within(&mut woken, Duration::from_millis(20)).await);
        assert!(
            yields_within(&mut woken, Duration::from_millis(10)).await,
            "first echo at 25 ms"
        );
        assert!(!yields_within(&mut woken, Duration::from_millis(200)).await);
        // A new wake-up before the second echo replaces the pending echoes.
        tx.unbounded_send(()).unwrap();
        assert!(
            yields_within(&mut woken, Duration::from_millis(1)).await,
            "the new wake-up"
        );
        assert!(
            yields_within(&mut woken, Duration::from_millis(30)).await,
            "its first echo"
        );
        assert!(
            yields_within(&mut woken, Duration::from_millis(230)).await,
            "its second echo"
        );
        assert!(
            !yields_within(&mut woken, Duration::from_secs(10)).await,
            "then silence"
        );

        drop(tx);
        assert_eq!(woken.next().await, None, "ends with its source");
    }

    /// Counts wakes of the task that polls.
    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn wake_only_turns_items_into_wakes_and_stays_registered() {
        use futures::Stream;
        let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
        let mut stream = WakeOnly(rx);
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let count = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut poll = |s: &mut WakeOnly<_>| std::pin::Pin::new(s).poll_next(&mut cx);

        assert!(poll(&mut stream).is_pending());
        assert_eq!(count(), 0, "nothing to wake for yet");
        // Two wake-ups before the next poll: drained together, one wake.
        tx.unbounded_send(()).unwrap();
        tx.unbounded_send(()).unwrap();
        let after_send = count();
        assert!(poll(&mut stream).is_pending(), "it never yields an item");
        assert_eq!(count(), after_send + 1, "the items became one wake of the poller");
        // Still registered after yielding nothing: a later wake-up wakes the task
        // without anyone polling first (the bug this adapter exists for).
        let before = count();
        tx.unbounded_send(()).unwrap();
        assert!(count() > before, "a later wake-up reaches the task by itself");
        assert!(poll(&mut stream).is_pending());

        drop(tx);
        assert!(poll(&mut stream).is_ready(), "ends with its source");
    }
}
