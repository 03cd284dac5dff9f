//! What happens to a file sink's closed files — gzip, and deleting the oldest — on a thread
//! of its own, so that delivery never waits for it.
//!
//! Gzip of closed files inline on the delivery path was most of the forwarder's CPU and held
//! up every batch behind a roll. The jobs run in the order they were queued, so a file is
//! compressed before a later prune looks at the directory. A job lost to a crash is picked up
//! at the next start: a closed file still uncompressed is queued again, and gzip is atomic
//! (temp file, fsync, rename).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::Compression;
use tracing::{info, warn};

use super::{gz_path, parse_file_name};
use crate::checkpoint::sync_dir;

/// The gzip level of closed files. Level 1 measured on processed access records: about six
/// times cheaper in CPU than the default level 6 for about 1.8 times the bytes (BENCHMARKS.md).
const LEVEL: Compression = Compression::fast();

enum Job {
    Compress(PathBuf),
    /// Delete the closed files of each stream beyond the newest `keep`, given each stream's
    /// open file number.
    Prune {
        open: BTreeMap<String, u64>,
        keep: u64,
    },
}

/// The worker thread of one file sink. Dropping it waits for the job under way only: at
/// shutdown the files still queued are left for the next start, which queues them again, so
/// a drain never waits for a backlog of gzip.
pub(super) struct ClosedFiles {
    queue: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ClosedFiles {
    /// Starts the worker for the files of sink `sink` in `directory`.
    pub(super) fn start(sink: &str, directory: &Path) -> io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let sink = sink.to_owned();
        let directory = directory.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let worker = std::thread::Builder::new()
            .name("file-sink-closed".into())
            .spawn(move || {
                for job in jobs {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    match job {
                        Job::Compress(path) => compress(&sink, &path),
                        Job::Prune { open, keep } => prune(&sink, &directory, &open, keep),
                    }
                }
            })?;
        Ok(Self {
            queue: Some(queue),
            worker: Some(worker),
            stop,
        })
    }

    /// Waits until every queued job is done (tests look at the files afterwards).
    #[cfg(test)]
    pub(super) fn finish_queued(&mut self) {
        drop(self.queue.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    /// Queues `path` (closed and committed) for gzip.
    pub(super) fn compress(&self, path: PathBuf) {
        self.send(Job::Compress(path));
    }

    /// Queues a prune to the newest `keep` closed files of each stream in `open`.
    pub(super) fn prune(&self, open: BTreeMap<String, u64>, keep: u64) {
        self.send(Job::Prune { open, keep });
    }

    fn send(&self, job: Job) {
        let sent = self.queue.as_ref().is_some_and(|q| q.send(job).is_ok());
        if !sent {
            // Only if the worker panicked: the file stays as it is, and the next start
            // queues it again.
            warn!("The file sink's closed-file worker is gone; closed files stay as they are until the next start.");
        }
    }
}

impl Drop for ClosedFiles {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.queue.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn compress(sink: &str, path: &Path) {
    match gzip_file(path) {
        Ok(gz) => info!(sink, file = %gz.display(), "Compressed a closed file."),
        // Deleted by a prune before its turn: nothing to compress.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(sink, file = %path.display(), error = %e, "Cannot compress a closed file; it stays uncompressed.")
        }
    }
}

/// Compresses `path` to `path.gz` (temp file, fsync, rename), then removes `path`. A crash
/// at any point leaves either the original or a complete `.gz`.
fn gzip_file(path: &Path) -> io::Result<PathBuf> {
    let gz = gz_path(path);
    let mut tmp = gz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut input = File::open(path)?;
    let mut encoder = GzEncoder::new(BufWriter::new(File::create(&tmp)?), LEVEL);
    io::copy(&mut input, &mut encoder)?;
    let file = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&tmp, &gz)?;
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(gz)
}

/// Deletes closed files beyond the newest `keep` of each stream. Only committed files are
/// closed, so what goes was delivered.
fn prune(sink: &str, directory: &Path, open: &BTreeMap<String, u64>, keep: u64) {
    let Ok(entries) = fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some((stem, seq, _)) = parse_file_name(&path) else {
            continue;
        };
        let Some(&current) = open.get(&stem) else {
            continue;
        };
        if seq + keep < current {
            match fs::remove_file(&path) {
                Ok(()) => {
                    info!(sink, file = %path.display(), "Deleted a closed file past max_closed_files.")
                }
                Err(e) => {
                    warn!(sink, file = %path.display(), error = %e, "Cannot delete a closed file past max_closed_files.")
                }
            }
        }
    }
}
