//! Argument definitions. Every subcommand's `--help` explains what it does and why.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::device::DeviceChoice;

/// Text search over satellite and aerial image archives with the ACF cross-modal
/// retrieval model (Yang et al., Remote Sensing 2025).
#[derive(Debug, Parser)]
#[command(name = "acf-index", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr: `text` for people, `json` for cron logs.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace). ACF_LOG overrides (tracing filter syntax).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--nodes-dtype`: storage type of the region features.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NodesDtypeArg {
    /// IEEE half precision (default: half the size, ranking unchanged in our tests).
    F16,
    /// Single precision.
    F32,
}

impl From<NodesDtypeArg> for crate::storage::NodesDtype {
    fn from(a: NodesDtypeArg) -> Self {
        match a {
            NodesDtypeArg::F16 => Self::F16,
            NodesDtypeArg::F32 => Self::F32,
        }
    }
}

/// `--format` of `embed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmbedFormat {
    /// One JSON object.
    Json,
    /// A DuckDB array literal.
    Sql,
}

/// `--format` of `query`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// rank, S, sim_g, scene, window, lon/lat of the centre.
    Table,
    /// One JSON object per hit per line.
    Json,
    /// Comma-separated, with a header line.
    Csv,
    /// A GeoJSON FeatureCollection of the hits' footprints.
    Geojson,
}

impl From<FormatArg> for crate::search::output::Format {
    fn from(a: FormatArg) -> Self {
        match a {
            FormatArg::Table => Self::Table,
            FormatArg::Json => Self::Json,
            FormatArg::Csv => Self::Csv,
            FormatArg::Geojson => Self::Geojson,
        }
    }
}

/// `--correction`: how the global similarity corrects the attention.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CorrectionArg {
    /// softmax(λ · (sim_g − p) · s̄).
    Logits,
    /// softmax(λ · (1 + sim_g − p) · s̄): λ where sim_g = p, sharper above, flatter below.
    Scaled,
    /// The printed form, which cancels: plain softmax(λ · s̄).
    Off,
}

