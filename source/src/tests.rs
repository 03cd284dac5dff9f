//! Tailer tests on real files in a temp directory: each test reads like what the application
//! and kubelet do (write, rotate, truncate, restart), then checks every line arrived once.

use super::*;
use std::io::Write;

use sidecar_record::CollectedRecord;

struct Harness {
    dir: tempfile::TempDir,
    tailer: Tailer,
    options: TailOptions,
    /// The position of a killed tailer, restored at the next collect: what happens to the
    /// files in between happens while the collector is down.
    down: Option<TailPosition>,
    /// `--watch` patterns, `{dir}` standing for the temp directory.
    watch: Vec<String>,
}

impl Harness {
    fn new() -> Self {
        Self::with_options(TailOptions {
            rotated_close_after: Duration::ZERO,
            ..TailOptions::default()
        })
    }

    fn with_options(options: TailOptions) -> Self {
        Self::watching(&["{dir}/*.log"], options)
    }

    fn watching(watch: &[&str], options: TailOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let watch: Vec<String> = watch
            .iter()
            .map(|w| w.replace("{dir}", &dir.path().display().to_string()))
            .collect();
        let tailer = Self::tailer_for(&watch, &options, None);
        Self {
            dir,
            tailer,
            options,
            down: None,
            watch,
        }
    }

    fn tailer_for(
        watch: &[String],
        options: &TailOptions,
        position: Option<TailPosition>,
    ) -> Tailer {
        let spec = SourceSpec::compile(watch, &["*skip*".into()]).unwrap();
        Tailer::new(spec, options.clone(), position, SourceMetrics::default())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn append(&self, name: &str, bytes: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(name))
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    /// copytruncate: copies `name` to `copy` (over it, keeping its inode, when it exists),
    /// then truncates `name` in place.
    fn copytruncate(&self, name: &str, copy: &str) {
        fs::copy(self.path(name), self.path(copy)).unwrap();
        self.truncate(name);
    }

    /// A copytruncate of `name` to `copy` during which the tailer looks (or restarts, after a
    /// kill) while the copy holds only the first `cut` bytes, as a copy being written can be
    /// seen; returns what that look read.
    fn copytruncate_seen_midway(&mut self, name: &str, copy: &str, cut: usize) -> Vec<Collected> {
        let content = fs::read(self.path(name)).unwrap();
        // Over an old copy this writes in place, as `cp` does.
        fs::write(self.path(copy), &content[..cut]).unwrap();
        let got = self.collect();
        self.append(copy, &content[cut..]);
        self.truncate(name);
        got
    }

    /// Truncates `name` in place, as the second half of a copytruncate.
    fn truncate(&self, name: &str) {
        fs::OpenOptions::new()
            .write(true)
            .open(self.path(name))
            .unwrap()
            .set_len(0)
            .unwrap();
    }

    /// Stops the tailer as a kill -9 after its last commit would: the next collect starts
    /// a new one from the position it had.
    fn kill(&mut self) {
        self.down = Some(self.tailer.position());
        // mtimes of writes while down must be later than the position's time.
        std::thread::sleep(Duration::from_millis(5));
    }

    /// How often the tailer counted `event` for `source`.
    fn events(&self, source: &str, event: &str) -> u64 {
        self.tailer
            .metrics
            .events
            .get_or_create(&vec![
                ("source".into(), source.into()),
                ("event".into(), event.into()),
            ])
            .get()
    }

    /// Rescans and reads until nothing more arrives; returns the records.
    fn collect(&mut self) -> Vec<Collected> {
        if let Some(position) = self.down.take() {
            self.tailer = Self::tailer_for(&self.watch, &self.options, Some(position));
        }
        let mut out = Vec::new();
        loop {
            self.tailer.rescan();
            let (batch, outcome) = self.read();
            let empty = batch.is_empty();
            out.extend(batch);
            if empty && !outcome.more {
                return out;
            }
        }
    }

    /// One read, without a rescan: a turn of the collector's loop while lines keep coming.
    fn read(&mut self) -> (Vec<Collected>, ReadOutcome) {
        let mut batch = Vec::new();
        let outcome = self.tailer.read(1 << 30, "t", &mut |r| {
            let mut written = Vec::new();
            r.write(&mut written);
            let back = CollectedRecord::decode(&written).unwrap();
            batch.push(Collected {
                offset: r.id.offset,
                id: back.id.into_owned(),
                source: back.source.into_owned(),
                line: back.line.into_owned(),
                partial: back.partial,
                split: back.split,
                malformed: back.malformed,
                stream: back.stream,
                logged_at: back.logged_at.map(|t| t.into_owned()),
            })
        });
        (batch, outcome)
    }

    fn restart(&mut self) {
        let position = self.tailer.position();
        self.tailer = Self::tailer_for(&self.watch, &self.options, Some(position));
    }
}

/// A record as the journal gives it back, with the offset its id holds.
#[derive(Debug, Clone)]
struct Collected {
    id: String,
    source: String,
    offset: u64,
    line: String,
    partial: bool,
    split: bool,
    malformed: bool,
    stream: Option<sidecar_record::Stream>,
    logged_at: Option<String>,
}

fn lines(records: &[Collected]) -> Vec<&str> {
    records.iter().map(|r| r.line.as_str()).collect()
}

#[test]
fn only_complete_lines_are_handed_on_with_offsets_as_ids() {
    let mut h = Harness::new();
    h.append("a.log", b"one\ntwo\nthr");
    let got = h.collect();
    assert_eq!(lines(&got), ["one", "two"]);
    assert_eq!(got[1].offset, 4);
    assert!(got[1].id.ends_with("-4"));
    assert_eq!(got[0].source, "a.log");
    h.append("a.log", b"ee\n");
    assert_eq!(lines(&h.collect()), ["three"]);
}

#[test]
fn crlf_and_a_leading_bom_are_stripped() {
    let mut h = Harness::new();
    h.append("a.log", b"\xEF\xBB\xBFfirst\r\nsecond\r\n");
    let got = h.collect();
    assert_eq!(lines(&got), ["first", "second"]);
    assert_eq!(got[0].offset, 3);
}

#[test]
fn excluded_names_symlinks_and_directories_are_not_read() {
    let mut h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), b"secret\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), h.path("link.log")).unwrap();
    fs::create_dir(h.path("dir.log")).unwrap();
    h.append("skip-me.log", b"skipped\n");
    h.append("b.txt", b"not matched\n");
    h.append("a.log", b"kept\n");
    assert_eq!(lines(&h.collect()), ["kept"]);
}

