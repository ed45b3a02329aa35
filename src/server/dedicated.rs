//! Running a latency-critical task on a thread of its own.
//!
//! The detector's timer must wake within a millisecond or two of a
//! deadline. On the runtime's shared workers it waits whenever both are busy
//! (a checkpoint copying half a million hosts, the console, HTTP), and on a
//! loaded machine the kernel is slow to run a worker that has burnt CPU. A
//! thread that only sleeps and expires deadlines is run promptly when its
//! sleep ends, so the timer gets one, with a single-threaded runtime of its
//! own (its own clock wheel, so no busy worker has to turn it).

use std::future::Future;
use tokio::task::JoinHandle;

/// Runs `task` to completion on a thread of its own (from tokio's blocking
/// pool) with a current-thread runtime; awaiting the handle waits for it.
/// If that runtime cannot be built, the task runs on the thread anyway,
/// driven by the caller's runtime.
pub fn spawn<F>(name: &'static str, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let outer = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime.block_on(task),
            Err(e) => {
                tracing::warn!(
                    "cannot start a runtime for the {name} thread ({e}); sharing the main one"
                );
                outer.block_on(task);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Notify;

    #[tokio::test]
    async fn runs_the_task_and_its_timers_to_completion() {
        let notify = Arc::new(Notify::new());
        let woken = notify.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = spawn("test", async move {
            // A notification from the caller's runtime crosses over.
            woken.notified().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = tx.send(std::thread::current().id());
        });
        notify.notify_one();
        handle.await.expect("task finished");
        let thread = rx.await.expect("sent");
        assert_ne!(thread, std::thread::current().id());
    }
}
