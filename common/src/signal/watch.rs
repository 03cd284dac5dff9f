//! [`DirWatcher`]: inotify events on a thread of its own, turned into wakes of a stage loop.
//!
//! Why inotify directly and not through the `notify` crate: the watch mask. `notify` asks for
//! every open, append and close in a directory, and its thread wakes for each. An app logging
//! line by line makes thousands of appends a second, and at a steady 10,000 lines/s that thread
//! was 39 % of the collector's CPU (BENCHMARKS.md, "Steady state: what woke the stages"). Here
//! the mask is what each loop needs:
//!
//! - a collector's directories: entries coming and going always; appends only while its loop
//!   waits for them ([`DirWatcher::follow_appends`]). A loop that found lines comes back after
//!   its linger anyway, so appends meanwhile would wake nobody.
//! - a journal reader ([`DirWatcher::start_for_file`]): the commit file's own changes, and the
//!   directory's entries so that a commit file made later is watched too; not the segments.
//!
//! Easy to get wrong: an event is a hint, never a fact. A queue overflow or a watch that went
//! away is reported as [`WatchKind::Lost`], on which loops look at everything again; the
//! loops also look on a slow timer.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use tracing::{error, warn};

use super::Wakeup;

/// What happened to a path under watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The entry (`dir/name`), the watched file, or the watched directory itself.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: WatchKind,
}

impl WatchEvent {
    /// Events about `path` (none in particular when empty) may have been missed.
    fn lost(path: PathBuf) -> Self {
        Self {
            path,
            kind: WatchKind::Lost,
        }
    }
}

/// The kinds of [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// Written to, or closed by a writer.
    Appended,
    /// Created, or renamed into the directory.
    Created,
    /// Deleted, or renamed out of the directory.
    Removed,
    /// Its metadata changed (permissions, times, links).
    Changed,
    /// Events may have been missed (the kernel's queue overflowed, or a watched directory
    /// itself went away): whoever keeps state from events should look again.
    Lost,
}

/// What [`DirWatcher::watch_exactly`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchChange {
    /// Directories newly under watch.
    pub added: usize,
    /// Every directory asked for is under watch.
    pub complete: bool,
}

/// Entries coming and going, and the directory itself going.
const ENTRIES: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);
/// Bytes written to a file.
const APPENDS: WatchMask = WatchMask::MODIFY.union(WatchMask::CLOSE_WRITE);
/// A watched file's own changes.
const FILE: WatchMask = APPENDS
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// Decides, on the watch thread, whether an event wakes the loop (and does any work that
/// cannot wait for the loop's next turn).
type Handler = Box<dyn FnMut(&WatchEvent) -> bool + Send>;

/// Watches directories (not recursively) and wakes a [`Wakeup`] on their events.
pub struct DirWatcher {
    /// `None` when inotify could not start: everything is left to the loop's periodic check.
    shared: Option<Arc<Shared>>,
    /// The directories under watch.
    watched: HashSet<PathBuf>,
    /// How many directories asked for are not under watch.
    unwatched: usize,
    /// A kernel limit was reported already: said once, not per directory.
    limit_reported: bool,
    waker: Option<Arc<Waker>>,
    thread: Option<JoinHandle<()>>,
}

/// What the watcher and its thread share.
struct Shared {
    watches: Mutex<Watches>,
    /// Watch descriptor → what it watches.
    targets: Mutex<HashMap<i32, Target>>,
    /// The one file a journal reader watches in each directory, if that is its mode.
    file_name: Option<&'static str>,
    /// Whether directory watches include appends.
    appends: AtomicBool,
    stop: AtomicBool,
}

#[derive(Debug, Clone)]
struct Target {
    wd: WatchDescriptor,
    path: PathBuf,
    is_dir: bool,
}