#[test]
fn over_long_lines_are_split_and_flagged_never_lost() {
    let mut h = Harness::with_options(TailOptions {
        max_line_bytes: 10,
        read_chunk_bytes: 16,
        ..TailOptions::default()
    });
    h.append("a.log", b"0123456789abcdefghij-end\nshort\n");
    let got = h.collect();
    assert_eq!(lines(&got), ["0123456789", "abcdefghij", "-end", "short"]);
    assert_eq!(
        got.iter().map(|r| r.split).collect::<Vec<_>>(),
        [true, true, false, false]
    );
    assert_eq!(got[2].offset, 20);
}

#[test]
fn a_partial_last_line_is_emitted_once_after_the_idle_timeout() {
    let mut h = Harness::with_options(TailOptions {
        partial_line_timeout: Some(Duration::from_millis(50)),
        ..TailOptions::default()
    });
    h.append("a.log", b"whole\nhalf");
    assert_eq!(lines(&h.collect()), ["whole"]);
    std::thread::sleep(Duration::from_millis(80));
    let got = h.collect();
    assert_eq!(lines(&got), ["half"]);
    assert!(got[0].partial);
    h.append("a.log", b" more\n");
    assert_eq!(lines(&h.collect()), [" more"]);
}

#[test]
fn rename_rotation_drains_the_old_file_and_reads_the_new_one_from_the_start() {
    let mut h = Harness::new();
    h.append("app.log", b"1\n2\n");
    assert_eq!(lines(&h.collect()), ["1", "2"]);
    h.append("app.log", b"3\n");
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log.1", b"4\n"); // the app still writes through its old descriptor
    h.append("app.log", b"5\n");
    let got = h.collect();
    let mut names = lines(&got);
    names.sort();
    assert_eq!(names, ["3", "4", "5"]);
    assert!(got.iter().all(|r| r.source == "app.log"));
    assert_eq!(
        h.tailer.open_files(),
        1,
        "the rotated file is closed once drained"
    );
}

#[test]
fn a_deleted_file_is_read_to_its_end_then_closed() {
    let mut h = Harness::new();
    h.append("a.log", b"1\n");
    let f = fs::OpenOptions::new()
        .append(true)
        .open(h.path("a.log"))
        .unwrap();
    assert_eq!(lines(&h.collect()), ["1"]);
    fs::remove_file(h.path("a.log")).unwrap();
    (&f).write_all(b"2\nlast").unwrap();
    let got = h.collect();
    assert_eq!(lines(&got), ["2", "last"]);
    assert!(
        got[1].partial,
        "the unterminated end of a closed file is emitted, flagged"
    );
    assert_eq!(h.tailer.open_files(), 0);
}

#[test]
fn truncation_reads_again_from_zero_with_new_ids() {
    let mut h = Harness::new();
    h.append("a.log", b"old line one\nold line two\n");
    let before = h.collect();
    fs::write(h.path("a.log"), b"new\n").unwrap(); // copytruncate, then a new line
    let after = h.collect();
    assert_eq!(lines(&after), ["new"]);
    assert_eq!(after[0].offset, 0);
    assert_ne!(after[0].id, before[0].id);
}

#[test]
fn copytruncate_overwritten_past_the_offset_is_caught_by_the_head_fingerprint() {
    let mut h = Harness::new();
    h.append("a.log", b"aaaa\n");
    h.collect();
    fs::write(h.path("a.log"), b"bbbb\ncccc\n").unwrap();
    assert_eq!(lines(&h.collect()), ["bbbb", "cccc"]);
}

#[test]
fn restart_resumes_exactly_at_the_committed_offset() {
    let mut h = Harness::new();
    h.append("a.log", b"1\n2\n");
    h.append("b.log", b"x\n");
    let first = h.collect();
    h.append("a.log", b"3\n");
    h.restart();
    h.append("a.log", b"4\n");
    let got = h.collect();
    assert_eq!(lines(&got), ["3", "4"]);
    let first_a = first.iter().find(|r| r.source == "a.log").unwrap();
    assert_eq!(
        got[0].id.split('-').next(),
        first_a.id.split('-').next(),
        "same file keeps its source id"
    );
}

#[test]
fn rotation_while_down_finishes_the_old_file_found_by_inode() {
    let mut h = Harness::new();
    h.append("app.log", b"1\n");
    h.collect();
    h.append("app.log", b"2\n");
    let position = h.tailer.position();
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", b"3\n");
    h.tailer = Harness::tailer_for(&h.watch, &h.options, Some(position));
    let mut got = lines(&h.collect())
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["2", "3"]);
}

