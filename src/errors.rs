//! How an error reads to a user: one line, the context chain joined by `: `, each cause said once.
//! `main` prints every failure this way (exit 2); code that folds a cause into a message of its
//! own (a failed checkpoint naming the last good one) uses the same.

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
}
