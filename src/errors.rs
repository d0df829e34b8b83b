//! How an error reads to a user: one line, the context chain joined by `: `, each cause said once.
//! `main` prints every failure this way (exit 2); code that folds a cause into a message of its
//! own (a failed checkpoint naming the last good one) uses the same. And [`contain`]: a panic
//! inside a dependency that reads untrusted input (the Parquet reader) becomes an error, without
//! the panic's own report on stderr.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while [`contain`] runs on this thread: a panic here is reported by its caller.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Put a panic hook in front of the current one (the standard report, or a fuzzer's abort) that
/// stays silent for panics inside [`contain`], which become errors; every other panic goes on to
/// the hook before. Called by `main` and the fuzz targets; once per process.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                before(info)
            }
        }));
    });
}

/// Run `f`, a call into a dependency given untrusted input; a panic in it (an `unwrap` on a
/// corrupt field, a capacity overflow from a size read from the file) is returned as `Err` with
/// its message instead of unwinding out of dpo-lora.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = CONTAINED.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    r.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the reader failed".into())
    })
}

/// An error as the one line a user sees: its context chain joined by `: `, newlines folded, and a
/// cause left out when the text before it already says it (an I/O error that a library wraps and
/// also reports as its source would otherwise be printed twice).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string().replace('\n', " ");
        if c.is_empty() || msg.contains(&c) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&c);
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let io = std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "No space left on device (os error 28)",
        );
        #[derive(Debug, thiserror::Error)]
        #[error("cannot write: {0}")]
        struct Wrapped(#[source] std::io::Error);
        let e = anyhow::Error::new(Wrapped(io)).context("runs/x/checkpoints/step-000004");
        assert_eq!(
            super::one_line(&e),
            "runs/x/checkpoints/step-000004: cannot write: No space left on device (os error 28)"
        );
        let e = anyhow::anyhow!("inner\nline").context("outer");
        assert_eq!(super::one_line(&e), "outer: inner line");
    }

    #[test]
    fn a_contained_panic_is_an_error_with_its_message() {
        super::install_panic_hook();
        let r: Result<(), String> = super::contain(|| panic!("corrupt footer"));
        assert_eq!(r, Err("corrupt footer".to_string()));
        assert_eq!(super::contain(|| 7), Ok(7));
        // Outside `contain` a panic still unwinds as before.
        assert!(std::panic::catch_unwind(|| panic!("not contained")).is_err());
    }
}