#[test]
fn a_different_file_at_a_saved_inode_is_read_from_zero() {
    let mut h = Harness::new();
    h.append("a.log", b"first generation\n");
    h.collect();
    let position = h.tailer.position();
    // Same path and inode, other content, longer than the offset (rewritten while down).
    fs::write(h.path("a.log"), b"second generation, longer\n").unwrap();
    h.tailer = Harness::tailer_for(&h.watch, &h.options, Some(position));
    assert_eq!(lines(&h.collect()), ["second generation, longer"]);
}

#[test]
fn files_appearing_later_are_picked_up() {
    let mut h = Harness::new();
    assert!(h.collect().is_empty());
    h.append("late.log", b"hello\n");
    assert_eq!(lines(&h.collect()), ["hello"]);
}

#[test]
fn the_budget_bounds_a_read_and_says_there_is_more() {
    let mut h = Harness::with_options(TailOptions {
        max_line_bytes: 32,
        read_chunk_bytes: 64,
        ..TailOptions::default()
    });
    let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    h.append("a.log", text.as_bytes());
    h.tailer.rescan();
    let mut n = 0;
    let outcome = h.tailer.read(100, "t", &mut |_| n += 1);
    assert!(outcome.more);
    assert!(n < 1000);
    let rest = h.collect();
    assert_eq!(n + rest.len(), 1000);
    assert_eq!(rest.last().unwrap().line, "line 999");
}

#[test]
fn patterns_that_cannot_be_watched_are_refused_with_the_pattern_named() {
    let err = SourceSpec::compile(&["logs/*/x.log".into()], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"logs/*/x.log\"") && err.contains("must be absolute"),
        "{err}"
    );
    let err = SourceSpec::compile(&["/logs/[.log".into()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("watch pattern \"/logs/[.log\""), "{err}");
}

/// The kubelet's tree: `<namespace>_<pod>_<uid>/<container>/0.log`, rotated by renaming to
/// `0.log.<time>` (later gzipped), pods coming and going.
#[test]
fn a_kubelet_tree_is_tailed_with_sources_named_by_their_path_below_the_root() {
    let mut h = Harness::watching(&["{dir}/pods/*/*/*.log"], Harness::new().options);
    let web = "default_web-1_0f3c/web";
    let db = "default_db-0_77aa/db";
    for dir in [web, db] {
        fs::create_dir_all(h.path(&format!("pods/{dir}"))).unwrap();
        h.append(
            &format!("pods/{dir}/0.log"),
            format!("{dir} 1\n").as_bytes(),
        );
    }
    let got = h.collect();
    let mut sources: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.source.as_str(), r.line.as_str()))
        .collect();
    sources.sort_unstable();
    assert_eq!(
        sources,
        [
            ("default_db-0_77aa/db/0.log", "default_db-0_77aa/db 1"),
            ("default_web-1_0f3c/web/0.log", "default_web-1_0f3c/web 1"),
        ]
    );
    assert!(h
        .tailer
        .watch_dirs()
        .contains(&h.path("pods/default_web-1_0f3c")));
    // The kubelet rotates web's file while running, and db's while the collector is down.
    h.append(&format!("pods/{web}/0.log"), b"web 2\n");
    fs::rename(
        h.path(&format!("pods/{web}/0.log")),
        h.path(&format!("pods/{web}/0.log.20261206-040000")),
    )
    .unwrap();
    h.append(&format!("pods/{web}/0.log"), b"web 3\n");
    let got = h.collect();
    assert_eq!(lines(&got), ["web 2", "web 3"]);
    assert!(got
        .iter()
        .all(|r| r.source == "default_web-1_0f3c/web/0.log"));
    h.kill();
    h.append(&format!("pods/{db}/0.log"), b"db 2\n");
    fs::rename(
        h.path(&format!("pods/{db}/0.log")),
        h.path(&format!("pods/{db}/0.log.20261206-040100")),
    )
    .unwrap();
    h.append(&format!("pods/{db}/0.log"), b"db 3\n");
    // A new pod starts, and web's pod is deleted with its files.
    let new = "team_job-9_1b2c/main";
    fs::create_dir_all(h.path(&format!("pods/{new}"))).unwrap();
    h.append(&format!("pods/{new}/0.log"), b"job 1\n");
    fs::remove_dir_all(h.path("pods/default_web-1_0f3c")).unwrap();
    let got = h.collect();
    let mut got: Vec<(String, String)> = got.into_iter().map(|r| (r.source, r.line)).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ("default_db-0_77aa/db/0.log".into(), "db 2".into()),
            ("default_db-0_77aa/db/0.log".into(), "db 3".into()),
            ("team_job-9_1b2c/main/0.log".into(), "job 1".into()),
        ]
    );
    assert!(!h
        .tailer
        .watch_dirs()
        .contains(&h.path("pods/default_web-1_0f3c")));
}

#[test]
fn a_file_opened_on_its_create_event_is_read_even_if_rotated_away_before_the_rescan() {
    let mut h = Harness::new();
    h.append("app.log", b"first\n");
    assert_eq!(lines(&h.collect()), ["first"]);
    // Two rotations in a row between rescans: the middle file never sits under a watched name
    // when the directory is listed; only its create event saw it.
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", b"middle\n");
    let opener = h.tailer.early_opener();
    opener(&WatchEvent {
        path: h.path("app.log"),
        kind: WatchKind::Created,
    });
    fs::rename(h.path("app.log"), h.path("app.log.2")).unwrap();
    h.append("app.log", b"last\n");
    let mut got: Vec<String> = lines(&h.collect()).into_iter().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["last", "middle"]);
}

