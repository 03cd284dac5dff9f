//! `pipeline-bench`: feeds a large file of demo-app-like lines through the collector, the
//! processor and the forwarder, each alone and all three together, and prints per stage
//! records/s, MB/s, CPU seconds and peak RSS; then measures what the three cost when idle.
//!
//! Run with (the stage binaries are not built by this command, build them first):
//! `cargo build --release -p collector -p processor -p forwarder && cargo run --release -p pipeline-bench -- --lines 2000000`
//!
//! Easy to get wrong: what the wall time covers. A stage's clock runs from its spawn until its
//! output is visibly complete on disk (the commit or cursor file says so), polled every 10 ms;
//! its CPU time runs from spawn to exit, so it also holds start-up and the SIGTERM shutdown.

mod generate;
mod observe;
mod paired;
mod pod_api;
mod process;
mod steady;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use clap::{ArgAction, Parser};

use crate::generate::{Generated, FILES};
use crate::process::{machine_busy_s, Proc, RuntimeSample, Usage};
use sidecar_core::telemetry::cpu_seconds_of;

/// How often completion is polled: fine enough for runs of seconds, cheap enough (a tiny file
/// read) not to steal CPU from the stages on a 2-core machine.
const POLL: Duration = Duration::from_millis(10);
/// How often each child's VmHWM is sampled while it runs (and every 1 ms during shutdown).
const SAMPLE: Duration = Duration::from_millis(100);
/// How long a stage gets to exit after SIGTERM; its own default grace period is 8 s.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// The idle run's warm-up, left out of its steady-state CPU rate: start-up costs once.
const IDLE_WARMUP: Duration = Duration::from_secs(2);

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "pipeline-bench",
    about = "Throughput, CPU and memory of collector, processor and forwarder."
)]
struct Cli {
    /// Lines to generate and push through.
    #[arg(long, default_value_t = 2_000_000)]
    lines: u64,
    /// Approximate bytes per line, newline included (each line varies by ±20%).
    #[arg(long, default_value_t = 200)]
    line_bytes: usize,
    /// Where the collector, processor and forwarder binaries are (default: this binary's
    /// directory, i.e. target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The processor's rules (default: processor/rules/default.yaml of this workspace).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Parent of the temporary directory (default: $TMPDIR or /tmp). Its filesystem matters:
    /// the stages fsync.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Passed to the three stages as --fsync (false: page-cache durability; the forwarder gets
    /// it only when false, so binaries from before it had the flag still run).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    fsync: bool,
    /// Passed to all three stages as --linger (defaults: collector 10ms, processor and forwarder
    /// 0s), e.g. 3ms.
    #[arg(long)]
    linger: Option<String>,
    /// Seconds to run the three stages with no input for the idle measurement (0: skip).
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Give up on a stage after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Print the pipeline run's progress and each process's CPU share once a second.
    #[arg(long)]
    progress: bool,
    /// Keep the temporary directory (its path is printed).
    #[arg(long)]
    keep: bool,
    /// Instead of the throughput runs: write this many lines/s for --steady-secs and print
    /// each stage's millicores and peak RSS, and the write→sink latency (p50, p99, max).
    #[arg(long)]
    steady_rate: Option<u64>,
    /// Length of the steady-rate run, its 3 s warm-up included.
    #[arg(long, default_value_t = 30)]
    steady_secs: u64,
    /// With --steady-rate: a second pipeline, the three binaries in this directory (b), at the
    /// same rate at the same time as those of --bin-dir (a), each with its own logs, journals
    /// and sink; prints both and the difference. On a machine whose runs a minute apart vary
    /// more than a change does.
    #[arg(long, requires = "steady_rate")]
    steady_against: Option<PathBuf>,
    /// Instead of the throughput runs: the collector alone on --lines spread over this many
    /// files, and on the same lines in one file, side by side.
    #[arg(long)]
    files: Option<usize>,
    /// With --files: also the same files each in a directory of its own, laid out as the
    /// kubelet's `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log` and watched with
    /// `*/*/*.log` (node mode).
    #[arg(long)]
    kubelet_tree: bool,
    /// With --files: every file in the CRI format (`<time> stdout F <line>`), watched with
    /// `cri:`, as the container runtime writes a container's stdout.
    #[arg(long)]
    cri: bool,
    /// The forwarder also evaluates the `alerts:` of --rules (no target: the report and
    /// /alerts only), as a pod with alerts on does.
    #[arg(long)]
    alerts: bool,
    /// Instead of the throughput runs: the processor of --bin-dir (a) and the one in this
    /// directory (b) at the same time, one core each, on one collected journal of --lines,
    /// for --rounds rounds; prints each side's CPU and the mean difference. For a change to
    /// the processor's per-record work on a machine whose runs of one binary vary more than it.
    #[arg(long, conflicts_with = "forwarder_against")]
    processor_against: Option<PathBuf>,
    /// As --processor-against, for the forwarder: both on one processed journal, each with its
    /// own file sink (per source, closed files gzipped), until each has read it all.
    #[arg(long)]
    forwarder_against: Option<PathBuf>,
    /// Rounds of --processor-against or --forwarder-against (which one starts first alternates).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

/// The three binaries and the rules they run with.
#[derive(Clone)]
struct Setup {
    collector: PathBuf,
    processor: PathBuf,
    forwarder: PathBuf,
    rules: PathBuf,
    alerts: bool,
    fsync: bool,
    linger: Option<String>,
    timeout: Duration,
    progress: bool,
}

/// The directories of one run: a journal per stage and the file sink's output.
struct RunDirs {
    root: PathBuf,
    logs: PathBuf,
    /// The collector's `--watch` pattern (default `<logs>/*.log`).
    watch: Option<String>,
    collected: PathBuf,
    processed: PathBuf,
    out: PathBuf,
}

impl RunDirs {
    fn create(root: PathBuf, logs: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Self {
            logs: logs.to_owned(),
            watch: None,
            collected: root.join("collected"),
            processed: root.join("processed"),
            out: root.join("out"),
            root,
        })
    }
}

