//! Waiting for a state that arrives asynchronously (replication, a probe, a
//! budget evaluation): poll a predicate until it holds or a deadline passes.
//! `wait_until` answers whether it held, for a test that asserts with its own
//! message; `wait_for` panics with a message that says what was awaited.

use std::time::{Duration, Instant};

/// Default pause between two polls.
pub const POLL: Duration = Duration::from_millis(100);

/// Poll `cond` every `poll` until it holds (true) or `timeout` passes
/// (false). The predicate is tried once more after the deadline, so a slow
/// last poll does not turn into a failure.
pub fn poll_until(timeout: Duration, poll: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(poll);
    }
}

/// [`poll_until`] every [`POLL`].
pub fn wait_until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    poll_until(timeout, POLL, cond)
}

/// Poll `cond` every `poll` until it holds, answering how long that took;
/// panics with `what` once `timeout` has passed.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(poll);
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_end_when_the_predicate_holds_or_the_deadline_passes() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert!(!poll_until(Duration::from_millis(30), Duration::from_millis(10), || false));
        let took = wait_for("a true predicate", Duration::from_secs(1), POLL, || true);
        assert!(took < Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "the impossible: not within")]
    fn wait_for_names_what_it_awaited() {
        wait_for("the impossible", Duration::from_millis(20), Duration::from_millis(5), || false);
    }
}