#[test]
fn a_nul_hole_left_by_a_writer_without_o_append_yields_no_nul_records() {
    let mut h = Harness::new();
    h.append("a.log", b"aaaa\nbbbb\n");
    assert_eq!(lines(&h.collect()), ["aaaa", "bbbb"]);
    // copytruncate, then a writer that kept its offset (10) writes its next line there.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(h.path("a.log"))
        .unwrap();
    f.set_len(0).unwrap();
    f.write_all_at(b"cccc\n", 10).unwrap();
    let got = h.collect();
    assert_eq!(lines(&got), ["cccc"]);
    assert_eq!(got[0].offset, 10);
}

#[test]
fn copytruncate_rewritten_to_the_same_length_is_noticed() {
    let mut h = Harness::new();
    h.append("a.log", b"line 0001\nline 0002\n");
    h.collect();
    std::thread::sleep(Duration::from_millis(20)); // a later mtime, even on coarse clocks
    fs::write(h.path("a.log"), b"line 0003\nline 0004\n").unwrap();
    assert_eq!(lines(&h.collect()), ["line 0003", "line 0004"]);
}

#[test]
fn a_file_created_and_rotated_away_while_down_is_still_read() {
    let mut h = Harness::new();
    h.append("app.log", b"1\n");
    h.collect();
    let position = h.tailer.position();
    std::thread::sleep(Duration::from_millis(20));
    // While the collector is down: two rotations; the middle file was never seen.
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", b"2\n");
    fs::rename(h.path("app.log"), h.path("app.log.2")).unwrap();
    h.append("app.log", b"3\n");
    h.tailer = Harness::tailer_for(&h.watch, &h.options, Some(position));
    let mut got: Vec<String> = lines(&h.collect()).into_iter().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, ["2", "3"]);
}

#[test]
fn a_compressed_file_rotated_while_down_is_not_read_as_lines() {
    let mut h = Harness::new();
    h.append("app.log", b"1\n");
    h.collect();
    h.kill();
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    fs::write(h.path("app.log.2.gz"), b"\x1f\x8b\x08\x00binary\n").unwrap();
    h.append("app.log", b"2\n");
    assert_eq!(lines(&h.collect()), ["2"]);
}

#[test]
fn a_rotated_file_finished_before_a_restart_is_not_read_again() {
    // Found by the model test: the restart took the closed file, modified within the
    // millisecond of the position, for one rotated while the collector was down.
    let mut h = Harness::new();
    h.append("app.log", b"1\n2\n");
    h.collect();
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", b"3\n");
    assert_eq!(lines(&h.collect()), ["3"]);
    assert_eq!(h.tailer.open_files(), 1, "the rotated file was closed");
    h.append("app.log.1", b"4\n"); // a late write through the app's old descriptor
    h.restart();
    assert_eq!(
        lines(&h.collect()),
        ["4"],
        "only what was added after it was finished"
    );
}

fn numbered(from: u32, to: u32) -> Vec<u8> {
    (from..to)
        .flat_map(|n| format!("2026-12-05 10:00:00,000 - line {n:05}\n").into_bytes())
        .collect()
}

fn sorted_lines(records: &[Collected]) -> Vec<String> {
    let mut got: Vec<String> = lines(records).into_iter().map(str::to_owned).collect();
    got.sort();
    got
}

fn expected_lines(from: u32, to: u32) -> Vec<String> {
    (from..to)
        .map(|n| format!("2026-12-05 10:00:00,000 - line {n:05}"))
        .collect()
}

/// Issue #11, case 1: the copy of a file truncated while the collector was down holds the
/// lines after the committed offset; it is read from there, never from 0.
#[test]
fn restart_after_copytruncate_reads_the_copy_from_the_committed_offset() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 1000));
    assert_eq!(h.collect().len(), 1000);
    h.append("app.log", &numbered(1000, 1100));
    let first = h.collect();
    assert_eq!(first.len(), 100);
    h.kill();
    h.append("app.log", &numbered(1100, 1200));
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(1200, 1300));
    let got = h.collect();
    assert_eq!(sorted_lines(&got), expected_lines(1100, 1300));
    let from_copy = got.iter().find(|r| r.line.ends_with("01100")).unwrap();
    assert_eq!(
        from_copy.id.split('-').next(),
        first[0].id.split('-').next(),
        "the copy continues the truncated file's source id"
    );
    assert_eq!(h.events("app.log", "lost_while_down"), 0);
    assert_eq!(h.events("app.log", "rotated_while_down"), 0);
}

/// Issue #11, case 3: lines written before the copy that the collector had not read yet are
/// read from the copy.
#[test]
fn copytruncate_while_running_reads_the_unread_end_from_the_copy() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    assert_eq!(h.collect().len(), 10);
    h.append("app.log", &numbered(10, 20)); // not read before the copy
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(20, 25));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 25));
    assert_eq!(h.events("app.log", "copytruncate_copy_found"), 1);
    assert_eq!(h.events("app.log", "truncated_without_copy"), 0);
}

