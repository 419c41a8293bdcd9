//! Ctrl-C and SIGTERM end the CLI cleanly: the processes it started are
//! stopped and its unfinished output files removed, then it exits (130 for a
//! job that was interrupted, 0 for `fanout up`, whose normal end it is).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

type Cleanup = Box<dyn FnOnce() + Send>;

/// What to undo on a signal, by registration.
static CLEANUPS: Mutex<BTreeMap<u64, Cleanup>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static EXIT_CODE: AtomicI32 = AtomicI32::new(130);

/// Catches Ctrl-C and SIGTERM for the rest of the run; a signal exits with `code`.
pub fn install(code: i32) -> anyhow::Result<()> {
    EXIT_CODE.store(code, Ordering::SeqCst);
    ctrlc::set_handler(|| {
        let cleanups = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
        cleanups.into_values().for_each(|cleanup| cleanup());
        std::process::exit(EXIT_CODE.load(Ordering::SeqCst));
    })
    .map_err(|e| anyhow::anyhow!("cannot catch Ctrl-C: {e}"))
}

/// Runs `cleanup` if a signal ends the run before the returned guard is dropped.
pub fn on_signal(cleanup: impl FnOnce() + Send + 'static) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::SeqCst);
    CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()).insert(id, Box::new(cleanup));
    Guard(id)
}

/// Keeps a cleanup registered; dropping it means the work was finished or undone another way.
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}