impl From<CorrectionArg> for crate::model::config::Correction {
    fn from(a: CorrectionArg) -> Self {
        match a {
            CorrectionArg::Logits => Self::Logits,
            CorrectionArg::Scaled => Self::Scaled,
            CorrectionArg::Off => Self::Off,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report versions, CUDA devices, CPU threads and GDAL drivers of this build and machine.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create and inspect model directories (config.json, vocab.json, model.safetensors, MODEL_CARD.md).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Rank image files (JPEG, PNG, TIFF) against a caption with the full ACF score S(I,T).
    ///
    /// Each image is resized to the model's input size and encoded; the caption is tokenised
    /// with the model's vocabulary (unknown words are reported; a caption with no known
    /// word is an error). Prints rank, S, the global similarity sim_g, and the file.
    Rank {
        /// The caption, e.g. "tennis court near a football field".
        #[arg(long, short)]
        text: String,
        /// Image files to rank.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train a model on RSICD-style datasets (Adam, the config's loss, checkpoints, resume).
    ///
    /// The loss is the config's `loss` block: the paper's hinge triplet loss or InfoNCE over
    /// the batch (`negatives: "softmax"`, what the default model uses). The vocabulary is built
    /// from the training captions (or taken from --init-from). Progress shows loss, images/s and
    /// ETA; OUT/metrics.jsonl logs every batch and epoch; validation mR after each epoch keeps
    /// the best model in OUT (a normal model directory); OUT/checkpoint holds the latest state
    /// with optimiser moments. Ctrl-C saves a checkpoint at the next batch; `--resume`
    /// continues exactly where a run stopped, also after a kill. One run at a time per OUT:
    /// a second one into a folder another is writing is refused.
    Train(TrainArgs),
    /// Evaluate a model: R@1/5/10 for sentence and image retrieval and mR (paper's Table 4).
    Eval(EvalArgs),
    /// Index scenes into a GeoParquet chip catalog (run it nightly; reruns are incremental).
    ///
    /// Walks the given files and folders (recursively, in a fixed order) and --from-list,
    /// reads every scene with GDAL in 224×224 windows, encodes each chip with the model into
    /// 49 region features and one global vector, and writes one GeoParquet 1.1 file per scene
    /// under OUT/parts with each chip's footprint in CRS84. Scenes already indexed with the
    /// same fingerprint (path, size, mtime; --verify adds a content hash) and model are
    /// skipped; changed scenes are replaced. Killing the run at any moment leaves the index
    /// readable; rerunning completes it. Exit codes: 0 all scenes ok, 3 some scenes failed
    /// (each reported on one line), 1 nothing could run, 130 interrupted.
    Index(IndexArgs),
    /// Search an index with text: the best-matching chips, ranked by the full ACF score.
    ///
    /// Words outside the model's vocabulary are read as known ones (same stem, WordNet
    /// synonym, compound head, broader term) and every such reading is shown; --strict
    /// refuses them instead, and a query left with only stop words is refused. Stage 1 compares the query's global vector
    /// with every chip's (reading only that column) and keeps --candidates chips; stage 2
    /// reads their region features and ranks them by S (attention correction and filtering,
    /// both directions, plus the global term). --exhaustive scores every chip with S.
    /// Searches run on the CPU in plain Rust (no libtorch is loaded: a query starts in
    /// milliseconds); --device is accepted and not needed.
    Query(QueryArgs),
    /// Serve a search page and a JSON/GeoJSON API over one index, warm.
    ///
    /// Holds the model, every chip's global vector and the part files' metadata in memory,
    /// so a search reads only its candidates' region features. Scenes that a nightly `index`
    /// run publishes are picked up without a restart (a search sees the index before or after
    /// a scene, never half). Read-only. Binds 127.0.0.1 unless --addr says otherwise.
    /// Endpoints: / (page), /api/search?q=…&k=&candidates=&bbox=&since=&until=&scene=&collection=&format=json|geojson,
    /// /api/chips/ID/thumbnail.png, /api/info. Stops on SIGINT/SIGTERM after the requests in flight.
    Serve(ServeArgs),
    /// Merge many small part files into fewer large ones (crash-safe).
    ///
    /// `index` writes one part file per scene, and every query pays a cost per file (footer,
    /// page index, one open), so nightly indexing makes queries slower without bound. Run
    /// `compact` after the nightly `index` run (it takes the writer lock: it refuses to run
    /// during one, and an `index` run refuses to start during it). Readers never see a chip
    /// twice or not at all; a killed compaction leaves a correct index.
    Compact {
        /// Index directory.
        #[arg(env = "ACF_INDEX")]
        index: PathBuf,
        /// Size merged files grow to, in MiB (parts of half of it or more are left alone).
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        target_mib: u64,
        /// Only say what would be merged.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a query's global vector for engines that run stage 1 themselves (DuckDB, Spark).
    ///
    /// `--format json` (default): {"text", "tokens", "unknown", "global": [D floats]};
    /// `--format sql`: a DuckDB literal `[…]::FLOAT[512]` to compare with
    /// `global::FLOAT[512]` by `array_inner_product` (see examples/readers/duckdb_read.py).
    Embed {
        /// The query, e.g. "tennis court near football field".
        text: String,
        /// Output: json or sql.
        #[arg(long, value_enum, default_value_t = EmbedFormat::Json)]
        format: EmbedFormat,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Rank given chips by the full ACF score: stage 2 after a stage 1 run elsewhere.
    ///
    /// FILE holds chip ids, one per line (a CSV's first column; a header line `chip_id` and
    /// # comments are skipped; `-` reads stdin), e.g. the top N of a DuckDB query over
    /// `parts/*.parquet` with the vector of `acf-index embed`. Prints like `query`.
    Rerank {
        /// The query, e.g. "tennis court near football field".
        text: String,
        /// Index directory.
        #[arg(long, env = "ACF_INDEX")]
        index: PathBuf,
        /// The candidate chip ids.
        #[arg(long)]
        chips: PathBuf,
        /// Results.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        top_k: u32,
        /// Refuse unknown query words.
        #[arg(long)]
        strict: bool,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Show what an index holds: scenes, chips, model, size per chip, CRSs, failures.
    Info {
        /// Index directory.
        index: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks (print throughput, assert nothing).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a shell completion script, e.g. `acf-index completions bash > /etc/bash_completion.d/acf-index`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `acf-index man > /usr/local/share/man/man1/acf-index.1`.
    Man,
}

/// Arguments of `acf-index train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset JSON(s) in RSICD format; several are combined.
    #[arg(long = "dataset", required = true)]
    pub datasets: Vec<PathBuf>,
    /// Image folder (default: images/ beside each JSON).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// A preset (pvig-nano, pvig-ti) or a path to a config.json.
    #[arg(long, default_value = "pvig-nano")]
    pub config: String,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in OUT/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start from a trained model directory's weights and vocabulary (fine-tuning):
    /// a fresh optimiser and the schedule of --config, whose architecture must match.
    #[arg(long, value_name = "MODEL_DIR", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Override training.epochs.
    #[arg(long)]
    pub epochs: Option<i64>,
    /// Override training.batch_size.
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Override training.learning_rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override training.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override scoring.correction.
    #[arg(long, value_enum)]
    pub correction: Option<CorrectionArg>,
    /// Skip (and count) unreadable images and images without captions instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
    /// Validation images per dataset (the first N of each val split; 0 = all).
    #[arg(long, default_value_t = 300)]
    pub val_images: usize,
    /// Minutes between mid-epoch checkpoints.
    #[arg(long, default_value_t = 10.0)]
    pub checkpoint_minutes: f64,
    /// Stop after this many epochs in this run (resume later to continue the schedule).
    #[arg(long)]
    pub stop_after: Option<i64>,
    /// Also keep every epoch's model in OUT/epochs/epoch-NNN/ (a loadable model directory
    /// each, ~22 MB for pvig-nano), to choose one afterwards with `eval` on all val images.
    /// OUT itself always holds the epoch with the best mean validation mR.
    #[arg(long)]
    pub keep_epochs: bool,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Arguments of `acf-index index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Scene files or folders (any raster GDAL opens; folders are walked recursively,
    /// skipping hidden files and sidecars such as .aux.xml, .ovr, .tfw).
    pub paths: Vec<PathBuf>,
    /// Index directory (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// A file with one GDAL path per line (/vsis3/…, /vsicurl/…, VRTs, local files; # comments).
    #[arg(long)]
    pub from_list: Option<PathBuf>,
    /// Only files whose path matches one of these globs (e.g. '*.tif'); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Skip scenes whose path matches one of these globs; repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Pixels between chip origins; smaller than 224 makes chips overlap. With --gsd, pixels
    /// at that resolution.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(1..))]
    pub stride: u32,
    /// Ground sample distance of chips in metres per pixel, e.g. 1: each chip covers
    /// 224 × METRES of ground, read from a window of 224 · METRES / native scene pixels and
    /// resampled (averaged when coarser, bilinear when finer; at most 64× down, 8× up).
    /// Default: every scene at its native resolution (a warning names scenes far outside the
    /// model's training range). Fixed for an index, like --stride.
    #[arg(long, value_name = "METRES", value_parser = parse_gsd)]
    pub gsd: Option<f64>,
    /// Bands read as R,G,B (1-based), e.g. 4,3,2; one number is replicated. Default: the
    /// bands whose colour interpretation is red/green/blue, else the first three.
    #[arg(long, value_delimiter = ',')]
    pub bands: Option<Vec<usize>>,
    /// Map MIN..MAX to 0..255 for non-8-bit scenes instead of the per-scene 2–98 % stretch.
    #[arg(long, value_parser = parse_scale)]
    pub scale: Option<(f64, f64)>,
    /// Chips with a smaller fraction of valid pixels (nodata, mask, alpha, NaN) are counted
    /// but not encoded.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    pub min_valid: f32,
    /// Chips per encoder batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Scenes read at the same time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub readers: u32,
    /// Storage type of the region features (new index: f16).
    #[arg(long, value_enum)]
    pub nodes_dtype: Option<NodesDtypeArg>,
    /// Also compare content hashes (sha256) to decide whether a scene changed.
    #[arg(long)]
    pub verify: bool,
    /// The index was built with another model: delete it and start a new one with this model.
    #[arg(long, conflicts_with = "shard")]
    pub new_model: bool,
    /// A STAC Catalog, Collection, ItemCollection or Item (local, s3:// or any GDAL path) whose
    /// items are indexed: each item's visual asset, or its red/green/blue assets (eo:bands
    /// common names) combined by a VRT; item id, collection and datetime go into the catalog.
    /// Repeatable.
    #[arg(long, value_name = "PATH_OR_URL")]
    pub stac: Vec<String>,
    /// Remove from the index the scenes under the given folders (or the given files) whose
    /// source file no longer exists: their records and chips.
    #[arg(long)]
    pub prune: bool,
    /// Take only shard I of N (0-based) of the scene list, e.g. 3/8: N workers can index into
    /// one directory side by side (Kubernetes indexed Job, Slurm array).
    #[arg(long, value_parser = crate::index::parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Print the end-of-run summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_gsd(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 && m <= 10_000.0 => Ok(m),
        _ => Err(format!(
            "'{text}' is not a ground sample distance in metres (a number above 0, at most 10000)"
        )),
    }
}

fn parse_scale(text: &str) -> Result<(f64, f64), String> {
    let (a, b) = text.split_once(',').ok_or_else(|| format!("'{text}' is not MIN,MAX"))?;
    let (lo, hi): (f64, f64) = (
        a.trim().parse().map_err(|_| format!("'{a}' is not a number"))?,
        b.trim().parse().map_err(|_| format!("'{b}' is not a number"))?,
    );
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return Err(format!("--scale {lo},{hi}: MAX must be greater than MIN"));
    }
    Ok((lo, hi))
}

/// Arguments of `acf-index query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The query, e.g. "tennis court near football field".
    #[arg(required_unless_present = "queries")]
    pub text: Option<String>,
    /// Index directory (written by `acf-index index`).
    #[arg(long, env = "ACF_INDEX")]
    pub index: PathBuf,
    /// A file with one query per line (blank lines and # comments skipped); the queries share
    /// one scan of the index.
    #[arg(long, conflicts_with = "text")]
    pub queries: Option<PathBuf>,
    /// Results per query.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: u32,
    /// Chips kept by stage 1 (global similarity) for stage 2 (full score).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub candidates: u32,
    /// Only chips whose footprint intersects MINX,MINY,MAXX,MAXY (CRS84 lon/lat).
    #[arg(long, value_parser = crate::search::filters::parse_bbox, allow_hyphen_values = true)]
    pub bbox: Option<[f64; 4]>,
    /// Only chips of scenes whose path matches this glob (e.g. '*LC08*'); repeatable.
    #[arg(long)]
    pub scene: Vec<String>,
    /// Only chips of scenes from this STAC collection (`index --stac`); repeatable.
    #[arg(long)]
    pub collection: Vec<String>,
    /// Only chips acquired at or after this time (2020-05-18 or RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub since: Option<i64>,
    /// Only chips acquired at or before this time (a date means the end of that day).
    #[arg(long, value_parser = parse_until)]
    pub until: Option<i64>,
    /// Score every chip with S (slow on big indexes; for verification and small ones).
    #[arg(long)]
    pub exhaustive: bool,
    /// Refuse a query that has a word outside the model's vocabulary, instead of reading it
    /// as a known word (morphology, WordNet synonyms and broader terms; see README).
    #[arg(long)]
    pub strict: bool,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Also write a self-contained HTML page with a thumbnail of each hit cut from its scene.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Also write each hit's chip as a PNG into this folder.
    #[arg(long)]
    pub thumbnails: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `acf-index serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Index directory (from `acf-index index`).
    #[arg(long, env = "ACF_INDEX")]
    pub index: PathBuf,
    /// Address to listen on. Anything but 127.0.0.1/::1 exposes the index to the network:
    /// put an authenticating proxy in front.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Seconds between looks for newly published scenes.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub refresh: f64,
    /// Largest number of results a request may ask for.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_k: u32,
    /// Largest stage-1 candidate count a request may ask for.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_candidates: u32,
    /// Searches run at once (more wait their turn).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrent: u32,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.05..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds between 0.05 and 86400")),
    }
}

fn parse_instant(text: &str) -> Result<i64, String> {
    crate::raster::timestamp::parse_since(text)
}

fn parse_until(text: &str) -> Result<i64, String> {
    crate::raster::timestamp::parse_until(text)
}

/// Arguments of `acf-index eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset JSON in RSICD format.
    #[arg(long, required = true)]
    pub dataset: Vec<PathBuf>,
    /// Image folder (default: images/ beside the JSON).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Also evaluate the inference-time ablations M3 (no correction), M4 (no filtering),
    /// M5 (no global component); M1 (GAT) and M2 (fusion) change the architecture and need
    /// a model trained with them switched off.
    #[arg(long)]
    pub ablate: bool,
    /// Also evaluate the model with one scoring setting swept (the paper's Tables 1–3):
    /// `p=0.1,0.2,0.3`, `q=0,0.1,0.2`, `lambda=5,9,15`, `global_weight=1,2,3`, `correction=logits,scaled,off`; repeatable.
    #[arg(long, value_name = "NAME=V1,V2,…", value_parser = crate::train::evaluate::parse_sweep)]
    pub sweep: Vec<crate::train::evaluate::Sweep>,
    /// Only the first N images of the split.
    #[arg(long, conflicts_with = "sample")]
    pub max_images: Option<usize>,
    /// Only N images spread evenly over the split (every len/N-th). The datasets list their
    /// images class by class, so unlike --max-images this keeps every class in a subset.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub sample: Option<u32>,
    /// Encode each image as this many views averaged (1, 2 = plus mirror, 4 = rotations,
    /// 8 = rotations × mirror) instead of the model's `image.test_time_views`: measures the
    /// setting before it goes into a config (an index uses the config's).
    #[arg(long, value_parser = parse_views)]
    pub views: Option<u32>,
    /// Also write the paper's visual retrieval analysis (Fig. 7) as one self-contained HTML
    /// page: for --figure-count captions of the split their top-5 images, and for as many
    /// images their top-5 captions, ranked by the model's full S, true matches marked.
    #[arg(long, value_name = "PAGE.html")]
    pub figure: Option<PathBuf>,
    /// Caption queries and image queries on the --figure page (spread evenly over the split).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub figure_count: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where the model comes from and where it runs.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory (config.json, vocab.json, model.safetensors).
    #[arg(long, short, default_value = "models/default", env = "ACF_MODEL")]
    pub model: PathBuf,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Create a fresh, untrained model directory from a config preset and dataset captions.
    ///
    /// The vocabulary is built from the captions of the given RSICD-style dataset JSON
    /// files (images[].sentences[].raw), words seen fewer than text.vocab_min_count times
    /// map to <unk>. Weights are initialised with --seed.
    Init {
        /// A preset (pvig-nano, pvig-ti) or a path to a config.json.
        #[arg(long, default_value = "pvig-nano")]
        config: String,
        /// Dataset JSON(s) whose captions form the vocabulary.
        #[arg(long = "vocab-from", required = true)]
        vocab_from: Vec<PathBuf>,
        /// Output model directory (must not exist or be empty unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Random seed for the initial weights.
        #[arg(long, default_value_t = 42)]
        seed: i64,
        /// Replace an existing model directory as a whole (refused when it holds other files).
        #[arg(long)]
        force: bool,
    },
    /// Compute a model's hubness prior (prior.safetensors) from dataset captions.
    ///
    /// t̄ is the mean global vector of every caption of --split, encoded by the model. With
    /// `scoring.hubness_prior = h > 0` in config.json, every score becomes S − h · (v_g · t̄):
    /// images that match captions in general ("hubs") stop crowding the top of every query.
    /// The file sits beside the weights and records their fingerprint: indexes stay valid,
    /// and a prior computed with other weights is refused. Choose h with
    /// `eval --sweep hubness_prior=0,1,2` on a validation split.
    ///
    /// It also keeps a bank of --bank caption vectors: with `scoring.hubness_sharpness = β > 0`
    /// the prior subtracts h · (1/β) log mean_k exp(β · v_g · t_k) over the bank instead (an
    /// inverted softmax: each image is compared with the captions near it, not with their
    /// overall mean); choose β with `eval --sweep hubness_sharpness=…`.
    Calibrate {
        #[command(flatten)]
        model: ModelArgs,
        /// Dataset JSON(s) in RSICD format whose captions are averaged (the training data).
        #[arg(long, required = true)]
        dataset: Vec<PathBuf>,
        /// Split whose captions are averaged.
        #[arg(long, default_value = "train")]
        split: String,
        /// Captions kept as the bank that `scoring.hubness_sharpness` > 0 scores against
        /// (drawn at random, fixed seed; 2 KiB each at D = 512); 0 writes t̄ alone.
        #[arg(long, default_value_t = 2048)]
        bank: usize,
    },
    /// Average several models of one architecture and vocabulary into a new model directory.
    ///
    /// Every weight and BatchNorm statistic becomes the uniform mean of the sources' (checkpoint
    /// averaging, as in SWA: e.g. the last epochs of one `train --keep-epochs` run). The new
    /// model takes the first source's config.json (scoring included) and vocabulary; a source
    /// with another architecture or vocabulary is refused. Has no hubness prior: run
    /// `model calibrate` if the config weighs one. Check it with `eval --split val`.
    Average {
        /// Model directories to average (two or more).
        #[arg(required = true, num_args = 2..)]
        models: Vec<PathBuf>,
        /// Output model directory (must not exist or be empty unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing model directory as a whole (refused when it holds other files).
        #[arg(long)]
        force: bool,
    },
    /// Show a model's config, size, vocabulary and fingerprint, after checking that its parts agree.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Query stage-1 and stage-2 times and peak RSS on synthetic indexes (real schema,
    /// random unit vectors, Float16 nodes), cold and warm. The indexes are built once under
    /// --dir (100,000 chips take about 5 GB) and reused.
    Query {
        /// Index sizes in chips.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        chips: Vec<usize>,
        /// Where the synthetic indexes live.
        #[arg(long, default_value = "target/bench-query")]
        dir: PathBuf,
        /// Stage-1 candidates (N).
        #[arg(long, default_value_t = 1000)]
        candidates: usize,
        /// Warm runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        warm_runs: usize,
        /// The query text.
        #[arg(long, default_value = "tennis court near football field")]
        query: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Also time stage 1 as `serve` runs it over this many synthetic vectors held only in
        /// memory (e.g. 1000000: sizes whose part files would not fit the disk).
        #[arg(long)]
        stage1_chips: Option<usize>,
    },
    /// Checks that an accelerator computes what the CPU does with the same weights: image
    /// features (mean 1 − cos ≤ 1e-3 in float32, the worst chip and bfloat16 reported), word
    /// features and scores S,
    /// and one training step (loss, gradient norm, direction of the update). Exit code 1 when
    /// a check fails.
    Devices(DevicesArgs),
    /// End-to-end `index` chips/s and peak RSS on one scene, next to the encoder alone on
    /// chips of that scene (same model, float32, batch). Run once per scene: peak RSS is the
    /// process's.
    Index {
        /// The scene to index (into a temporary directory).
        scene: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// Chips per encoder batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Scenes read at the same time.
        #[arg(long, default_value_t = 2)]
        readers: usize,
        /// Minimum seconds for the encoder-only measurement.
        #[arg(long, default_value_t = 5.0)]
        min_seconds: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Image encoder chips/s (at each --batches size), text captions/s, and scoring pairs/s
    /// for one caption against 10,000 stored chips, for each config on the chosen device.
    Model {
        /// Configs to measure (presets or config.json paths).
        #[arg(long, value_delimiter = ',', default_value = "pvig-nano,pvig-ti")]
        configs: Vec<String>,
        /// Image encoder batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "16,64", value_parser = clap::value_parser!(i64).range(1..=4096))]
        batches: Vec<i64>,
        /// auto (CUDA when available), cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: DeviceChoice,
        /// Minimum seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        min_seconds: f64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `acf-index bench devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// The device compared against the CPU: cuda or cuda:N (cpu compares the CPU with itself).
    #[arg(long, default_value = "cuda")]
    pub device: DeviceChoice,
    /// Model directory whose weights are compared (config.json, vocab.json, model.safetensors).
    #[arg(long, short, default_value = "models/default", env = "ACF_MODEL", conflicts_with = "config")]
    pub model: PathBuf,
    /// Compare a freshly initialised model of this preset or config.json instead (seed 0).
    #[arg(long)]
    pub config: Option<String>,
    /// Chips and captions in the compared batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i64).range(2..=256))]
    pub batch: i64,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// A fraction between 0 and 1 (`--min-valid`).
fn parse_fraction(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{s} is not between 0 and 1")) }
}

/// `--views`: one of the counts `model::views` knows.
fn parse_views(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|&n| crate::model::views::transforms(n).is_some())
        .ok_or_else(|| format!("'{text}': 1, 2, 4 or 8 views"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_until_date_means_the_whole_day() {
        let day = parse_instant("2020-05-18").unwrap();
        assert_eq!(parse_until("2020-05-18").unwrap(), day + 86_400_000_000 - 1);
        let noon = parse_instant("2020-05-18T12:00:00Z").unwrap();
        assert_eq!(parse_until("2020-05-18T12:00:00Z").unwrap(), noon);
        assert!(parse_until("2020-05-18").unwrap() > noon, "a chip at noon is within --until DATE");
    }

    #[test]
    fn fractions_are_between_0_and_1() {
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert!(parse_fraction("1.5").unwrap_err().contains("between 0 and 1"));
        assert!(parse_fraction("x").is_err());
    }
}