/// Issue #11, case 2: `cp app.log app.log.1` over an older copy keeps that file's inode; the
/// old copy, still open, is not read again from 0, and the new copy is read once.
#[test]
fn a_copy_written_over_an_open_copy_is_never_read_twice() {
    let mut h = Harness::with_options(TailOptions {
        rotated_close_after: Duration::from_secs(3600),
        ..TailOptions::default()
    });
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(10, 20));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 20));
    assert_eq!(h.tailer.open_files(), 2, "the first copy is still open");
    std::thread::sleep(Duration::from_millis(20)); // a later mtime, even on coarse clocks
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(20, 30));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(20, 30));
    assert_eq!(h.events("app.log", "truncated_without_copy"), 0);
    // And the other order: the open copy is seen written over before the truncation.
    std::thread::sleep(Duration::from_millis(20));
    h.append("app.log", &numbered(30, 40));
    fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
    assert_eq!(sorted_lines(&h.collect()), expected_lines(30, 40));
    h.truncate("app.log");
    h.append("app.log", &numbered(40, 45));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(40, 45));
}

/// Issue #11, case 2 across a restart: the copy written over while the collector was down is
/// recognised by content, not inode.
#[test]
fn a_copy_written_over_while_down_is_read_from_the_committed_offset() {
    let mut h = Harness::with_options(TailOptions {
        rotated_close_after: Duration::from_secs(3600),
        ..TailOptions::default()
    });
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(10, 20));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 20));
    h.kill();
    h.append("app.log", &numbered(20, 30));
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(30, 35));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(20, 35));
    assert_eq!(
        h.events("app.log", "lost_while_down"),
        0,
        "the old copy had been read to its end"
    );
}

/// A copy made before a restart and the truncation after it: the copy is not adopted as a
/// file rotated while down (it is the file being followed), and when the truncation comes it
/// is read from the offset reached.
#[test]
fn a_copy_made_before_a_restart_is_not_read_from_zero() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.kill();
    h.append("app.log", &numbered(10, 20));
    fs::copy(h.path("app.log"), h.path("app.log.1")).unwrap();
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 20));
    h.truncate("app.log");
    h.append("app.log", &numbered(20, 25));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(20, 25));
}

/// Several copytruncates between two looks (the collector paused by backpressure): the first
/// copy continues what was read, the later ones hold generations never seen; all are read.
#[test]
fn several_copytruncates_between_two_reads_lose_no_generation() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.append("app.log", &numbered(10, 20));
    h.copytruncate("app.log", "app.log.1");
    h.append("app.log", &numbered(20, 30));
    h.copytruncate("app.log", "app.log.2");
    h.append("app.log", &numbered(30, 40));
    h.copytruncate("app.log", "app.log.3");
    h.append("app.log", &numbered(40, 45));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 45));
    assert_eq!(h.events("app.log", "unseen_generation_copy_found"), 2);
    // The next copytruncate finds only its own copy.
    std::thread::sleep(Duration::from_millis(20));
    h.append("app.log", &numbered(45, 50));
    h.copytruncate("app.log", "app.log.4");
    assert_eq!(sorted_lines(&h.collect()), expected_lines(45, 50));
}

/// After a truncation the file is known by nothing until its first new line is read; a copy
/// of that generation made before then is still found.
#[test]
fn a_generation_copied_before_its_first_line_was_read_is_found() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.copytruncate("app.log", "app.log.1");
    assert!(h.collect().is_empty());
    std::thread::sleep(Duration::from_millis(20));
    h.append("app.log", &numbered(10, 20));
    h.copytruncate("app.log", "app.log.2");
    h.append("app.log", &numbered(20, 25));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 25));
}

/// A copy logrotate is still writing holds only the first bytes of what the file holds:
/// the look for generations copied before they were read must not take it for one (it did,
/// when the look ran as the copy was created, and the generation was read twice).
#[test]
fn a_copy_still_being_written_is_not_taken_for_an_unseen_generation() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.copytruncate("app.log", "app.log.1");
    assert!(h.collect().is_empty(), "the new generation is empty");
    std::thread::sleep(Duration::from_millis(20));
    h.append("app.log", &numbered(10, 20));
    // The copy has its first bytes when the collector looks, before it reads the new lines.
    let mut got = h.copytruncate_seen_midway("app.log", "app.log.2", 40);
    h.append("app.log", &numbered(20, 25));
    got.extend(h.collect());
    assert_eq!(sorted_lines(&got), expected_lines(10, 25));
    assert_eq!(h.events("app.log", "unseen_generation_copy_found"), 0);
}

/// The same at a restart: a copy being written as the collector starts is not a file rotated
/// while it was down; once the file is truncated it is found by content and read on from the
/// committed offset.
#[test]
fn a_copy_being_written_as_the_collector_restarts_is_read_once() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    h.kill();
    h.append("app.log", &numbered(10, 20));
    let mut got = h.copytruncate_seen_midway("app.log", "app.log.1", 30);
    h.append("app.log", &numbered(20, 25));
    got.extend(h.collect());
    assert_eq!(sorted_lines(&got), expected_lines(10, 25));
    assert_eq!(h.events("app.log", "rotated_while_down"), 0);
}

/// Issue #11, case 4: a rotated file read to its end, not yet closed, then deleted while the
/// collector was down, lost nothing and is not reported as lost.
#[test]
fn a_drained_rotated_file_deleted_while_down_is_not_reported_lost() {
    let mut h = Harness::with_options(TailOptions {
        rotated_close_after: Duration::from_secs(3600),
        ..TailOptions::default()
    });
    h.append("app.log", &numbered(0, 10));
    h.collect();
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.append("app.log", &numbered(10, 20));
    assert_eq!(h.collect().len(), 10);
    assert_eq!(h.tailer.open_files(), 2, "the rotated file is held open");
    h.kill();
    fs::remove_file(h.path("app.log.1")).unwrap();
    h.append("app.log", &numbered(20, 25));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(20, 25));
    assert_eq!(h.events("app.log", "lost_while_down"), 0);
}

