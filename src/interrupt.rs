//! SIGINT and SIGTERM for the commands other than `run` (which stops gracefully on its own): the
//! first signal asks the command to stop where it is, and the process exits 130 (SIGINT) or 143
//! (SIGTERM) within [`GRACE`] whatever the command is waiting for (a slow store, a broker that
//! does not answer, a rate limit's pause). A command with something to record first — `replay`'s
//! checkpoint — watches [`Interrupt::asked`] and returns its own error in time; the others have
//! nothing to lose, and the process ends for them.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a command has, after the first signal, to stop by itself.
pub const GRACE: Duration = Duration::from_secs(1);

/// The first SIGINT or SIGTERM, once it came.
#[derive(Debug, Default)]
pub struct Interrupt {
    /// The signal's number (0: none yet).
    signal: AtomicI32,
    notify: tokio::sync::Notify,
}

impl Interrupt {
    /// Listens for SIGINT and SIGTERM (from the moment this returns) on the current runtime.
    pub fn install() -> std::io::Result<Arc<Interrupt>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let this = Arc::new(Interrupt::default());
        let me = this.clone();
        tokio::spawn(async move {
            let number = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            me.ask(number);
            tracing::info!(exit_code = exit_code(number), "signal received: stopping");
            tokio::time::sleep(GRACE).await;
            // Still running: whatever it waits for, it ends here (nothing recorded is lost:
            // a command that records progress has done so once it saw the signal).
            std::process::exit(exit_code(number));
        });
        Ok(this)
    }

    /// Records the signal `number` (the first one counts).
    pub fn ask(&self, number: i32) {
        if self.signal.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.notify.notify_waiters();
        }
    }

    /// The exit code the signal asks for (130 for SIGINT, 143 for SIGTERM), once one came.
    pub fn asked(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some(exit_code(n)),
        }
    }

    /// Waits for the signal (returns at once if it came already).
    pub async fn wait(&self) -> i32 {
        loop {
            let notified = self.notify.notified();
            if let Some(code) = self.asked() {
                return code;
            }
            notified.await;
        }
    }

    /// Sleeps for `d`, or less if the signal comes; true if it came.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.asked().is_some(),
            _ = self.wait() => true,
        }
    }
}

/// 128 + the signal's number, as shells report a process ended by it.
fn exit_code(signal: i32) -> i32 {
    128 + signal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_signal_counts_and_wakes_every_waiter() {
        let i = Arc::new(Interrupt::default());
        assert_eq!(i.asked(), None);
        let waiter = {
            let i = i.clone();
            tokio::spawn(async move { i.wait().await })
        };
        let sleeper = {
            let i = i.clone();
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                (i.sleep(Duration::from_secs(60)).await, t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        i.ask(libc::SIGTERM);
        i.ask(libc::SIGINT);
        assert_eq!(waiter.await.unwrap(), 143);
        let (interrupted, took) = sleeper.await.unwrap();
        assert!(interrupted && took < Duration::from_secs(5), "{took:?}");
        assert_eq!(i.asked(), Some(143), "the first signal counts");
        assert_eq!(i.wait().await, 143, "after the signal, at once");
        assert!(!Interrupt::default().sleep(Duration::from_millis(10)).await);
    }
}