impl DirWatcher {
    /// Starts watching `dirs`, waking `wakeup` on any event. A directory that cannot be
    /// watched (missing, no inotify watches left) is logged and left to the loop's periodic
    /// check, never an error: the watch only lowers latency.
    pub fn start<'a>(dirs: impl IntoIterator<Item = &'a Path>, wakeup: &Wakeup) -> Self {
        Self::start_filtered(dirs, wakeup, None, Box::new(|_| true))
    }

    /// As [`DirWatcher::start`], and also hands every event to `on_event` (on the watcher's
    /// thread, before the wake), for work that cannot wait for the loop's next turn.
    pub fn start_with<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> Self {
        Self::start_filtered(
            dirs,
            wakeup,
            None,
            Box::new(move |event| {
                on_event(event);
                true
            }),
        )
    }

    /// Watches the file called `file_name` in each of `dirs` (once it exists) and wakes only
    /// on its changes, its creation or removal, and lost events. A stage reading a journal
    /// watches its commit file this way: the segments are written before each commit, and
    /// waking on those writes would turn the loop once for nothing before every batch.
    pub fn start_for_file<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        file_name: &'static str,
    ) -> Self {
        Self::start_for_file_with(dirs, wakeup, file_name, |_| {})
    }

    /// As [`DirWatcher::start_for_file`], and also hands each event that wakes to `on_event`
    /// (on the watcher's thread, before the wake).
    pub fn start_for_file_with<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        file_name: &'static str,
        on_event: impl Fn(&WatchEvent) + Send + 'static,
    ) -> Self {
        let wakes = move |event: &WatchEvent| {
            let wakes = event.kind == WatchKind::Lost
                || event.path.file_name() == Some(OsStr::new(file_name));
            if wakes {
                on_event(event);
            }
            wakes
        };
        Self::start_filtered(dirs, wakeup, Some(file_name), Box::new(wakes))
    }

    fn start_filtered<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        wakeup: &Wakeup,
        file_name: Option<&'static str>,
        handler: Handler,
    ) -> Self {
        let mut this = Self {
            shared: None,
            watched: HashSet::new(),
            unwatched: 0,
            limit_reported: false,
            waker: None,
            thread: None,
        };
        match spawn(wakeup.clone(), file_name, handler) {
            Ok((shared, waker, thread)) => {
                this.shared = Some(shared);
                this.waker = Some(waker);
                this.thread = Some(thread);
            }
            Err(e) => {
                match limit_of(&e) {
                    Some(limit) => {
                        error!(error = %e, limit, "Cannot start the file watcher: the kernel's limit on inotify instances per user is reached; relying on periodic checks (slower to see new lines and rotations). Raise it on the node, e.g. sysctl -w {limit}=1024.")
                    }
                    None => {
                        warn!(error = %e, "Cannot start the file watcher; relying on periodic checks.")
                    }
                }
                this.limit_reported = true;
            }
        }
        for dir in dirs {
            this.add(dir);
        }
        this
    }

    /// Whether every directory asked for is watched.
    pub fn is_complete(&self) -> bool {
        self.shared.is_some() && self.unwatched == 0
    }

    /// How many directories asked for are not under watch (left to periodic checks).
    pub fn unwatched(&self) -> usize {
        if self.shared.is_some() {
            self.unwatched
        } else {
            self.unwatched.max(1)
        }
    }

    /// Adds a directory to the watch (e.g. one that did not exist at start).
    /// Returns whether the watch is in place.
    pub fn add(&mut self, dir: &Path) -> bool {
        if self.watched.contains(dir) {
            return true;
        }
        let Some(shared) = &self.shared else {
            self.unwatched += 1;
            return false;
        };
        match shared.watch_dir(dir) {
            Ok(()) => {
                self.watched.insert(dir.to_owned());
                true
            }
            Err(e) => {
                self.unwatched += 1;
                match limit_of(&e) {
                    Some(limit) if !std::mem::replace(&mut self.limit_reported, true) => {
                        error!(dir = %dir.display(), limit, watched = self.watched.len(), "Cannot watch a log directory: the kernel's limit on inotify watches per user is reached. It and any further ones are listed periodically instead (slower to see new lines and rotations); raise the limit on the node, e.g. sysctl -w {limit}=524288.");
                    }
                    Some(_) => {}
                    None => {
                        warn!(dir = %dir.display(), error = %e, "Cannot watch directory; relying on periodic checks.");
                    }
                }
                false
            }
        }
    }

    /// Watches exactly `dirs` from now on: adds those not yet watched, drops the watches of
    /// those no longer asked for (a deleted pod's), and retries those that failed before.
    pub fn watch_exactly(&mut self, dirs: &[PathBuf]) -> WatchChange {
        let wanted: HashSet<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|dir| !wanted.contains(dir.as_path()))
            .cloned()
            .collect();
        for dir in gone {
            if let Some(shared) = &self.shared {
                shared.unwatch_dir(&dir);
            }
            self.watched.remove(&dir);
        }
        self.unwatched = 0;
        let mut added = 0;
        for dir in dirs {
            if !self.watched.contains(dir) && self.add(dir) {
                added += 1;
            }
        }
        WatchChange {
            added,
            complete: self.is_complete(),
        }
    }

    /// Whether appends are reported ([`DirWatcher::follow_appends`]); always true without a
    /// working watch, which has nothing to turn off.
    pub fn follows_appends(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.appends.load(Ordering::Relaxed))
    }

    /// Whether appends to the files of the watched directories are reported (they are at
    /// start). A loop that just read lines turns them off until it finds nothing new, and
    /// reads once more after turning them on, so no append falls between the two.
    pub fn follow_appends(&mut self, on: bool) {
        let Some(shared) = &self.shared else {
            return;
        };
        if shared.appends.swap(on, Ordering::Relaxed) == on {
            return;
        }
        for dir in &self.watched {
            if let Err(e) = shared.watch_dir(dir) {
                warn!(dir = %dir.display(), error = %e, "Cannot change the watch of a directory; relying on periodic checks.");
            }
        }
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if let Some(waker) = &self.waker {
            let _ = waker.wake();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn dir_mask(&self) -> WatchMask {
        match (self.file_name, self.appends.load(Ordering::Relaxed)) {
            (None, true) => ENTRIES | APPENDS,
            _ => ENTRIES,
        }
    }

    /// Watches `dir` (or changes its watch to the current mask), and its file when a journal
    /// reader's.
    fn watch_dir(&self, dir: &Path) -> io::Result<()> {
        let wd = self.watches.lock().add(dir, self.dir_mask())?;
        self.targets.lock().insert(
            wd.get_watch_descriptor_id(),
            Target {
                wd,
                path: dir.to_owned(),
                is_dir: true,
            },
        );
        if let Some(name) = self.file_name {
            self.watch_file(&dir.join(name));
        }
        Ok(())
    }

    /// Watches a journal reader's file, if it exists (else its creation in the directory
    /// brings it here again).
    fn watch_file(&self, path: &Path) {
        if let Ok(wd) = self.watches.lock().add(path, FILE) {
            self.targets.lock().insert(
                wd.get_watch_descriptor_id(),
                Target {
                    wd,
                    path: path.to_owned(),
                    is_dir: false,
                },
            );
        }
    }

    fn unwatch_dir(&self, dir: &Path) {
        let mut watches = self.watches.lock();
        self.targets.lock().retain(|_, target| {
            let of_dir = target.path == dir || target.path.parent() == Some(dir);
            if of_dir {
                // Fails when the directory is gone, which removed the watch already.
                let _ = watches.remove(target.wd.clone());
            }
            !of_dir
        });
    }

    /// What an inotify event means, if anything; keeps the targets up to date on the way.
    fn translate(&self, wd: i32, mask: EventMask, name: Option<&OsStr>) -> Option<WatchEvent> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(WatchEvent::lost(PathBuf::new()));
        }
        if mask.contains(EventMask::IGNORED) {
            // The watch is gone (its directory or file was removed, or we removed it).
            let target = self.targets.lock().remove(&wd)?;
            return target.is_dir.then(|| WatchEvent::lost(target.path));
        }
        let target = self.targets.lock().get(&wd).cloned()?;
        let path = match name {
            Some(name) if target.is_dir => target.path.join(name),
            _ => target.path.clone(),
        };
        let kind = if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            WatchKind::Created
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            WatchKind::Removed
        } else if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE) {
            WatchKind::Appended
        } else if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            if target.is_dir {
                WatchKind::Lost
            } else {
                WatchKind::Removed
            }
        } else {
            WatchKind::Changed
        };
        if kind == WatchKind::Created
            && target.is_dir
            && self
                .file_name
                .is_some_and(|file| name == Some(OsStr::new(file)))
        {
            self.watch_file(&path);
        }
        Some(WatchEvent { path, kind })
    }
}

