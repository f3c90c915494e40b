//! The runtime shape: worker threads, each with its own single-threaded tokio runtime.
//!
//! Measured on the 2-core benchmark machine (BENCHMARKS.md), a multi-thread runtime spends much
//! of its time waking tasks across threads; a current-thread runtime per worker keeps a client
//! connection, its upstream connection and both of their tasks on one thread. Connections are
//! spread over workers by the kernel (each worker accepts on the shared listening socket).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::num::NonZeroUsize;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (1-based); 0 off the workers.
pub fn current_worker() -> usize {
    WORKER.with(Cell::get)
}

/// The default number of workers: one per core this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Starts `count` worker threads, each running `work(worker)` to completion on its own
/// current-thread runtime. The returned handles finish when the work does.
pub fn spawn_workers<F, Fut>(count: usize, work: F) -> io::Result<Vec<std::thread::JoinHandle<()>>>
where
    F: Fn(usize) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()>,
{
    (1..=count.max(1))
        .map(|worker| {
            let work = work.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("worker-{worker}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(worker));
                    runtime.block_on(work(worker));
                    // Upgraded tunnels may still run; they do not hold up the exit.
                    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
                })
        })
        .collect()
}
