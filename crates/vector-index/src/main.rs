//! The `vector-index` binary: `vector-index bench` builds an index over a data set and
//! measures it the ann-benchmarks way: exact ground truth, then for each `ef` recall@k, QPS
//! and per-query latency, plus build time and resident memory.
//!
//! ```text
//! vector-index bench --data FILE.npy|FILE.fvecs|synthetic:N,DIM [--queries 1000] [--k 10]
//!     [--ef 16,32,64,128,256] [--metric l2|cosine] [--threads T] [--json FILE] [--seed S]
//!     [--m M] [--ef-construction E] [--query-file FILE.npy|FILE.fvecs]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use vector_index::data::{self, DataSource, Dataset};
use vector_index::params::MAX_EF;
use vector_index::recall::{ground_truth, rss_bytes, sweep, SweepPoint};
use vector_index::{Index, IndexParams, Metric};

/// Most threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// Rows handed to `Index::add_batch` at a time (bounds the copy made for each call).
const BUILD_BATCH_ROWS: usize = 10_000;

#[derive(Debug, Parser)]
#[command(
    name = "vector-index",
    version,
    about = "HNSW vector index over hnsw_rs that never panics, with recall measurement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an index over a data set and measure recall@k, QPS and latency for each ef.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// The vectors: FILE.npy (2-D float32), FILE.fvecs, or synthetic:N,DIM (seeded clusters).
    #[arg(long, value_name = "FILE.npy|FILE.fvecs|synthetic:N,DIM")]
    data: DataSource,

    /// Queries to run. From a file, the last this many rows are held out of the index as
    /// queries (unless --query-file is given); synthetic queries come from the data's mixture.
    #[arg(long, default_value_t = 1000)]
    queries: usize,

    /// Take queries from this .npy or .fvecs file (its first --queries rows) instead.
    #[arg(long, value_name = "FILE")]
    query_file: Option<PathBuf>,

    /// Neighbours per query; recall is recall@k.
    #[arg(long, default_value_t = 10)]
    k: usize,

    /// Comma-separated ef values to sweep (search candidate list sizes).
    #[arg(long, value_name = "EF,EF,...", default_value = "16,32,64,128,256", value_parser = parse_ef_list)]
    ef: EfList,

    /// Distance: l2 or cosine.
    #[arg(long, default_value = "l2")]
    metric: Metric,

    /// Search threads (queries run concurrently on this many); default: all cores.
    #[arg(long)]
    threads: Option<usize>,

    /// Also write every result as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Seed of the synthetic data and queries.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Maximum connections per node (default: the index's, 16).
    #[arg(long)]
    m: Option<usize>,

    /// Candidate list size while building (default: the index's, 200).
    #[arg(long)]
    ef_construction: Option<usize>,
}

/// The `--ef` list, parsed and checked.
#[derive(Debug, Clone)]
struct EfList(Vec<usize>);

fn parse_ef_list(text: &str) -> Result<EfList, String> {
    let expected =
        format!("expected comma-separated whole numbers from 1 to {MAX_EF}, like 16,32,64,128,256");
    let mut efs = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        match part.parse::<usize>() {
            Ok(ef) if (1..=MAX_EF).contains(&ef) => efs.push(ef),
            Ok(ef) => return Err(format!("ef {ef} is out of range; {expected}")),
            Err(_) if part.is_empty() => {
                return Err(format!(
                    "the ef list {text:?} has an empty entry; {expected}"
                ))
            }
            Err(_) => return Err(format!("ef {part:?} is not a whole number; {expected}")),
        }
    }
    Ok(EfList(efs))
}

