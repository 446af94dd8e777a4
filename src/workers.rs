//! The threads that serve caller connections when `[server] workers` asks for them: one
//! single-threaded tokio runtime per worker, as nginx's workers are. A caller connection,
//! its calls and the upstream connections they go out on are then polled on one thread,
//! so handing a call to its upstream connection and its answer back wakes nothing on
//! another core; each worker has an upstream pool of its own for that.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// Set once on each worker thread: which worker it is.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker this thread is, or `None` off the worker threads (the main runtime, which
/// serves the admin listener, reloads and background tasks).
pub(crate) fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Running workers; dropping this ends them, and with them every connection and task
/// still on them.
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Each worker's runtime runs until its sender is dropped.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` (at least 1) worker threads, each with its runtime.
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("hubgate-w{index}"))
                .spawn(move || {
                    WORKER.with(|worker| worker.set(Some(index)));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            stops.push(stop);
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Runs `future` on the next worker in turn: connections are long-lived and accepted
    /// one at a time, so turns spread them evenly.
    pub(crate) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[turn].spawn(future));
    }
}
