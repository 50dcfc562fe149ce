//! A small persistent thread pool for the kernels.
//!
//! A decode step runs a few hundred matrix-vector products of 5-50 us each, so handing work to a
//! sleeping thread (a futex wake, then another to wake the caller) would cost as much as the
//! work. Here the caller publishes a job by bumping an epoch counter, runs share 0 itself, and
//! spins until the workers' pending count drops to zero; workers spin on the epoch for a while
//! after each job and only then park on a condition variable.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The most threads a pool takes (far beyond any useful count: its workers spin).
pub const MAX_THREADS: usize = 512;

/// How long an idle worker waits (spinning, then yielding) before parking.
const SPIN_FOR: Duration = Duration::from_micros(200);
/// How long a waiter busy-spins before it starts yielding its core, so that an oversubscribed
/// machine (more runnable threads than cores) still makes progress.
const PURE_SPIN: Duration = Duration::from_micros(20);

/// Spin, then spin-and-yield.
struct Backoff {
    start: Instant,
    spins: u32,
    elapsed: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            start: Instant::now(),
            spins: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Waits a little; returns the time since `new`, refreshed every 64 calls.
    fn snooze(&mut self) -> Duration {
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(64) {
            self.elapsed = self.start.elapsed();
        }
        if self.elapsed < PURE_SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        self.elapsed
    }
}

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped (SeqCst) by the caller to publish a job.
    epoch: AtomicUsize,
    /// Shares in the current job (share 0 is the caller's).
    parts: AtomicUsize,
    /// Workers that have not yet acknowledged the current epoch. Every worker acknowledges every
    /// epoch (those beyond `parts` with nothing to do), so none can lag behind and read the
    /// next job's fields while they are being written.
    pending: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleeping: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller inside `Pool::run` while it holds `busy` and no
// worker is between reading it and decrementing `pending` (the caller waits for `pending == 0`
// before returning); workers read it only after observing the new epoch (Acquire), which is
// published after the write.
unsafe impl Sync for Shared {}

/// A persistent set of worker threads for the kernels. With `threads == 1` everything runs on
/// the calling thread; otherwise the caller takes the first share and `threads - 1` workers the
/// rest. A pool serves one call at a time; concurrent callers queue.
pub struct Pool {
    threads: usize,
    shared: Option<Arc<Shared>>,
    handles: Vec<JoinHandle<()>>,
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// The calling thread only; no threads are started.
    pub const fn single() -> Pool {
        Pool {
            threads: 1,
            shared: None,
            handles: Vec::new(),
            busy: Mutex::new(()),
        }
    }

    /// `threads` in all, the calling thread included; 0 means one per available core.
    pub fn new(threads: usize) -> Result<Pool> {
        if threads > MAX_THREADS {
            return Err(Error::invalid(format!(
                "threads must be between 1 and {MAX_THREADS}, got {threads}"
            )));
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
        } else {
            threads
        };
        if threads == 1 {
            return Ok(Pool::single());
        }
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = Pool {
            threads,
            shared: Some(Arc::clone(&shared)),
            handles: Vec::with_capacity(threads - 1),
            busy: Mutex::new(()),
        };
        for index in 1..threads {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("smolgen-kernel-{index}"))
                .spawn(move || worker(&shared, index))
                .map_err(|e| Error::invalid(format!("cannot start kernel threads: {e}")))?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }

    /// A pool with one thread per available core, started on first use.
    pub fn global() -> &'static Pool {
        static GLOBAL: OnceLock<Pool> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(0).unwrap_or(Pool::single()))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0)`, ..., `f(parts - 1)`, `f(0)` on the calling thread; `parts <= threads`.
    /// A panic in any share is raised here once all shares have finished.
    pub(crate) fn run(&self, parts: usize, f: impl Fn(usize) + Sync) {
        let shared = match &self.shared {
            Some(s) if parts > 1 => s,
            _ => return (0..parts).for_each(f),
        };
        debug_assert!(parts <= self.threads);
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let job: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: the reference is only used by workers until they decrement `pending`, and the
        // `Wait` guard below blocks (also while unwinding) until `pending == 0`, so `f` outlives
        // every use; the cell is ours while `busy` is held (see `Shared`).
        unsafe {
            *shared.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job));
        }
        shared.parts.store(parts, Ordering::Relaxed);
        shared.pending.store(self.threads - 1, Ordering::Relaxed);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        if shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }

        struct Wait<'a>(&'a Shared);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let mut backoff = Backoff::new();
                while self.0.pending.load(Ordering::Acquire) != 0 {
                    backoff.snooze();
                }
                // SAFETY: no worker uses the job any more; `busy` is still held.
                unsafe { *self.0.job.get() = None };
            }
        }
        let wait = Wait(shared);
        f(0);
        drop(wait);
        if shared.panicked.swap(false, Ordering::Relaxed) {
            panic!("a kernel worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.stop.store(true, Ordering::SeqCst);
            shared.epoch.fetch_add(1, Ordering::SeqCst);
            {
                let _g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.wake.notify_all();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        // Wait for a new epoch: spin, then park.
        let mut backoff = Backoff::new();
        loop {
            let e = shared.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if backoff.snooze() < SPIN_FOR {
                continue;
            }
            let mut g = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.sleeping.fetch_add(1, Ordering::SeqCst);
            while shared.epoch.load(Ordering::SeqCst) == seen {
                g = shared.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            shared.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if index < shared.parts.load(Ordering::Relaxed) {
            // SAFETY: the epoch (Acquire) was published after the job was stored, and the
            // caller keeps it alive until we decrement `pending` below.
            let job = unsafe { *shared.job.get() };
            if let Some(job) = job {
                if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                    shared.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}
