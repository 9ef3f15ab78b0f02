//! End-to-end tests of the `acf-index` command line, run against the built binary.
//! One test binary (ripgrep style) so that it is linked once; `util` holds the helpers.

mod util;

mod cli_compact;
mod cli_doctor;
mod cli_faults;
mod cli_front;
mod cli_index;
mod cli_model;
mod cli_query;
mod cli_rank;
mod cli_readers;
mod cli_s3;
mod cli_serve;
mod cli_stac;
mod cli_usage;