/// Everything one `bench` run measured; written by `--json`.
#[derive(Debug, Serialize)]
struct BenchReport {
    /// The `--data` value.
    data: String,
    /// Vectors in the index.
    rows: usize,
    /// Components per vector.
    dim: usize,
    /// Queries run at each ef.
    queries: usize,
    /// Where the queries came from.
    query_source: String,
    metric: Metric,
    k: usize,
    m: usize,
    ef_construction: usize,
    threads: usize,
    seed: u64,
    load_s: f64,
    build_s: f64,
    build_points_per_s: f64,
    ground_truth_s: f64,
    /// Resident memory after loading the data and queries (before the index).
    rss_after_load_bytes: Option<u64>,
    /// Resident memory after building the index.
    rss_after_build_bytes: Option<u64>,
    /// Searches the index answered from its graph, exactly (small index), and exactly after
    /// the graph came up short, over the whole sweep.
    graph_searches: u64,
    exact_searches: u64,
    fallbacks: u64,
    sweep: Vec<SweepPoint>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Bench(args) => bench(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the context chain on one line: "loading --data x.npy: cannot read …".
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    ensure!(args.k >= 1, "--k {}: expected k >= 1", args.k);
    ensure!(
        args.queries >= 1,
        "--queries {}: expected at least 1 query",
        args.queries
    );
    ensure!(
        !args.ef.0.is_empty(),
        "--ef is empty: expected at least one ef"
    );
    let threads = match args.threads {
        Some(t) => {
            ensure!(
                (1..=MAX_THREADS).contains(&t),
                "--threads {t}: expected 1 to {MAX_THREADS}"
            );
            t
        }
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // m and ef_construction do not depend on the dimension: check them before loading data.
    let mut params = IndexParams::new(1, args.metric);
    if let Some(m) = args.m {
        params.m = m;
    }
    if let Some(efc) = args.ef_construction {
        params.ef_construction = efc;
    }
    params.validate().context("invalid index parameters")?;
    let efs = &args.ef.0;
    let ef_text: Vec<String> = efs.iter().map(|e| e.to_string()).collect();
    println!(
        "vector-index bench: data {}, seed {}, metric {}, k {}, ef {}, threads {threads}",
        args.data,
        args.seed,
        args.metric,
        args.k,
        ef_text.join(",")
    );

    // Data and queries.
    let started = Instant::now();
    let (base, queries, query_source) = load_data(&args)?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_after_load_bytes = rss_bytes();
    println!(
        "data:    {} × {} ({}), loaded in {load_s:.2} s",
        base.len(),
        base.dim,
        args.data
    );
    println!("queries: {} ({query_source})", queries.len());

    // Index.
    params.dim = base.dim;
    let index = Index::new(params.clone()).context("invalid index parameters")?;
    let started = Instant::now();
    build(&index, &base)?;
    let build_s = started.elapsed().as_secs_f64();
    let build_points_per_s = if build_s > 0.0 {
        base.len() as f64 / build_s
    } else {
        0.0
    };
    let rss_after_build_bytes = rss_bytes();
    println!(
        "build:   {build_s:.2} s, {build_points_per_s:.0} points/s (m {}, ef_construction {}), RSS {} (after load: {})",
        params.m,
        params.ef_construction,
        megabytes(rss_after_build_bytes),
        megabytes(rss_after_load_bytes)
    );

    // Ground truth.
    let started = Instant::now();
    let truth = ground_truth(&base, &queries, args.k, args.metric, threads)
        .context("computing the ground truth")?;
    let ground_truth_s = started.elapsed().as_secs_f64();
    println!("truth:   exact, {ground_truth_s:.2} s on {threads} thread(s)");

    // One probe search per ef, so that an error is reported, not counted as a miss.
    for &ef in efs {
        index
            .search(queries.row(0), args.k, Some(ef), &[])
            .with_context(|| format!("searching with ef {ef} and k {}", args.k))?;
    }
    let before = index.stats();
    let curve = sweep(&index, &queries, &truth, args.k, efs, threads);
    let after = index.stats();

    println!();
    println!(
        "{:>6}  {:>9}  {:>10}  {:>9}  {:>9}  {:>9}",
        "ef",
        format!("recall@{}", args.k),
        "QPS",
        "p50 µs",
        "p95 µs",
        "p99 µs"
    );
    for p in &curve {
        println!(
            "{:>6}  {:>9.4}  {:>10.1}  {:>9.1}  {:>9.1}  {:>9.1}",
            p.ef, p.recall, p.qps, p.p50_us, p.p95_us, p.p99_us
        );
    }
    let fallbacks = after.fallbacks.saturating_sub(before.fallbacks);
    let exact_searches = after.exact_searches.saturating_sub(before.exact_searches);
    if fallbacks > 0 || exact_searches > 0 {
        println!(
            "note: {exact_searches} search(es) were answered exactly (index below exact_below) and {fallbacks} fell back to exact search"
        );
    }

    let report = BenchReport {
        data: args.data.to_string(),
        rows: base.len(),
        dim: base.dim,
        queries: queries.len(),
        query_source,
        metric: args.metric,
        k: args.k,
        m: params.m,
        ef_construction: params.ef_construction,
        threads,
        seed: args.seed,
        load_s,
        build_s,
        build_points_per_s,
        ground_truth_s,
        rss_after_load_bytes,
        rss_after_build_bytes,
        graph_searches: after.graph_searches.saturating_sub(before.graph_searches),
        exact_searches,
        fallbacks,
        sweep: curve,
    };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the results")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the results to {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// Loads the data set and its queries; the third value says where the queries came from.
fn load_data(args: &BenchArgs) -> Result<(Dataset, Dataset, String)> {
    let base = data::load(&args.data, args.seed)
        .with_context(|| format!("loading --data {}", args.data))?;
    if let Some(path) = &args.query_file {
        let all = data::load_file(path)
            .with_context(|| format!("loading --query-file {}", path.display()))?;
        ensure!(
            all.dim == base.dim,
            "--query-file {} has dimension {} but the data has dimension {}: expected the same dimension",
            path.display(),
            all.dim,
            base.dim
        );
        ensure!(
            args.queries <= all.len(),
            "--queries {} but --query-file {} has only {} rows: expected --queries <= {}",
            args.queries,
            path.display(),
            all.len(),
            all.len()
        );
        let queries = Dataset {
            dim: all.dim,
            data: all.data[..args.queries * all.dim].to_vec(),
        };
        let source = format!("the first {} rows of {}", args.queries, path.display());
        return Ok((base, queries, source));
    }
    match &args.data {
        DataSource::Synthetic { n, dim } => {
            let queries = data::synthetic_queries(args.seed, *n, args.queries, *dim)
                .with_context(|| format!("generating {} synthetic queries", args.queries))?;
            let source = format!("fresh points from the same mixture, seed {}", args.seed);
            Ok((base, queries, source))
        }
        DataSource::File(path) => {
            let rows = base.len();
            if args.queries >= rows {
                bail!(
                    "--queries {} but {} has {rows} rows: holding that many out as queries would leave no data; expected --queries < {rows}, or --query-file",
                    args.queries,
                    path.display()
                );
            }
            let Some((base, queries)) = base.split_tail(args.queries) else {
                bail!("cannot hold out {} of {rows} rows", args.queries);
            };
            let source = format!(
                "the last {} rows of {}, held out of the index",
                args.queries,
                path.display()
            );
            Ok((base, queries, source))
        }
    }
}

/// Adds every row (id = row number) in batches.
fn build(index: &Index, base: &Dataset) -> Result<()> {
    for (batch, rows) in base.data.chunks(BUILD_BATCH_ROWS * base.dim).enumerate() {
        let first = batch * BUILD_BATCH_ROWS;
        let items: Vec<(u64, Vec<f32>)> = rows
            .chunks_exact(base.dim)
            .enumerate()
            .map(|(i, row)| ((first + i) as u64, row.to_vec()))
            .collect();
        index.add_batch(&items).with_context(|| {
            format!("adding rows {first}..{} to the index", first + items.len())
        })?;
    }
    Ok(())
}

fn megabytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
        None => "n/a".to_string(),
    }
}
