//! `dpo-lora`: parse arguments, run the command, print the error chain on one line, exit 2 on error.

use clap::Parser;

use dpo_lora::cli::Cli;

fn main() {
    // candle 0.11's element-wise ops run on their own spinning thread pool, next to rayon's (which
    // the matrix products use). On a 2-core machine the two pools spin against each other and a
    // training step ran 4x slower (15 vs 59 tokens/s on the quick start); element-wise ops on the
    // calling thread with rayon's gemm across the cores is the fast combination. Set before any
    // candle op creates the pool; an explicit CANDLE_NUM_THREADS is respected.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // Pairs run one per core (`model::kernels::lanes`), so two threads allocate activations at once; glibc
    // gives each its own arena, where memory freed by one is not reused by the other. One arena
    // kept the peak of a 256-token SmolLM2 DPO step at 680-690 MiB where two arenas wandered
    // between 700 and 780 MiB from run to run, at the same speed (the allocations are few and
    // large, so the shared lock is not contended).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: mallopt only sets an allocator parameter; no thread has started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    dpo_lora::errors::install_panic_hook();
    let cli = Cli::parse();
    if let Err(e) = dpo_lora::cmd::run(cli) {
        eprintln!("error: {}", dpo_lora::errors::one_line(&e));
        std::process::exit(2);
    }
}
