//! The operator tools: `processor validate`, `processor test` and `processor explain`, run
//! against a rules file without starting the stage, and `processor journal-cat`, which prints
//! the collected journal the processor reads, one JSON object per record.
//!
//! Easy to get wrong: exit codes. Scripts and CI gate on them, so every tool exits non-zero
//! when the file is invalid or a test fails, and prints every problem, not only the first.

use std::error::Error as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use sidecar_journal::{self as journal, JournalReader, Position};
use sidecar_record::CollectedRecord;
use sidecar_rules::{RuleSet, RulesError};

/// A tool, as a subcommand of the processor binary.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Checks a rules file: exit 0, or print every error (file, line, rule, field, what is
    /// wrong) and exit 1.
    Validate {
        /// The rules file.
        #[arg(
            long,
            env = "PROCESSOR_RULES",
            default_value = "/etc/log-processor/rules.yaml"
        )]
        rules: PathBuf,
    },
    /// Runs the test cases written in the rules file (`tests:`); prints a diff for each
    /// failure and exits 1 if any failed.
    Test {
        /// The rules file.
        #[arg(
            long,
            env = "PROCESSOR_RULES",
            default_value = "/etc/log-processor/rules.yaml"
        )]
        rules: PathBuf,
    },
    /// Shows which rules match a source file, what each step does to the line(s), and the
    /// record that comes out.
    Explain {
        /// The rules file.
        #[arg(
            long,
            env = "PROCESSOR_RULES",
            default_value = "/etc/log-processor/rules.yaml"
        )]
        rules: PathBuf,
        /// The source file name the lines come from, e.g. access.log.
        #[arg(long)]
        source: String,
        /// The line(s), as the application wrote them; several may join (multiline).
        #[arg(required = true)]
        lines: Vec<String>,
    },
    /// Prints the committed records of a collected journal as NDJSON (`id`, `source`,
    /// `offset`, `collected_at`, `line` and the flags that are set), whatever format version
    /// each record was written in (docs/journal-format.md).
    JournalCat {
        /// The collected journal's directory.
        #[arg(long, env = "PROCESSOR_INPUT_DIR", default_value = "/collected-logs")]
        dir: PathBuf,
    },
}

/// Runs a tool, printing to stdout (results) and stderr (errors).
pub fn run(tool: Tool) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(tool, &mut stdout.lock(), &mut stderr.lock())
}

/// As [`run`], writing to the given streams (tests).
pub fn run_with(tool: Tool, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    // Write errors on stdout/stderr (a closed pipe) are not worth a panic: the exit code
    // still says what happened.
    match tool {
        Tool::Validate { rules } => match load(&rules, err) {
            Some(set) => {
                let _ = writeln!(
                    out,
                    "{}: OK ({} rules, {} tests)",
                    rules.display(),
                    set.rule_names().count(),
                    set.tests().len()
                );
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Tool::Test { rules } => {
            let Some(set) = load(&rules, err) else {
                return ExitCode::FAILURE;
            };
            let report = set.run_tests();
            for failure in &report.failures {
                let _ = write!(out, "{failure}");
            }
            let _ = writeln!(
                out,
                "{}: {} passed, {} failed",
                rules.display(),
                report.passed,
                report.failures.len()
            );
            if set.tests().is_empty() {
                let _ = writeln!(
                    err,
                    "{}: has no `tests:`; nothing was checked.",
                    rules.display()
                );
                return ExitCode::FAILURE;
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Tool::Explain {
            rules,
            source,
            lines,
        } => {
            let Some(set) = load(&rules, err) else {
                return ExitCode::FAILURE;
            };
            let explanations = set.explain(&source, &lines);
            for (i, explanation) in explanations.iter().enumerate() {
                if explanations.len() > 1 {
                    let _ = writeln!(out, "=== record {} of {} ===", i + 1, explanations.len());
                }
                let _ = write!(out, "{explanation}");
            }
            ExitCode::SUCCESS
        }
        Tool::JournalCat { dir } => match journal_cat(&dir, out) {
            Ok(()) => ExitCode::SUCCESS,
            // `journal-cat | head`: the reader has what it wanted.
            Err(error)
                if error
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                ExitCode::SUCCESS
            }
            Err(error) => {
                let _ = writeln!(err, "{}: {error:#}", dir.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes every committed record of the collected journal at `dir` to `out`, decoded; a record
/// that does not decode is printed as `{"undecodable": "<bytes>", "error": "<why>"}`.
fn journal_cat(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut reader = JournalReader::new(dir, Position::default());
    let end = reader.committed_end()?.ok_or_else(|| {
        anyhow::anyhow!("no commit.json: not a journal, or nothing committed yet")
    })?;
    let first = journal::list_segments(dir)?
        .first()
        .copied()
        .unwrap_or_default();
    reader = JournalReader::new(
        dir,
        Position {
            segment: first,
            offset: 0,
        },
    );
    let mut batch = Vec::new();
    while reader.read_batch(end, 1 << 20, &mut batch)? > 0 {
        for record in journal::records(&batch) {
            let value = match CollectedRecord::decode(record) {
                Ok(collected) => collected.to_json(),
                Err(error) => serde_json::json!({
                    "undecodable": String::from_utf8_lossy(record),
                    "error": error.to_string(),
                }),
            };
            serde_json::to_writer(&mut *out, &value).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Loads the rules, printing every error to `err`.
fn load(path: &Path, err: &mut dyn Write) -> Option<RuleSet> {
    match RuleSet::check_file(path) {
        Ok(set) => Some(set),
        Err(errors) => {
            for error in &errors {
                let _ = writeln!(err, "{}", describe(error));
            }
            let _ = writeln!(err, "{}: {} error(s)", path.display(), errors.len());
            None
        }
    }
}

/// An error with its causes, `a: b: c`; a regex error's own text shows the pattern with a
/// caret under the position.
pub fn describe(error: &RulesError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if cause_text.contains('\n') {
            text.push_str(":\n");
            for line in cause_text.lines() {
                text.push_str("    ");
                text.push_str(line);
                text.push('\n');
            }
            let trimmed = text.trim_end().len();
            text.truncate(trimmed);
        } else {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
