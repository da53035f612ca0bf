//! The daemon's long-lived tasks in one shape: each is started by [`Tasks::spawn`] with its name
//! and a stop token, and all of them stop on one path, [`Tasks::stop`]: cancel, then one bounded
//! wait for them all; a task still running after it is aborted and named in the log. The core is
//! not one of them: it ends first (SIGTERM reaches it as an event), and its end starts this stop.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running tasks and the token that stops them.
#[derive(Default)]
pub struct Tasks {
    stop: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    /// Starts `task` with a token cancelled when the daemon stops (must run inside the runtime).
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let token = self.stop.child_token();
        self.running.push((name, tokio::spawn(task(token))));
    }

    /// The names of the tasks started, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.running.iter().map(|(n, _)| *n).collect()
    }

    /// Stops every task: cancels their tokens, waits at most `within` for all of them, aborts
    /// the rest. Returns the names of the tasks that had to be aborted.
    pub async fn stop(self, within: Duration) -> Vec<&'static str> {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + within;
        let mut abandoned = Vec::new();
        for (name, mut handle) in self.running {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                tracing::warn!(
                    task = name,
                    "a daemon task did not stop in time and was abandoned"
                );
                abandoned.push(name);
            }
        }
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_task_hears_the_stop_and_one_that_ignores_it_is_abandoned_in_time() {
        let mut tasks = Tasks::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for name in ["api", "watchdog"] {
            let tx = tx.clone();
            tasks.spawn(name, move |stop| async move {
                stop.cancelled().await;
                let _ = tx.send(name);
            });
        }
        tasks.spawn("stubborn", |_stop| std::future::pending());
        assert_eq!(tasks.names(), ["api", "watchdog", "stubborn"]);
        let started = tokio::time::Instant::now();
        let abandoned = tasks.stop(Duration::from_secs(1)).await;
        assert_eq!(abandoned, ["stubborn"]);
        assert!(started.elapsed() <= Duration::from_secs(1));
        let mut stopped = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        stopped.sort_unstable();
        assert_eq!(stopped, ["api", "watchdog"]);
    }
}
