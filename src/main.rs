//! `acf-index`: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    let cli = acf_index::cli::Cli::parse();
    std::process::exit(acf_index::cli::run(cli));
}