/// Without a copy, the bytes seen but not read before a truncation are counted.
#[test]
fn a_truncation_without_a_copy_counts_the_unread_bytes() {
    let mut h = Harness::new();
    h.append("app.log", &numbered(0, 10));
    h.collect();
    // A line still being written: seen, not yet handed on.
    h.append("app.log", b"2026-12-05 10:00:00,000 - unfinish");
    assert!(h.collect().is_empty());
    h.truncate("app.log");
    h.append("app.log", &numbered(10, 11));
    assert_eq!(sorted_lines(&h.collect()), expected_lines(10, 11));
    assert_eq!(h.events("app.log", "truncated_without_copy"), 1);
    let unread = h.tailer.metrics.unread_bytes_of("app.log").get();
    assert_eq!(unread, "2026-12-05 10:00:00,000 - unfinish".len() as u64);
}

/// A model-based property test: random sequences of what applications and log rotation do to
/// the files — rename rotation, copytruncate to a new copy or over the old one, deletion — with
/// kills of the tailer in between (the files change while it is down), and the promise checked
/// at the end: every complete line written is read exactly once.
mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `lines` complete lines to file `file`, then maybe the start of one more.
        Write {
            file: usize,
            lines: u8,
            partial: bool,
        },
        /// Read what is there (the collector's loop turning).
        Collect,
        /// Rename the live file away (logrotate's default), a new one appears on the next write.
        Rotate { file: usize },
        /// Delete the live file while the tailer may still be reading it.
        Delete { file: usize },
        /// copytruncate: copy the live file aside (to a new name, or over the previous copy),
        /// then truncate it; the app keeps writing to it. `looked_midway`: the tailer reads
        /// (or restarts) while the copy holds only its first half, as logrotate's copy can be
        /// seen while it is being written.
        CopyTruncate {
            file: usize,
            over: bool,
            looked_midway: bool,
        },
        /// Kill the tailer after its last commit; it restarts from that position at the next
        /// collect, so what happens in between happens while it is down.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 1..40u8, any::<bool>())
                .prop_map(|(file, lines, partial)| Op::Write { file, lines, partial }),
            2 => Just(Op::Collect),
            1 => (0..3usize).prop_map(|file| Op::Rotate { file }),
            1 => (0..3usize).prop_map(|file| Op::Delete { file }),
            1 => (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(file, over, looked_midway)| {
                Op::CopyTruncate { file, over, looked_midway }
            }),
            1 => Just(Op::Restart),
        ]
    }

    /// What the application believes it wrote to one file name.
    #[derive(Default)]
    struct AppFile {
        generation: u32,
        next: u32,
        /// The second half of a line whose first half is already in the file.
        unfinished: Option<String>,
        /// Whether the tailer has looked since this generation was created. The collector
        /// opens a new file on its inotify create event; this unit-level tailer has no
        /// watcher, so the model collects before rotating or deleting a file never seen.
        seen: bool,
    }

    struct Model {
        h: Harness,
        files: HashMap<usize, AppFile>,
        written: Vec<String>,
        read: Vec<String>,
        rotations: u32,
    }

    impl Model {
        fn new() -> Self {
            Model {
                h: Harness::new(),
                files: HashMap::new(),
                written: Vec::new(),
                read: Vec::new(),
                rotations: 0,
            }
        }

        fn name(file: usize) -> String {
            format!("f{file}.log")
        }

        fn write(&mut self, file: usize, lines: u8, partial: bool) {
            let f = self.files.entry(file).or_default();
            let mut bytes = f.unfinished.take().unwrap_or_default().into_bytes();
            let line = |f: &mut AppFile| {
                let line = format!(
                    "f{file}-g{}-{}-{}",
                    f.generation,
                    f.next,
                    "x".repeat(f.next as usize % 17)
                );
                f.next += 1;
                line
            };
            for _ in 0..lines {
                let l = line(f);
                bytes.extend_from_slice(l.as_bytes());
                bytes.push(b'\n');
                self.written.push(l);
            }
            if partial {
                let l = line(f);
                let (head, tail) = l.split_at(l.len() / 2);
                bytes.extend_from_slice(head.as_bytes());
                f.unfinished = Some(format!("{tail}\n"));
                self.written.push(l);
            }
            self.h.append(&Self::name(file), &bytes);
        }

        /// The application finishes its last line before its file is rotated or deleted.
        fn finish_line(&mut self, file: usize) {
            if let Some(rest) = self.files.get_mut(&file).and_then(|f| f.unfinished.take()) {
                self.h.append(&Self::name(file), rest.as_bytes());
            }
        }

        fn collect(&mut self) {
            let got = self.h.collect();
            self.read.extend(got.into_iter().map(|r| r.line));
            for (file, f) in &mut self.files {
                // A file emptied by copytruncate is known by its first line: the tailer
                // needs to have read one to follow the generation (see the README's limit).
                f.seen |= fs::metadata(self.h.path(&Self::name(*file))).is_ok_and(|m| m.len() > 0);
            }
        }

        fn make_seen(&mut self, file: usize) -> bool {
            if !self.h.path(&Self::name(file)).exists() {
                return false;
            }
            if !self.files.get(&file).is_some_and(|f| f.seen) {
                self.collect();
            }
            true
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Write {
                    file,
                    lines,
                    partial,
                } => self.write(file, lines, partial),
                Op::Collect => self.collect(),
                Op::Rotate { file } => {
                    if self.make_seen(file) {
                        self.finish_line(file);
                        self.rotations += 1;
                        let rotated = format!("{}.{}", Self::name(file), self.rotations);
                        fs::rename(self.h.path(&Self::name(file)), self.h.path(&rotated)).unwrap();
                        self.next_generation(file);
                    }
                }
                Op::Delete { file } => {
                    if self.make_seen(file) {
                        self.finish_line(file);
                        if self.h.down.is_some() {
                            // A file deleted while no collector holds it is gone for anyone.
                            self.collect();
                        }
                        fs::remove_file(self.h.path(&Self::name(file))).unwrap();
                        // A deleted file lives on only through the tailer's descriptor, which a
                        // restart would close: the collector reads it to the end first (the
                        // kubelet's log files are rotated, not deleted, while being written).
                        self.collect();
                        self.next_generation(file);
                    }
                }
                Op::CopyTruncate {
                    file,
                    over,
                    looked_midway,
                } => {
                    if self.make_seen(file) {
                        self.finish_line(file);
                        let copy = if over {
                            let copy = format!("{}.copy", Self::name(file));
                            if self.h.path(&copy).exists() {
                                // Unread lines of the old copy would be gone for any reader.
                                self.collect();
                            }
                            copy
                        } else {
                            self.rotations += 1;
                            format!("{}.c{}", Self::name(file), self.rotations)
                        };
                        if looked_midway {
                            let name = Self::name(file);
                            let half = fs::metadata(self.h.path(&name)).unwrap().len() / 2;
                            let got = self.h.copytruncate_seen_midway(&name, &copy, half as usize);
                            self.read.extend(got.into_iter().map(|r| r.line));
                        } else {
                            self.h.copytruncate(&Self::name(file), &copy);
                        }
                        // Its next generation is read before its next rotation (the collector
                        // wakes on the write, milliseconds later).
                        if let Some(f) = self.files.get_mut(&file) {
                            f.seen = false;
                        }
                    }
                }
                Op::Restart => {
                    if self.h.down.is_none() {
                        self.h.kill();
                    }
                }
            }
        }

        fn next_generation(&mut self, file: usize) {
            let f = self
                .files
                .get_mut(&file)
                .expect("rotated files were written");
            f.generation += 1;
            f.next = 0;
            f.seen = false;
        }

        fn finish(mut self) -> (Vec<String>, Vec<String>) {
            let files: Vec<usize> = self.files.keys().copied().collect();
            for file in files {
                self.finish_line(file);
            }
            self.collect();
            (self.written, self.read)
        }
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        // PROPTEST_CASES=5000 for a longer hunt; the default run stays short.
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn every_line_written_is_read_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
            let mut model = Model::new();
            for op in ops {
                model.apply(op);
            }
            let (written, read) = model.finish();
            let mut times: HashMap<&str, i64> = HashMap::new();
            for line in &read {
                *times.entry(line).or_default() += 1;
            }
            for line in &written {
                *times.entry(line).or_default() -= 1;
            }
            let mut wrong: Vec<(&str, i64)> = times.into_iter().filter(|(_, n)| *n != 0).collect();
            wrong.sort();
            // Each line with how many times it was read too often (negative: lost).
            prop_assert!(wrong.is_empty(), "lines not read exactly once: {:?}", wrong);
        }
    }
}