/// One line of the results table.
struct Row {
    stage: String,
    records: u64,
    wall_s: f64,
    /// Bytes the stage read: the log files, or the journal it consumes.
    in_bytes: u64,
    usage: Usage,
    /// Cores' worth of CPU that other processes on the machine used meanwhile.
    others_cores: f64,
}

/// Measures how busy the rest of the machine is while a stage runs: all CPU time spent on
/// the machine, minus ours (the stages' and this process's). The runs are only comparable
/// when this is near zero; on a shared machine it says how much the wall times are inflated.
struct LoadMeter {
    started: Instant,
    busy_s: Option<f64>,
    self_s: Option<f64>,
}

impl LoadMeter {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            busy_s: machine_busy_s(),
            self_s: cpu_seconds_of("self"),
        }
    }

    /// Cores' worth of CPU others used since `start`, given our children's `children_cpu_s`.
    fn others_cores(&self, children_cpu_s: f64) -> f64 {
        let elapsed = self.started.elapsed().as_secs_f64();
        match (
            self.busy_s,
            machine_busy_s(),
            self.self_s,
            cpu_seconds_of("self"),
        ) {
            (Some(b0), Some(b1), Some(s0), Some(s1)) => {
                ((b1 - b0) - (s1 - s0) - children_cpu_s).max(0.0) / elapsed
            }
            _ => f64::NAN,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(cli.lines > 0, "--lines: must be at least 1");
    anyhow::ensure!(cli.line_bytes >= 64, "--line-bytes: must be at least 64");
    let setup = find_binaries(&cli)?;
    let parent = cli.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("pipeline-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    print_machine(&setup, tmp.path());
    println!("temp dir: {}", tmp.path().display());
    if let Some(files) = cli.files {
        anyhow::ensure!(files >= 1, "--files: must be at least 1");
        let rows = run_many_files(&setup, tmp.path(), &cli, files)?;
        println!();
        print_table(&rows);
        if cli.keep {
            println!("\nkept {}", tmp.keep().display());
        }
        return Ok(());
    }
    if let Some(rate) = cli.steady_rate {
        anyhow::ensure!(rate > 0, "--steady-rate: must be at least 1 line/s");
        let duration = Duration::from_secs(cli.steady_secs);
        let dirs = RunDirs::create(tmp.path().join("steady"), &tmp.path().join("logs"))?;
        match &cli.steady_against {
            None => steady::run(&[("", &setup, &dirs)], rate, duration)?,
            Some(other) => {
                let b = setup.with_binaries_in(other)?;
                let b_dirs =
                    RunDirs::create(tmp.path().join("steady-b"), &tmp.path().join("logs-b"))?;
                let a_label = format!(
                    "a = {}",
                    setup.processor.parent().unwrap_or(Path::new("")).display()
                );
                let b_label = format!("b = {}", other.display());
                steady::run(
                    &[(&a_label, &setup, &dirs), (&b_label, &b, &b_dirs)],
                    rate,
                    duration,
                )?;
            }
        }
        if cli.keep {
            println!("\nkept {}", tmp.keep().display());
        }
        return Ok(());
    }

    let against = [
        (paired::Stage::Processor, &cli.processor_against),
        (paired::Stage::Forwarder, &cli.forwarder_against),
    ];
    if let Some((stage, Some(other))) = against.into_iter().find(|(_, dir)| dir.is_some()) {
        paired::run(&setup, tmp.path(), &cli, stage, other)?;
        if cli.keep {
            println!("\nkept {}", tmp.keep().display());
        }
        return Ok(());
    }

    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let (stages, generated, collector) = collect_input(&setup, tmp.path(), &cli)?;
    let logs = stages.logs.clone();
    rows.push(collector);
    rows.push(run_processor(&setup, &stages, &generated)?);
    rows.push(run_forwarder(&setup, &stages)?);
    checks.push(check_output("forwarder alone", &stages.out, &generated)?);
    if !cli.keep {
        fs::remove_dir_all(&stages.root)
            .with_context(|| format!("removing {}", stages.root.display()))?;
    }
    let pipeline = RunDirs::create(tmp.path().join("pipeline"), &logs)?;
    rows.extend(run_pipeline(&setup, &pipeline, &generated)?);
    checks.push(check_output("pipeline", &pipeline.out, &generated)?);

    println!();
    print_table(&rows);
    println!();
    for (line, _) in &checks {
        println!("{line}");
    }

    if cli.idle_secs > 0 {
        let idle_logs = tmp.path().join("idle-logs");
        fs::create_dir_all(&idle_logs)?;
        let idle = RunDirs::create(tmp.path().join("idle"), &idle_logs)?;
        let duration = Duration::from_secs(cli.idle_secs);
        println!();
        run_idle(
            &setup,
            &idle,
            duration,
            "fresh (empty log directory, no journals yet)",
            None,
        )?;
        // Restarted on the drained pipeline: they resume at their commits with nothing to do.
        // This is a quiet pod's steady state, and it costs more than the fresh case when a
        // stage's own reads of watched files wake it.
        println!();
        run_idle(
            &setup,
            &pipeline,
            duration,
            "after the pipeline run (journals and log files present, no new lines)",
            None,
        )?;
        // The processor reading its pod from the API and following a watch that changes the
        // pod every second (a real pod changes far less often).
        let api = pod_api::PodApi::start(Duration::from_secs(1))?;
        let api_dirs = RunDirs::create(tmp.path().join("idle-api"), &idle_logs)?;
        println!();
        run_idle(
            &setup,
            &api_dirs,
            duration,
            "fresh, the processor with --kubernetes-metadata api (a pod update every second)",
            Some(&api.url),
        )?;
    }

    if cli.keep {
        println!("\nkept {}", tmp.keep().display());
    }
    if checks.iter().any(|(_, ok)| !ok) {
        bail!("the file sink's output does not hold exactly the generated lines");
    }
    Ok(())
}

/// Generates `--lines` lines into `<tmp>/logs` and runs the collector alone on them: the
/// directories holding the collected journal, what was generated, and the collector's row.
fn collect_input(
    setup: &Setup,
    tmp: &Path,
    cli: &Cli,
) -> anyhow::Result<(RunDirs, Generated, Row)> {
    let logs = tmp.join("logs");
    fs::create_dir_all(&logs)?;
    let started = Instant::now();
    let generated =
        generate::generate(&logs, cli.lines, cli.line_bytes).context("generating the input")?;
    flush_to_disk()?;
    println!(
        "input: {} lines, {:.1} MB ({} B/line) in {:.1} s: {}",
        generated.total_lines(),
        generated.bytes as f64 / 1e6,
        generated.bytes / generated.total_lines(),
        started.elapsed().as_secs_f64(),
        FILES
            .iter()
            .zip(generated.lines)
            .map(|((name, _), n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let stages = RunDirs::create(tmp.join("stages"), &logs)?;
    let collector = run_collector(setup, &stages, &generated)?;
    Ok((stages, generated, collector))
}

fn find_binaries(cli: &Cli) -> anyhow::Result<Setup> {
    let bin_dir = match &cli.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release")),
    };
    let rules = cli.rules.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../processor/rules/default.yaml")
    });
    anyhow::ensure!(rules.is_file(), "--rules: {} not found", rules.display());
    Ok(Setup {
        collector: find_binary(&bin_dir, "collector")?,
        processor: find_binary(&bin_dir, "processor")?,
        forwarder: find_binary(&bin_dir, "forwarder")?,
        rules,
        alerts: cli.alerts,
        fsync: cli.fsync,
        linger: cli.linger.clone(),
        timeout: Duration::from_secs(cli.timeout_secs),
        progress: cli.progress,
    })
}

fn find_binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found; build it first: cargo build --release -p collector -p processor -p forwarder (or pass --bin-dir)",
        path.display()
    );
    Ok(path)
}

