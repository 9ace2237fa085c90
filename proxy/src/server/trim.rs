//! Hands the pages of freed connection buffers back to the kernel.
//!
//! An idle keep-alive connection frees hyper's buffers (`keep_alive`), but glibc's allocator
//! gives memory back only from the top of a heap: buffers freed between the small blocks
//! that idle connections keep stay resident. After many connections went idle, one
//! `malloc_trim` returns their pages: 10,000 idle connections measured 65.5 MB without it and
//! 44.5 MB with it, side by side (benches/results/profile/README.md). Other C libraries
//! (musl in the container image) have no such call and need none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections that went idle since the last trim.
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Releases that make a trim worth its cost: about 16 KiB of buffers each, so 4 MiB.
const TRIM_AFTER: usize = 256;
/// How often the count is looked at, so at most how often a trim runs. A trim holds each
/// heap's lock while it walks it (0.4-8.5 ms measured after 1,000-5,000 releases), and a
/// serving thread that allocates meanwhile waits; it runs on the control thread.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Called by a connection that has just let go of its hyper buffers.
pub fn note_release() {
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// Trims after enough releases; runs for the life of the runtime it is spawned on.
pub async fn run() {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if RELEASED.load(Ordering::Relaxed) >= TRIM_AFTER {
            let released = RELEASED.swap(0, Ordering::Relaxed);
            let started = std::time::Instant::now();
            release_free_pages();
            tracing::debug!(
                connections = released,
                micros = started.elapsed().as_micros() as u64,
                "returned the free pages of idle connections' buffers"
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "malloc_trim is a foreign function")]
fn release_free_pages() {
    // SAFETY: malloc_trim takes no pointers; it only returns unused pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}
