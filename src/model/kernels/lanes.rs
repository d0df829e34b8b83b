//! Parallelism across pairs on the CPU: each core runs whole pairs (forward, reference, backward)
//! with single-threaded kernels, and a kernel goes wide only while some core has no pair of its
//! own.
//!
//! Owns: [`map`], which runs one job per item on the rayon pool (CPU) or in order (a GPU), and
//! the count of jobs running, which [`gemm_threads`] reads. Does not: split the work (the caller
//! passes whole pairs) or combine results (they come back in item order).
//!
//! Why: measured on 2 cores, a DPO step over 2 pairs as one batch whose every op is split across
//! both cores took 8.4 s (SmolLM2, 256 tokens); the same work as one pair per core, products
//! single-threaded, 6.6 s. Splitting each product and each element-wise op costs a join per op,
//! and candle's own element-wise ops run on one core while the other waits.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::backend::Backend;
use rayon::prelude::*;

/// Jobs of [`map`] running now, over the whole process.
static BUSY: AtomicUsize = AtomicUsize::new(0);

/// Counts a running job while it lives.
struct Busy;

impl Busy {
    fn enter() -> Self {
        BUSY.fetch_add(1, Ordering::SeqCst);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Threads a matrix product may split across: every thread of the pool while fewer jobs of
/// [`map`] run than there are threads (a thread is free to help), else 1.
pub(crate) fn gemm_threads() -> usize {
    let threads = rayon::current_num_threads();
    if BUSY.load(Ordering::SeqCst) < threads {
        threads
    } else {
        1
    }
}

/// `f(item)` for every item: in parallel with the CPU kernels (one job per item, each counted as
/// busy), in order with candle's ops (a GPU's kernels are already parallel, and one stream
/// serves all).
/// Results in item order; the first error is returned.
pub fn map<I, T, E, F>(be: Backend, items: Vec<I>, f: F) -> Result<Vec<T>, E>
where
    I: Send,
    T: Send,
    E: Send,
    F: Fn(I) -> Result<T, E> + Sync + Send,
{
    if be == Backend::Candle || items.len() < 2 || rayon::current_num_threads() < 2 {
        return items.into_iter().map(f).collect();
    }
    items
        .into_par_iter()
        .with_max_len(1)
        .map(|item| {
            let _busy = Busy::enter();
            f(item)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order_and_errors_surface() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let out: Result<Vec<usize>, String> =
                map(Backend::CpuKernels, (0..9).collect(), |i| Ok(i * i));
            assert_eq!(out.unwrap(), (0..9).map(|i| i * i).collect::<Vec<_>>());
            let err: Result<Vec<usize>, String> = map(Backend::CpuKernels, (0..9).collect(), |i| {
                if i == 4 {
                    Err(format!("item {i}"))
                } else {
                    Ok(i)
                }
            });
            assert_eq!(err.unwrap_err(), "item 4");
        });
    }

    #[test]
    fn products_stay_on_one_thread_while_every_thread_has_a_job() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let (_a, _b) = (Busy::enter(), Busy::enter());
            assert_eq!(gemm_threads(), 1, "two jobs on two threads leave none free");
        });
    }
}
