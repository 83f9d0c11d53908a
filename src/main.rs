//! The `vigil` command: parse, dispatch, map errors to exit codes.

use clap::Parser;

fn main() {
    let cli = vigil::cli::Cli::parse();
    if let Err(e) = vigil::cli::run(cli) {
        eprintln!("error: {:#}", e.error);
        std::process::exit(e.code);
    }
}
