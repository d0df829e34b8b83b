//! `dpo-lora`: parse arguments, run the command, print the error chain on one line, exit 2 on error.

use clap::Parser;

use dpo_lora::cli::Cli;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = dpo_lora::cmd::run(cli) {
        // One line: the whole context chain, newlines folded.
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
}