const INOTIFY: Token = Token(0);
const STOP: Token = Token(1);

/// Starts inotify and the thread that reads it.
fn spawn(
    wakeup: Wakeup,
    file_name: Option<&'static str>,
    handler: Handler,
) -> io::Result<(Arc<Shared>, Arc<Waker>, JoinHandle<()>)> {
    let inotify = Inotify::init()?;
    let poll = Poll::new()?;
    poll.registry().register(
        &mut SourceFd(&inotify.as_raw_fd()),
        INOTIFY,
        Interest::READABLE,
    )?;
    let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
    let shared = Arc::new(Shared {
        watches: Mutex::new(inotify.watches()),
        targets: Mutex::new(HashMap::new()),
        file_name,
        appends: AtomicBool::new(true),
        stop: AtomicBool::new(false),
    });
    let thread = std::thread::Builder::new()
        .name("file-watch".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || read_events(inotify, poll, &shared, handler, &wakeup)
        })?;
    Ok((shared, waker, thread))
}

/// The watch thread: reads what the kernel queued, hands each event to `handler` and wakes
/// the loop when it says so, until stopped.
fn read_events(
    mut inotify: Inotify,
    mut poll: Poll,
    shared: &Shared,
    mut handler: Handler,
    wakeup: &Wakeup,
) {
    let mut ready = Events::with_capacity(4);
    let mut buffer = vec![0u8; 64 << 10];
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut ready, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "The file watch stopped; relying on periodic checks.");
            return;
        }
        // Read until the queue is empty: the poll reports the descriptor once per change.
        loop {
            let (wake, failed) = match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    let wake = events.fold(false, |wake, raw| {
                        let wd = raw.wd.get_watch_descriptor_id();
                        let event = shared.translate(wd, raw.mask, raw.name);
                        event.is_some_and(|event| handler(&event)) || wake
                    });
                    (wake, false)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "Cannot read file watch events; looking at everything again.");
                    (handler(&WatchEvent::lost(PathBuf::new())), true)
                }
            };
            if wake {
                wakeup.wake();
            }
            if failed {
                break; // Back to the poll, not around a read that keeps failing.
            }
        }
    }
}