impl Setup {
    /// The same run with the three binaries in `dir`.
    fn with_binaries_in(&self, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            collector: find_binary(dir, "collector")?,
            processor: find_binary(dir, "processor")?,
            forwarder: find_binary(dir, "forwarder")?,
            ..self.clone()
        })
    }
}

fn collector_args(setup: &Setup, dirs: &RunDirs, max_unconsumed: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--watch".into(),
        dirs.watch
            .clone()
            .unwrap_or_else(|| format!("{}/*.log", dirs.logs.display())),
        "--journal-dir".into(),
        dirs.collected.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--fsync".into(),
        setup.fsync.to_string(),
    ];
    if let Some(cap) = max_unconsumed {
        args.extend(["--max-unconsumed".into(), cap.into()]);
    }
    args.extend(setup.linger_args());
    args
}

fn processor_args(setup: &Setup, dirs: &RunDirs, max_unconsumed: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "--rules".into(),
        setup.rules.display().to_string(),
        "--input-dir".into(),
        dirs.collected.display().to_string(),
        "--journal-dir".into(),
        dirs.processed.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--fsync".into(),
        setup.fsync.to_string(),
    ];
    if let Some(cap) = max_unconsumed {
        args.extend(["--max-unconsumed".into(), cap.into()]);
    }
    args.extend(setup.linger_args());
    args
}

