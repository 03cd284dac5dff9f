//! `--processor-against DIR` and `--forwarder-against DIR`: that stage of `--bin-dir` and the
//! one in `DIR`, run at the same time on the same input journal, one core each, for a few
//! rounds.
//!
//! Why side by side: on a shared VM two runs of one binary a minute apart differ by up to a
//! fifth, far more than most changes to a stage's per-record work. Two processes run at once
//! see the same machine, so the difference between them is the change's (a few per cent apart
//! from run to run on the machine of BENCHMARKS.md). Which one is spawned first alternates
//! between rounds.
//!
//! Each side gets the journal of one upstream run (the collector's for the processor, the
//! processor's for the forwarder): a copy of its own, so neither sees the other's cursor, and a
//! stage that hands back the page cache of what it read (`releasing_read_pages`) does not make
//! the other read the disk. The forwarders each write their own file sink output, closed files
//! gzipped as by default.

use std::fs;
use std::path::Path;

use anyhow::Context as _;

use crate::process::{Proc, Usage};
use crate::{
    check_count, forwarder_args, observe, processor_args, stop, wait_until, Cli, RunDirs, Setup,
};

/// The stage compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Processor,
    Forwarder,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Self::Processor => "processor",
            Self::Forwarder => "forwarder",
        }
    }

    /// The stage's own binary in `setup` (side a).
    fn binary(self, setup: &Setup) -> &Path {
        match self {
            Self::Processor => &setup.processor,
            Self::Forwarder => &setup.forwarder,
        }
    }

    /// The journal the stage reads, in `dirs`.
    fn input(self, dirs: &RunDirs) -> &Path {
        match self {
            Self::Processor => &dirs.collected,
            Self::Forwarder => &dirs.processed,
        }
    }
}

/// Runs the rounds and prints each side's CPU per round and on average.
pub(crate) fn run(
    setup: &Setup,
    tmp: &Path,
    cli: &Cli,
    stage: Stage,
    other_dir: &Path,
) -> anyhow::Result<()> {
    let name = stage.name();
    let other = other_dir.join(name);
    anyhow::ensure!(
        other.is_file(),
        "--{name}-against: {} not found",
        other.display()
    );
    anyhow::ensure!(cli.rounds > 0, "--rounds: must be at least 1");
    let (stages, generated, _) = crate::collect_input(setup, tmp, cli)?;
    let n = generated.total_lines();
    if stage == Stage::Forwarder {
        crate::run_processor(setup, &stages, &generated)?;
    }
    let sides = [stage.binary(setup), other.as_path()];
    println!(
        "\n{name} alone, a = {}, b = {}, both at once on one journal of {n} records",
        sides[0].display(),
        sides[1].display()
    );
    println!("round  first  a: cpu_s (user / sys)    b: cpu_s (user / sys)");
    let mut all: [Vec<Usage>; 2] = [Vec::new(), Vec::new()];
    for round in 0..cli.rounds {
        let first = round % 2;
        let input = stage.input(&stages);
        let usages = run_round(setup, tmp, stage, input, sides, first, round, n)?;
        println!(
            "{:>5}  {:>5}  {:>22}  {:>22}",
            round + 1,
            ["a", "b"][first],
            cpu(&usages[0]),
            cpu(&usages[1])
        );
        for (side, usage) in all.iter_mut().zip(usages) {
            side.push(usage);
        }
    }
    let mean = |usages: &[Usage], of: fn(&Usage) -> f64| {
        usages.iter().map(of).sum::<f64>() / usages.len() as f64
    };
    let (a, b) = (mean(&all[0], Usage::cpu_s), mean(&all[1], Usage::cpu_s));
    let (a_user, b_user) = (mean(&all[0], |u| u.user_s), mean(&all[1], |u| u.user_s));
    println!(
        "mean   a {a:.2} CPU-s ({a_user:.2} user), b {b:.2} ({b_user:.2} user): b - a = {:+.1} % ({:+.1} % user)",
        100.0 * (b - a) / a,
        100.0 * (b_user - a_user) / a_user
    );
    if !cli.keep {
        fs::remove_dir_all(&stages.root)
            .with_context(|| format!("removing {}", stages.root.display()))?;
    }
    Ok(())
}

/// One round: both sides spawned (`first` of `sides` first) and run until each has taken in
/// all `n` records. Returns the usages in the order of `sides`.
#[allow(clippy::too_many_arguments)]
fn run_round(
    setup: &Setup,
    tmp: &Path,
    stage: Stage,
    input: &Path,
    sides: [&Path; 2],
    first: usize,
    round: usize,
    n: u64,
) -> anyhow::Result<[Usage; 2]> {
    let stage_name = stage.name();
    let order = [first, 1 - first];
    let mut dirs = Vec::new();
    let mut procs = Vec::new();
    for side in order {
        let name = ["a", "b"][side];
        let run = RunDirs::create(
            tmp.join(format!("paired-{round}-{name}")),
            &tmp.join("logs"),
        )?;
        copy_journal(input, stage.input(&run))?;
        let args = match stage {
            Stage::Processor => processor_args(setup, &run, Some("100GiB")),
            Stage::Forwarder => forwarder_args(setup, &run)?,
        };
        let log = run.root.join(format!("{stage_name}.log"));
        procs.push(Proc::spawn(
            &format!("{stage_name} {name}"),
            sides[side],
            &args,
            &log,
        )?);
        dirs.push(run);
    }
    let end = match stage {
        Stage::Forwarder => {
            Some(observe::commit(input).context("the input journal has no commit")?)
        }
        Stage::Processor => None,
    };
    wait_until(
        &mut procs,
        setup.timeout,
        &format!("both {stage_name}s to finish"),
        || {
            let mut done = true;
            for run in &dirs {
                done &= match &end {
                    None => check_count(
                        observe::commit(&run.processed).map(|c| c.records),
                        n,
                        "processed",
                    )?,
                    Some(commit) => {
                        observe::cursor(&run.processed, "forwarder") == Some(commit.end)
                    }
                };
            }
            Ok(done)
        },
    )?;
    let mut usages = stop(procs)?.into_iter();
    let (first_usage, second_usage) = (
        usages.next().context("two processes were started")?,
        usages.next().context("two processes were started")?,
    );
    for run in &dirs {
        fs::remove_dir_all(&run.root)
            .with_context(|| format!("removing {}", run.root.display()))?;
    }
    Ok(if first == 0 {
        [first_usage, second_usage]
    } else {
        [second_usage, first_usage]
    })
}

/// A journal a stage can read as its own: the segments and commit files copied, no reader
/// cursors.
fn copy_journal(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.join(sidecar_journal::READERS_DIR))
        .with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let target = to.join(&name);
        let name = name.to_string_lossy();
        if !name.starts_with("segment-") && !name.starts_with(sidecar_journal::COMMIT_FILE) {
            continue;
        }
        fs::copy(entry.path(), &target).with_context(|| {
            format!("copying {} to {}", entry.path().display(), target.display())
        })?;
    }
    Ok(())
}

fn cpu(usage: &Usage) -> String {
    format!(
        "{:.2} ({:.2} / {:.2})",
        usage.cpu_s(),
        usage.user_s,
        usage.sys_s
    )
}
