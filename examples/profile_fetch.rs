//! Times stage-2 row fetches from one part file: `cargo run --release --example profile_fetch -- PART N`.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: profile_fetch PART.parquet [rows]");
        std::process::exit(2);
    };
    pages(path);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let rows: Vec<usize> =
        (0..n).map(|i| i * 7 % 2000).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for _ in 0..2 {
        let start = Instant::now();
        let mut got = 0;
        let result = acf_index::storage::read_rows(std::path::Path::new(path), Some(&rows), 1024, |b| {
            got += b.len();
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        println!("{got} rows in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    }
}

/// Prints how many pages each column of row group 0 has (the offset index).
fn pages(path: &str) {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let file = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file,
        ArrowReaderOptions::new().with_page_index(true),
    )
    .unwrap();
    let m = b.metadata();
    match m.offset_index() {
        None => println!("no offset index"),
        Some(oi) => {
            for (c, col) in oi[0].iter().enumerate() {
                println!("rg0 col {c}: {} pages", col.page_locations.len());
            }
        }
    }
}