/// Writes the forwarder's config (the report once an hour, so it stays out of the numbers, and a
/// per-source file sink into `dirs.out`) and returns its flags.
fn forwarder_args(setup: &Setup, dirs: &RunDirs) -> anyhow::Result<Vec<String>> {
    forwarder_args_with(setup, dirs, "")
}

/// [`forwarder_args`] with more settings of the file sink (YAML lines indented by 4).
fn forwarder_args_with(
    setup: &Setup,
    dirs: &RunDirs,
    sink_settings: &str,
) -> anyhow::Result<Vec<String>> {
    let config = dirs.root.join("forwarder.yaml");
    // A JSON string is a valid YAML double-quoted scalar, so any path is quoted correctly.
    let out = serde_json::to_string(&dirs.out.display().to_string())?;
    let alerts = if setup.alerts {
        let rules = serde_json::to_string(&setup.rules.display().to_string())?;
        format!("alerts:\n  rules_file: {rules}\n")
    } else {
        String::new()
    };
    fs::write(
        &config,
        format!("report:\n  interval: 1h\n{alerts}sinks:\n  - type: file\n    directory: {out}\n    per_source: true\n{sink_settings}"),
    )?;
    let mut args = vec![
        "--config".into(),
        config.display().to_string(),
        "--input-dir".into(),
        dirs.processed.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--api-listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(setup.linger_args());
    if !setup.fsync {
        args.extend(["--fsync".into(), "false".into()]);
    }
    Ok(args)
}

impl Setup {
    /// `--linger <d>` for a stage, when the bench was given one.
    fn linger_args(&self) -> Vec<String> {
        self.linger
            .iter()
            .flat_map(|linger| ["--linger".to_owned(), linger.clone()])
            .collect()
    }
}

/// The collector alone on the generated files. The unconsumed cap is lifted, since nothing
/// consumes its journal and it must not pause.
fn run_collector(setup: &Setup, dirs: &RunDirs, generated: &Generated) -> anyhow::Result<Row> {
    run_collector_on(
        setup,
        dirs,
        generated.total_lines(),
        generated.bytes,
        "collector",
    )
}

/// The many-files run: the collector alone on `--lines` lines in one file, then on the same
/// lines spread over `files` files, then (with `--kubelet-tree`) over `files` files in
/// directories of their own.
fn run_many_files(setup: &Setup, tmp: &Path, cli: &Cli, files: usize) -> anyhow::Result<Vec<Row>> {
    let cri = if cli.cri { ", CRI" } else { "" };
    let mut runs = vec![
        (1, generate::Layout::Flat, format!("1 file{cri}")),
        (files, generate::Layout::Flat, format!("{files} files{cri}")),
    ];
    if cli.kubelet_tree {
        let label = format!("{files} files, kubelet tree{cri}");
        runs.push((files, generate::Layout::KubeletTree, label));
    }
    let mut rows = Vec::new();
    for (i, (count, layout, label)) in runs.into_iter().enumerate() {
        let logs = tmp.join(format!("logs-{i}"));
        fs::create_dir_all(&logs)?;
        let bytes =
            generate::generate_spread(&logs, cli.lines, cli.line_bytes, count, layout, cli.cri)
                .context("generating the input")?;
        println!(
            "input: {} lines, {:.1} MB over {label}",
            cli.lines,
            bytes as f64 / 1e6
        );
        flush_to_disk()?;
        let mut dirs = RunDirs::create(tmp.join(format!("run-{i}")), &logs)?;
        let format = if cli.cri { "cri:" } else { "" };
        dirs.watch = Some(format!(
            "{format}{}/{}",
            logs.display(),
            layout.watch_glob()
        ));
        rows.push(run_collector_on(
            setup,
            &dirs,
            cli.lines,
            bytes,
            &format!("collector, {label}"),
        )?);
    }
    Ok(rows)
}

/// Writes the just-generated input out before the collector starts: with ext4's ordered data
/// mode, the collector's first fsyncs would otherwise wait for (and be charged with) writing
/// back hundreds of MB of freshly made files, which swamped the measurement.
fn flush_to_disk() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

fn run_collector_on(
    setup: &Setup,
    dirs: &RunDirs,
    n: u64,
    in_bytes: u64,
    label: &str,
) -> anyhow::Result<Row> {
    let args = collector_args(setup, dirs, Some("100GiB"));
    let (wall, usage, others_cores) =
        measure_one(setup, "collector", &setup.collector, &args, dirs, || {
            check_count(
                observe::commit(&dirs.collected).map(|c| c.records),
                n,
                "collected",
            )
        })?;
    Ok(Row {
        stage: label.into(),
        records: n,
        wall_s: wall,
        in_bytes,
        usage,
        others_cores,
    })
}

/// The processor alone on the collected journal the collector left.
fn run_processor(setup: &Setup, dirs: &RunDirs, generated: &Generated) -> anyhow::Result<Row> {
    let n = generated.total_lines();
    let in_bytes = observe::journal_bytes(&dirs.collected)?;
    print_size("collected journal", in_bytes, n);
    let args = processor_args(setup, dirs, Some("100GiB"));
    let (wall, usage, others_cores) =
        measure_one(setup, "processor", &setup.processor, &args, dirs, || {
            check_count(
                observe::commit(&dirs.processed).map(|c| c.records),
                n,
                "processed",
            )
        })?;
    Ok(Row {
        stage: "processor".into(),
        records: n,
        wall_s: wall,
        in_bytes,
        usage,
        others_cores,
    })
}

/// The forwarder alone on the processed journal the processor left.
fn run_forwarder(setup: &Setup, dirs: &RunDirs) -> anyhow::Result<Row> {
    let commit = observe::commit(&dirs.processed).context("the processed journal has no commit")?;
    let in_bytes = observe::journal_bytes(&dirs.processed)?;
    print_size("processed journal", in_bytes, commit.records);
    let args = forwarder_args(setup, dirs)?;
    let (wall, usage, others_cores) =
        measure_one(setup, "forwarder", &setup.forwarder, &args, dirs, || {
            Ok(observe::cursor(&dirs.processed, "forwarder") == Some(commit.end))
        })?;
    Ok(Row {
        stage: "forwarder".into(),
        records: commit.records,
        wall_s: wall,
        in_bytes,
        usage,
        others_cores,
    })
}

/// Starts the collector, the processor (with `processor_args` and `processor_env`) and the
/// forwarder on `dirs`, each logging to `<log_prefix><name>.log` in the run's directory.
fn spawn_three(
    setup: &Setup,
    dirs: &RunDirs,
    processor_args: &[String],
    processor_env: &[(&str, &str)],
    forwarder_args: &[String],
    log_prefix: &str,
) -> anyhow::Result<Vec<Proc>> {
    let log = |name: &str| dirs.root.join(format!("{log_prefix}{name}.log"));
    Ok(vec![
        Proc::spawn(
            "collector",
            &setup.collector,
            &collector_args(setup, dirs, None),
            &log("collector"),
        )?,
        Proc::spawn_with_env(
            "processor",
            &setup.processor,
            processor_args,
            processor_env,
            &log("processor"),
        )?,
        Proc::spawn(
            "forwarder",
            &setup.forwarder,
            forwarder_args,
            &log("forwarder"),
        )?,
    ])
}

/// All three at once, with their default unconsumed caps (the realistic setting: the
/// collector pauses if the processor lags by more than 128 MiB), until the forwarder has
/// consumed the processor's last record.
fn run_pipeline(setup: &Setup, dirs: &RunDirs, generated: &Generated) -> anyhow::Result<Vec<Row>> {
    let n = generated.total_lines();
    let forwarder_args = forwarder_args(setup, dirs)?;
    let load = LoadMeter::start();
    let started = Instant::now();
    let mut procs = spawn_three(
        setup,
        dirs,
        &processor_args(setup, dirs, None),
        &[],
        &forwarder_args,
        "",
    )?;
    let mut progress = setup.progress.then(|| Progress::new(&procs));
    let done = || -> anyhow::Result<bool> {
        if let Some(progress) = &mut progress {
            progress.tick(started, dirs);
        }
        let Some(commit) = observe::commit(&dirs.processed) else {
            return Ok(false);
        };
        if !check_count(Some(commit.records), n, "processed")? {
            return Ok(false);
        }
        Ok(observe::cursor(&dirs.processed, "forwarder") == Some(commit.end))
    };
    wait_until(
        &mut procs,
        setup.timeout,
        "the forwarder to consume all records",
        done,
    )?;
    let wall = started.elapsed().as_secs_f64();
    let usages = stop(procs)?;
    let total = usages.iter().fold(Usage::default(), |sum, u| Usage {
        user_s: sum.user_s + u.user_s,
        sys_s: sum.sys_s + u.sys_s,
        peak_rss_kib: sum.peak_rss_kib + u.peak_rss_kib,
        peak_anon_kib: sum.peak_anon_kib + u.peak_anon_kib,
        ru_maxrss_kib: sum.ru_maxrss_kib + u.ru_maxrss_kib,
    });
    let others_cores = load.others_cores(total.cpu_s());
    let mut rows = vec![Row {
        stage: "pipeline".into(),
        records: n,
        wall_s: wall,
        in_bytes: generated.bytes,
        usage: total,
        others_cores,
    }];
    for (name, usage) in ["collector", "processor", "forwarder"]
        .into_iter()
        .zip(usages)
    {
        rows.push(Row {
            stage: format!("  {name}"),
            records: n,
            wall_s: wall,
            in_bytes: generated.bytes,
            usage,
            others_cores,
        });
    }
    Ok(rows)
}

/// Runs the three stages with no input for `duration` and prints what they cost; with
/// `pod_api`, the processor reads its pod's metadata from that API server.
fn run_idle(
    setup: &Setup,
    dirs: &RunDirs,
    duration: Duration,
    label: &str,
    pod_api: Option<&str>,
) -> anyhow::Result<()> {
    let forwarder_args = forwarder_args(setup, dirs)?;
    let mut processor_args = processor_args(setup, dirs, None);
    if let Some(url) = pod_api {
        processor_args.extend([
            "--kubernetes-metadata=api".into(),
            format!("--kubernetes-api-url={url}"),
        ]);
    }
    let pod_env = [
        ("POD_NAME", pod_api::POD_NAME),
        ("POD_NAMESPACE", pod_api::NAMESPACE),
    ];
    let mut procs = spawn_three(
        setup,
        dirs,
        &processor_args,
        &pod_env,
        &forwarder_args,
        "idle-",
    )?;
    let warmup = IDLE_WARMUP.min(duration / 2);
    let started = Instant::now();
    wait_until(&mut procs, warmup, "", || Ok(started.elapsed() >= warmup))?;
    let cpu_at_warmup: Vec<Option<RuntimeSample>> =
        procs.iter().map(Proc::runtime_sample).collect();
    let steady_started = Instant::now();
    wait_until(&mut procs, duration, "", || {
        Ok(started.elapsed() >= duration)
    })?;
    let steady_s = steady_started.elapsed().as_secs_f64();
    let cpu_at_end: Vec<Option<RuntimeSample>> = procs.iter().map(Proc::runtime_sample).collect();
    let rss_at_end: Vec<Option<u64>> = procs.iter().map(Proc::current_rss_kib).collect();
    let names: Vec<String> = procs.iter().map(|p| p.name.clone()).collect();
    let usages = stop(procs)?;
    println!(
        "idle, {label}: the three stages for {:.0} s (steady state: after the first {:.0} s)",
        duration.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!(
        "{:<11} {:>8} {:>8} {:>8} {:>17} {:>12} {:>13}",
        "stage", "cpu_s", "user_s", "sys_s", "steady_millicores", "rss_MiB", "peak_rss_MiB"
    );
    for (i, usage) in usages.iter().enumerate() {
        let steady = match (&cpu_at_warmup[i], &cpu_at_end[i]) {
            (Some(a), Some(b)) => format!("{:.2}", b.seconds_since(a) / steady_s * 1000.0),
            _ => "?".into(),
        };
        let rss = rss_at_end[i].map_or("?".into(), |kib| format!("{:.1}", kib as f64 / 1024.0));
        println!(
            "{:<11} {:>8.3} {:>8.3} {:>8.3} {:>17} {:>12} {:>13.1}",
            names[i],
            usage.cpu_s(),
            usage.user_s,
            usage.sys_s,
            steady,
            rss,
            usage.peak_rss_kib as f64 / 1024.0
        );
    }
    println!("(cpu_s: spawn to exit, start-up and shutdown included, 10 ms ticks; steady_millicores: each thread's time on a CPU, /proc/<pid>/task/*/schedstat)");
    Ok(())
}

/// The `--progress` timeline: once a second, how far each journal is and how much CPU each
/// process and the rest of the machine used in that second.
struct Progress {
    pids: Vec<(String, String)>,
    last: Instant,
    last_cpu: Vec<f64>,
    last_busy: f64,
}

impl Progress {
    fn new(procs: &[Proc]) -> Self {
        let pids: Vec<(String, String)> = procs
            .iter()
            .map(|p| (p.name.clone(), p.pid().to_string()))
            .collect();
        let last_cpu = pids
            .iter()
            .map(|(_, pid)| cpu_seconds_of(pid).unwrap_or(0.0))
            .collect();
        Self {
            pids,
            last: Instant::now(),
            last_cpu,
            last_busy: machine_busy_s().unwrap_or(0.0),
        }
    }

    fn tick(&mut self, started: Instant, dirs: &RunDirs) {
        let elapsed = self.last.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let busy = machine_busy_s().unwrap_or(0.0);
        let mut line = format!("t={:6.1}s", started.elapsed().as_secs_f64());
        let collected = observe::commit(&dirs.collected);
        let processed = observe::commit(&dirs.processed);
        let forwarded = observe::cursor(&dirs.processed, "forwarder");
        let _ = write!(
            line,
            " collected={:>9} processed={:>9} processed_end={:?} forwarded={:?} |",
            collected.map_or(0, |c| c.records),
            processed.map_or(0, |c| c.records),
            processed.map(|c| c.end),
            forwarded,
        );
        let mut ours = 0.0;
        for ((name, pid), last) in self.pids.iter().zip(self.last_cpu.iter_mut()) {
            let now = cpu_seconds_of(pid).unwrap_or(*last);
            let _ = write!(line, " {name} {:3.0}%", (now - *last) / elapsed * 100.0);
            ours += now - *last;
            *last = now;
        }
        let _ = write!(
            line,
            " others {:3.0}%",
            ((busy - self.last_busy - ours) / elapsed * 100.0).max(0.0)
        );
        self.last_busy = busy;
        self.last = Instant::now();
        println!("{line}");
    }
}

fn print_size(what: &str, bytes: u64, records: u64) {
    println!(
        "{what}: {:.1} MB, {} B/record",
        bytes as f64 / 1e6,
        bytes / records.max(1)
    );
}

/// Spawns one stage, waits until `done`, stops it, and returns its wall seconds and usage.
fn measure_one(
    setup: &Setup,
    name: &str,
    program: &Path,
    args: &[String],
    dirs: &RunDirs,
    done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<(f64, Usage, f64)> {
    let load = LoadMeter::start();
    let started = Instant::now();
    let mut procs = vec![Proc::spawn(
        name,
        program,
        args,
        &dirs.root.join(format!("{name}.log")),
    )?];
    wait_until(
        &mut procs,
        setup.timeout,
        &format!("{name} to finish"),
        done,
    )?;
    let wall = started.elapsed().as_secs_f64();
    let usage = stop(procs)?.pop().expect("one process was started");
    let others = load.others_cores(usage.cpu_s());
    println!(
        "{name}: {wall:.2} s wall, {:.2} s CPU ({:.2} user, {:.2} sys)",
        usage.cpu_s(),
        usage.user_s,
        usage.sys_s
    );
    Ok((wall, usage, others))
}

/// Polls `done` every [`POLL`], sampling the children's memory every [`SAMPLE`] and failing if
/// one exits or `timeout` passes (unless `what` is empty: then the timeout just ends the wait).
fn wait_until(
    procs: &mut [Proc],
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sampled: Option<Instant> = None;
    loop {
        if done()? {
            return Ok(());
        }
        for proc in procs.iter_mut() {
            proc.ensure_running()?;
        }
        if sampled.is_none_or(|at| at.elapsed() >= SAMPLE) {
            procs.iter_mut().for_each(Proc::sample);
            sampled = Some(Instant::now());
        }
        if started.elapsed() > timeout {
            if what.is_empty() {
                return Ok(());
            }
            bail!("timed out after {timeout:?} waiting for {what} (rerun with --keep to inspect the directories)");
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM to all, then reap each; the usages in the order of `procs`.
fn stop(procs: Vec<Proc>) -> anyhow::Result<Vec<Usage>> {
    for proc in &procs {
        proc.terminate();
    }
    procs.into_iter().map(|p| p.reap(STOP_GRACE)).collect()
}

/// True once `records` reached `n`; an error if it went past (records were duplicated).
fn check_count(records: Option<u64>, n: u64, journal: &str) -> anyhow::Result<bool> {
    match records {
        Some(r) if r > n => {
            bail!("the {journal} journal holds {r} records, more than the {n} generated")
        }
        Some(r) => Ok(r == n),
        None => Ok(false),
    }
}

/// Counts the file sink's lines per source and compares them with what was generated.
fn check_output(label: &str, out: &Path, generated: &Generated) -> anyhow::Result<(String, bool)> {
    let (counts, files) = observe::count_output(out)?;
    let expected: BTreeMap<String, u64> = FILES
        .iter()
        .zip(generated.lines)
        .map(|((name, _), n)| ((*name).to_owned(), n))
        .collect();
    let total: u64 = counts.values().sum();
    let ok = total == generated.total_lines() && counts == expected;
    let mut line = format!(
        "{label}: file sink output holds {total} lines in {files} files (expected {}): {}",
        generated.total_lines(),
        if ok { "OK" } else { "MISMATCH" }
    );
    if !ok {
        let _ = write!(
            line,
            "\n  per source: {counts:?}\n  expected:   {expected:?}"
        );
    }
    Ok((line, ok))
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<12} {:>9} {:>8} {:>10} {:>7} {:>7} {:>13} {:>9} {:>13} {:>7} {:>7} {:>12}",
        "stage",
        "records",
        "wall_s",
        "records/s",
        "MB/s",
        "cpu_s",
        "records/cpu_s",
        "MB/cpu_s",
        "peak_rss_MiB",
        "user_s",
        "sys_s",
        "others_cores"
    );
    for row in rows {
        let cpu = row.usage.cpu_s();
        let mb = row.in_bytes as f64 / 1e6;
        println!(
            "{:<12} {:>9} {:>8.2} {:>10.0} {:>7.1} {:>7.2} {:>13.0} {:>9.1} {:>13.1} {:>7.2} {:>7.2} {:>12.2}",
            row.stage,
            row.records,
            row.wall_s,
            row.records as f64 / row.wall_s,
            mb / row.wall_s,
            cpu,
            row.records as f64 / cpu,
            mb / cpu,
            row.usage.peak_rss_kib as f64 / 1024.0,
            row.usage.user_s,
            row.usage.sys_s,
            row.others_cores,
        );
    }
    println!("MB = 10^6 bytes of the stage's input: the log files (collector, pipeline), the collected journal");
    println!("(processor) or the processed journal (forwarder). Pipeline: cpu_s and peak_rss are sums over the");
    println!(
        "three processes; the indented rows are each process's share over the same wall time."
    );
    println!(
        "others_cores: CPU used meanwhile by other processes on this machine, in cores; wall times"
    );
    println!("are only clean when it is near 0 (cpu_s is the stage's own and barely affected).");
}

fn print_machine(setup: &Setup, tmp: &Path) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("date: {}", utc_now());
    println!(
        "machine: {cores} cores ({model}), {mem_gib:.1} GiB RAM, Linux {}",
        kernel.trim()
    );
    println!("filesystem of the temp dir: {}", filesystem_of(tmp));
    for bin in [&setup.collector, &setup.processor, &setup.forwarder] {
        let age = fs::metadata(bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        println!(
            "binary: {} (built {} min ago)",
            bin.display(),
            age.map_or("?".into(), |a| (a.as_secs() / 60).to_string())
        );
    }
    println!(
        "rules: {}; stages' --fsync {}",
        setup.rules.display(),
        setup.fsync
    );
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = generate::civil_from_days((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs % 86_400 / 3600,
        secs % 3600 / 60
    )
}

/// The type and device of the mount that holds `path`, from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, text)| text)
}