fn cri(stream: &str, tag: &str, text: &str) -> String {
    format!(
        "2026-12-06T10:30:45.000000{:03}Z {stream} {tag} {text}\n",
        text.len()
    )
}

#[test]
fn cri_pieces_join_into_one_record_exactly_once_across_restarts() {
    use sidecar_record::Stream;
    let mut h = Harness::watching(&["cri:{dir}/*.log"], TailOptions::default());
    h.append("0.log", cri("stdout", "P", "hello ").as_bytes());
    h.append("0.log", cri("stderr", "F", "E1").as_bytes());
    assert_eq!(
        lines(&h.collect()),
        ["E1"],
        "the stdout line waits for its last piece"
    );
    // Killed with the piece read and committed: it travels in the position.
    h.kill();
    h.append("0.log", cri("stdout", "P", "big ").as_bytes());
    let got = h.collect();
    assert!(got.is_empty(), "{got:?}");
    h.restart();
    h.append("0.log", cri("stdout", "F", "world").as_bytes());
    h.append("0.log", "not a cri line\n".as_bytes());
    let got = h.collect();
    assert_eq!(lines(&got), ["hello big world", "not a cri line"]);
    assert_eq!(got[0].offset, 0, "the id is the first piece's offset");
    assert_eq!(got[0].stream, Some(Stream::Stdout));
    assert_eq!(
        got[0].logged_at.as_deref(),
        Some("2026-12-06T10:30:45.000000006Z")
    );
    assert!(!got[0].malformed && got[1].malformed && got[1].stream.is_none());
}

