//! The accept loop the control socket and the metrics endpoint share.

use std::future::Future;
use std::time::Duration;

/// Accepts connections until the runtime stops and hands each to
/// `handle`. A failed accept (out of descriptors, say) is logged as
/// "`what` accept failed" and retried after a pause instead of spinning.
pub(crate) async fn accept_forever<S, F>(
    what: &str,
    accept: impl Fn() -> F,
    mut handle: impl FnMut(S),
) where
    F: Future<Output = std::io::Result<S>>,
{
    loop {
        match accept().await {
            Ok(s) => handle(s),
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
