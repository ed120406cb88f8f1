//! Turns SIGTERM and ctrl-c into the cancellation of one token. The token is created by
//! the caller and passed to everything that must stop, so no global state is involved
//! and tests can stop one application without touching others.

use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Cancels `token` at the first SIGTERM or ctrl-c (SIGINT). The signals are caught from
/// the moment this returns, so a caller that then says it is ready (`serve` prints its
/// banner) cannot be killed by a signal that arrives before the listener is in place.
/// Must be called inside the runtime.
pub fn cancel_on_signals(token: CancellationToken) {
    let signal = first_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        token.cancel();
    });
}

/// Registers the handlers now; the future completes at the first signal. A handler that
/// cannot be registered is logged and never fires.
#[cfg(unix)]
fn first_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| -> Option<Signal> {
        signal(kind)
            .inspect_err(|e| tracing::error!(error = %e, "cannot listen for {name}"))
            .ok()
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut int = listen(SignalKind::interrupt(), "ctrl-c");
    async move {
        tokio::select! {
            () = received(term.as_mut()) => {},
            () = received(int.as_mut()) => {},
        }
    }
}

/// The next delivery of `signal`; never, without one.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Elsewhere only ctrl-c exists.
#[cfg(not(unix))]
fn first_signal() -> impl Future<Output = ()> {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    }
}