#[test]
fn docker_json_lines_and_their_16k_pieces_join_and_auto_decides_per_file() {
    use sidecar_record::Stream;
    let mut h = Harness::watching(
        &["docker:{dir}/*.log", "auto:{dir}/*.out"],
        TailOptions::default(),
    );
    let piece = "x".repeat(16 * 1024);
    let doc = |log: &str, stream: &str| {
        format!(
            "{}\n",
            serde_json::json!({"log": log, "stream": stream, "time": "2026-12-06T10:30:45.1Z"})
        )
    };
    h.append("c.log", doc(&piece, "stdout").as_bytes());
    h.append("c.log", doc("tail\n", "stdout").as_bytes());
    h.append("c.log", doc("err \"quoted\"\n", "stderr").as_bytes());
    h.append("cri.out", cri("stderr", "F", "from cri").as_bytes());
    h.append("plain.out", b"2026-11-22 10:30:45,123 - plain\n");
    let mut got = h.collect();
    got.sort_by(|a, b| (&a.source, a.offset).cmp(&(&b.source, b.offset)));
    let summary: Vec<_> = got
        .iter()
        .map(|r| (r.source.as_str(), r.line.len(), r.stream))
        .collect();
    assert_eq!(
        summary,
        [
            ("c.log", 16 * 1024 + 4, Some(Stream::Stdout)),
            ("c.log", 12, Some(Stream::Stderr)),
            ("cri.out", 8, Some(Stream::Stderr)),
            ("plain.out", 31, None),
        ]
    );
    assert_eq!(got[1].line, "err \"quoted\"");
    assert!(got.iter().all(|r| !r.malformed));
}

#[test]
fn pieces_left_when_a_rotated_file_closes_go_on_flagged_partial() {
    let mut h = Harness::watching(
        &["cri:{dir}/*.log"],
        TailOptions {
            rotated_close_after: Duration::ZERO,
            ..TailOptions::default()
        },
    );
    h.append("0.log", cri("stdout", "P", "never finished").as_bytes());
    assert!(h.collect().is_empty());
    fs::rename(h.path("0.log"), h.path("0.log.20261206-103045")).unwrap();
    let got = h.collect();
    assert_eq!(lines(&got), ["never finished"]);
    assert!(got[0].partial);
}

#[test]
fn a_line_the_runtime_was_writing_when_the_kubelet_rotated_ends_in_the_next_file() {
    let mut h = Harness::watching(
        &["cri:{dir}/*.log"],
        TailOptions {
            rotated_close_after: Duration::ZERO,
            ..TailOptions::default()
        },
    );
    h.append(
        "0.log",
        cri("stdout", "P", "started in the old file, ").as_bytes(),
    );
    assert!(h.collect().is_empty());
    fs::rename(h.path("0.log"), h.path("0.log.20261206-103045")).unwrap();
    h.append(
        "0.log.20261206-103045",
        cri("stdout", "P", "still there, ").as_bytes(),
    );
    h.append(
        "0.log",
        cri("stdout", "F", "ended in the new one").as_bytes(),
    );
    let got = h.collect();
    assert_eq!(
        lines(&got),
        ["started in the old file, still there, ended in the new one"]
    );
    assert!(!got[0].partial);
    assert_eq!(got[0].offset, 0);
}

#[test]
fn a_quiet_file_beside_a_busy_one_is_read_while_the_busy_one_keeps_the_reads_coming() {
    let mut h = Harness::new();
    h.append("busy.log", b"b0\n");
    h.append("quiet.log", b"q0\n");
    assert_eq!(h.collect().len(), 2);
    std::thread::sleep(QUIET_AFTER + Duration::from_millis(50));
    h.read();
    // A line in the quiet file while reads come every 10 ms for the busy one (no rescan): it
    // may wait up to QUIET_LOOK_EVERY for a look, then it is read, once.
    h.append("quiet.log", b"q1\n");
    let mut got = Vec::new();
    let started = Instant::now();
    for i in 1.. {
        h.append("busy.log", format!("b{i}\n").as_bytes());
        got.extend(h.read().0);
        if started.elapsed() > QUIET_LOOK_EVERY * 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let quiet: Vec<&str> = got
        .iter()
        .filter(|r| r.source == "quiet.log")
        .map(|r| r.line.as_str())
        .collect();
    assert_eq!(quiet, ["q1"]);
    // A rescan (the drain at shutdown makes one) looks at every file at once.
    std::thread::sleep(QUIET_AFTER + Duration::from_millis(50));
    h.read();
    h.append("quiet.log", b"q2\n");
    h.tailer.rescan();
    assert_eq!(lines(&h.read().0), ["q2"]);
}

#[test]
fn a_quiet_loop_waits_ten_times_longer_unless_a_file_waits_on_a_timer() {
    let mut h = Harness::with_options(TailOptions {
        rotated_close_after: Duration::from_secs(5),
        ..TailOptions::default()
    });
    let second = Duration::from_secs(1);
    let backstop = second * WATCHED_BACKSTOP_FACTOR;
    h.append("app.log", b"whole\n");
    h.collect();
    assert_eq!(h.tailer.quiet_wait(second), second, "no watch known yet");
    h.tailer.set_unwatched_dirs(0);
    assert_eq!(h.tailer.quiet_wait(second), backstop);
    // An incomplete line waits for its end, or for --partial-line-timeout.
    h.append("app.log", b"no end yet");
    h.collect();
    assert_eq!(h.tailer.quiet_wait(second), second);
    h.append("app.log", b"\n");
    assert_eq!(lines(&h.collect()), ["no end yet"]);
    assert_eq!(h.tailer.quiet_wait(second), backstop);
    // A file rotated away is read to its end, then closed after --rotated-close-after.
    fs::rename(h.path("app.log"), h.path("app.log.1")).unwrap();
    h.collect();
    assert_eq!(h.tailer.quiet_wait(second), second);
    h.tailer.set_unwatched_dirs(1);
    assert_eq!(h.tailer.quiet_wait(second), second);
}