/// The sysctl whose limit `error` says was reached, if it says so.
fn limit_of(error: &io::Error) -> Option<&'static str> {
    match error.raw_os_error() {
        Some(ENOSPC) => Some("fs.inotify.max_user_watches"),
        Some(EMFILE) => Some("fs.inotify.max_user_instances"),
        _ => None,
    }
}

/// `inotify_add_watch`'s "no watches left" and `inotify_init`'s "no instances left".
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_inotify_limit_reached_is_named_by_its_sysctl() {
        let io = |code| io::Error::from_raw_os_error(code);
        assert_eq!(limit_of(&io(ENOSPC)), Some("fs.inotify.max_user_watches"));
        assert_eq!(limit_of(&io(EMFILE)), Some("fs.inotify.max_user_instances"));
        assert_eq!(limit_of(&io(2)), None);
    }

    #[test]
    fn the_watch_follows_the_directories_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let on_event = move |event: &WatchEvent| {
            let _ = tx.send(event.clone());
        };
        let mut watcher = DirWatcher::start_with([a.as_path()], &Wakeup::new(), on_event);
        assert!(watcher.is_complete());
        let change = watcher.watch_exactly(&[b.clone(), tmp.path().join("missing")]);
        assert_eq!(change.added, 1);
        assert!(!change.complete, "a missing directory cannot be watched");
        assert_eq!(watcher.unwatched(), 1);
        let change = watcher.watch_exactly(std::slice::from_ref(&b));
        assert_eq!((change.added, change.complete), (0, true));
        // The dropped watch of `a` may report itself gone; after that, only `b` speaks.
        std::fs::write(a.join("x.log"), b"x").unwrap();
        std::fs::write(b.join("x.log"), b"x").unwrap();
        let seen: Vec<WatchEvent> =
            std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(2)).ok())
                .take_while(|e| e.path != b.join("x.log") || e.kind != WatchKind::Created)
                .collect();
        assert!(
            seen.iter()
                .all(|e| !e.path.starts_with(&a) || e.kind == WatchKind::Lost),
            "a no longer watched directory is quiet: {seen:?}"
        );
    }

    #[test]
    fn the_watcher_does_not_wake_on_its_own_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("commit.json"), b"{}").unwrap();
        let w = Wakeup::new();
        let _watcher = DirWatcher::start([dir.path()], &w);
        std::thread::sleep(Duration::from_millis(50));
        w.wait(Duration::ZERO);
        let _ = std::fs::read(dir.path().join("commit.json")).unwrap();
        let _ = std::fs::read_dir(dir.path()).unwrap().count();
        let t = Instant::now();
        w.wait(Duration::from_millis(300));
        assert!(t.elapsed() >= Duration::from_millis(300), "woken by a read");
        std::fs::write(dir.path().join("commit.json"), b"{\"n\":1}").unwrap();
        let t = Instant::now();
        w.wait(Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a write wakes the loop"
        );
    }

    #[test]
    fn a_watch_for_one_file_wakes_on_that_file_only_even_when_it_comes_later() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wakeup::new();
        let handed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = handed.clone();
        let _watcher =
            DirWatcher::start_for_file_with([dir.path()], &w, "commit.json", move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
        let quiet = |what: &str| {
            let t = Instant::now();
            let before = handed.load(Ordering::Relaxed);
            w.wait(Duration::from_millis(300));
            assert!(t.elapsed() >= Duration::from_millis(300), "woken by {what}");
            assert_eq!(handed.load(Ordering::Relaxed), before, "{what} handed over");
        };
        let woken = |what: &str| {
            let t = Instant::now();
            w.wait(Duration::from_secs(5));
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{what} wakes the loop"
            );
        };
        std::thread::sleep(Duration::from_millis(50));
        w.wait(Duration::ZERO);
        std::fs::write(dir.path().join("segment-0.ndjson"), b"a record\n").unwrap();
        quiet("a segment being made");
        std::fs::write(dir.path().join("commit.json"), b"{}").unwrap();
        woken("the commit file made");
        std::thread::sleep(Duration::from_millis(50));
        w.wait(Duration::ZERO);
        let mut segment = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("segment-0.ndjson"))
            .unwrap();
        std::io::Write::write_all(&mut segment, b"another\n").unwrap();
        quiet("a segment write");
        let mut commit = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("commit.json"))
            .unwrap();
        let before = handed.load(Ordering::Relaxed);
        std::io::Write::write_all(&mut commit, b"{\"n\":1}").unwrap();
        woken("a commit stored in place");
        assert!(
            handed.load(Ordering::Relaxed) > before,
            "the commit's event handed over"
        );
    }

    #[test]
    fn appends_wake_only_while_followed_and_entries_always() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, b"").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = DirWatcher::start_with([dir.path()], &Wakeup::new(), move |e| {
            let _ = tx.send(e.clone());
        });
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let next = || rx.recv_timeout(Duration::from_millis(500)).ok();
        std::io::Write::write_all(&mut file, b"one\n").unwrap();
        assert_eq!(next().map(|e| e.kind), Some(WatchKind::Appended));
        while next().is_some() {}
        watcher.follow_appends(false);
        std::io::Write::write_all(&mut file, b"two\n").unwrap();
        assert_eq!(next(), None, "appends are not followed");
        std::fs::write(dir.path().join("new.log"), b"").unwrap();
        assert_eq!(
            next(),
            Some(WatchEvent {
                path: dir.path().join("new.log"),
                kind: WatchKind::Created
            }),
            "entries still are"
        );
        while next().is_some() {}
        watcher.follow_appends(true);
        std::io::Write::write_all(&mut file, b"three\n").unwrap();
        assert_eq!(next().map(|e| e.kind), Some(WatchKind::Appended));
    }
}
