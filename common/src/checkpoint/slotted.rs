//! The two-slot checkpoint file: a commit or cursor stored in place, with one device flush.
//!
//! Replacing a file for every commit (temp file, fsync, rename, directory fsync) allocates an
//! inode, frees the old one's blocks (a discard on many volumes) and flushes the device three
//! times; at a commit every 10 ms that was most of what a stage cost at a steady 10,000 lines/s.
//! Here the file is made once with two slots of a fixed size, and each store overwrites the
//! slot holding the older version and flushes that file's data once. A crash in the middle of a
//! store tears at most that slot; the other still holds the previous version, whole. Each slot
//! carries its sequence number, length and checksum, and the newest whole slot is the
//! checkpoint. A twin file, `<name>.backup`, gets the same bytes at the same offset just before
//! (left to the page cache), so a file damaged as a whole (emptied, overwritten) falls back to
//! the twin, which is the same version or, after a crash between the two writes, one ahead.
//!
//! Layout (docs/journal-format.md): the file is two slots of `S` bytes (a power of two, at
//! least 4 KiB); a slot is `{"slot":{"seq":N,"len":L,"xxh3":"<16 hex>"}}\n`, then `L` bytes of
//! JSON (the checkpoint), `\n`, and spaces up to its last byte, `\n`. An empty slot is all
//! spaces. `jq . commit.json` prints both. A checkpoint that outgrows `S` is written whole
//! into a new file with larger slots by the old way (temp file, rename), once; one that shrinks
//! to an eighth of its slots, into smaller ones the same way.
//!
//! Easy to get wrong: overwriting in place never allocates, so once the file exists a store
//! cannot fail for a full volume; only a growth can.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::{backup_path, replace_file, sync_dir_of, CheckpointError, Durability};

/// How a slotted file's first whole slot starts, after the spaces of an empty slot 0.
const SLOT_MAGIC: &[u8] = b"{\"slot\":";
/// The smallest slot: one page, so a store of a small checkpoint writes one page.
const MIN_SLOT_BYTES: usize = 4096;
/// Slots this many times larger than their versions need are made smaller.
const SHRINK_FACTOR: usize = 8;

/// What a slot says about the checkpoint it holds.
#[derive(Debug, Serialize, Deserialize)]
struct SlotHeader {
    slot: SlotMeta,
}

#[derive(Debug, Serialize, Deserialize)]
struct SlotMeta {
    /// Stores since the file was made; the higher whole slot is the checkpoint.
    seq: u64,
    /// Length of the JSON after the header line.
    len: usize,
    /// xxh3-64 of those bytes, in hex.
    xxh3: String,
}

/// Whether `bytes` are a two-slot file; anything else is a single-JSON checkpoint (of the first
/// format, or a stats file).
pub(super) fn is_slotted(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(SLOT_MAGIC)
}

/// One slot's text without its padding: header line, payload, newline.
fn slot_text(seq: u64, payload: &[u8]) -> Vec<u8> {
    let header = SlotHeader {
        slot: SlotMeta {
            seq,
            len: payload.len(),
            xxh3: format!("{:016x}", xxh3_64(payload)),
        },
    };
    let mut text = serde_json::to_vec(&header).expect("slot headers serialise");
    text.push(b'\n');
    text.extend_from_slice(payload);
    text.push(b'\n');
    text
}

/// The newest whole slot of a slotted file's bytes: its sequence number, its text (header to
/// payload newline) and its payload's range.
fn newest_slot(bytes: &[u8]) -> Option<(u64, &[u8], std::ops::Range<usize>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return None;
    }
    let slot_bytes = bytes.len() / 2;
    bytes
        .chunks_exact(slot_bytes)
        .enumerate()
        .filter_map(|(i, slot)| {
            let (seq, text_len, payload) = parse_slot(slot)?;
            let base = i * slot_bytes;
            Some((
                seq,
                &bytes[base..base + text_len],
                base + payload.start..base + payload.end,
            ))
        })
        .max_by_key(|(seq, _, _)| *seq)
}

/// A slot's sequence number, the length of its text and its payload's range, when whole.
fn parse_slot(slot: &[u8]) -> Option<(u64, usize, std::ops::Range<usize>)> {
    let header_end = slot.iter().position(|&b| b == b'\n')?;
    let header: SlotHeader = serde_json::from_slice(&slot[..header_end]).ok()?;
    let start = header_end + 1;
    let end = start.checked_add(header.slot.len)?;
    let payload = slot.get(start..end)?;
    let whole =
        slot.get(end) == Some(&b'\n') && format!("{:016x}", xxh3_64(payload)) == header.slot.xxh3;
    whole.then_some((header.slot.seq, end + 1, start..end))
}

/// A slotted file's checkpoint: the newest whole slot's JSON.
///
/// # Errors
/// [`CheckpointError::Corrupt`] when no slot is whole.
pub(super) fn payload<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], CheckpointError> {
    let (_, _, payload) = newest_slot(bytes).ok_or_else(|| CheckpointError::Corrupt {
        path: path.to_owned(),
        source: "no slot is whole (torn or damaged)".into(),
    })?;
    Ok(&bytes[payload])
}

/// The file a stage keeps its commit or cursor in, written in place (see the module's docs).
/// Open it once and store through it for the stage's life; readers use
/// [`super::load_or_backup`].
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    /// The open files, once the first store found or made them; dropped after a failed store
    /// so the next one starts again from what is on disk.
    open: Option<OpenSlots>,
}

#[derive(Debug)]
struct OpenSlots {
    file: File,
    twin: File,
    slot_bytes: usize,
    /// The newest slot's sequence number.
    seq: u64,
    /// The newest slot's text, kept for a growth (the new file holds both versions).
    newest: Vec<u8>,
    /// A slot's worth of bytes, reused by every store.
    buffer: Vec<u8>,
}

impl CheckpointFile {
    /// The checkpoint at `path`; nothing is read or written until the first store.
    pub fn new(path: PathBuf) -> Self {
        Self { path, open: None }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `value` as the new checkpoint: the older slot is overwritten in the twin, then in
    /// the file, whose data is then flushed to the device when `durability` asks.
    ///
    /// # Errors
    /// [`CheckpointError::Write`] when a step fails; the previous checkpoint then still stands.
    pub fn store<T: Serialize>(
        &mut self,
        value: &T,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let payload = serde_json::to_vec(value).expect("checkpoint types serialise infallibly");
        let result = self.store_payload(&payload, durability);
        if result.is_err() {
            self.open = None;
        }
        result
    }

    fn store_payload(
        &mut self,
        payload: &[u8],
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        if self.open.is_none() {
            self.open = self.open_existing()?;
        }
        let seq = self.open.as_ref().map_or(0, |o| o.seq) + 1;
        let text = slot_text(seq, payload);
        match &mut self.open {
            Some(open) if text.len() < open.slot_bytes && !open.oversized_for(text.len()) => {
                open.write_slot(&self.path, seq, text, durability)
            }
            _ => self.write_whole(seq, text, durability),
        }
    }

    /// Opens the file when it is slotted and has a whole slot, aligning the twin with it (a
    /// crash between the twin's write and the file's can leave the twin one ahead). `None`
    /// when the file must be written whole: absent, of the first format, or damaged.
    fn open_existing(&self) -> Result<Option<OpenSlots>, CheckpointError> {
        let wrap = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Write { path, source }
        };
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(wrap(&self.path)(source)),
        };
        let Some((seq, newest, _)) = newest_slot(&bytes).filter(|_| is_slotted(&bytes)) else {
            return Ok(None);
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(wrap(&self.path))?;
        let twin_path = backup_path(&self.path);
        let twin = open_twin(&twin_path)?;
        if fs::read(&twin_path).ok().as_deref() != Some(&bytes[..]) {
            twin.write_all_at(&bytes, 0).map_err(wrap(&twin_path))?;
            twin.set_len(bytes.len() as u64).map_err(wrap(&twin_path))?;
        }
        Ok(Some(OpenSlots {
            file,
            twin,
            slot_bytes: bytes.len() / 2,
            seq,
            newest: newest.to_vec(),
            buffer: Vec::with_capacity(bytes.len() / 2),
        }))
    }

    /// Writes a new file holding `text` (as sequence `seq`) and the newest version before it,
    /// with slots large enough for both, by replacing the file; the twin the same.
    fn write_whole(
        &mut self,
        seq: u64,
        text: Vec<u8>,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let previous = self.open.take().map(|o| o.newest).unwrap_or_default();
        let slot_bytes = slot_bytes_for(text.len().max(previous.len()));
        let mut image = vec![b' '; 2 * slot_bytes];
        let mut place = |at: u64, slot: &[u8]| {
            let base = (at % 2) as usize * slot_bytes;
            image[base..base + slot.len()].copy_from_slice(slot);
        };
        place(seq, &text);
        if !previous.is_empty() {
            place(seq - 1, &previous);
        }
        for end in (slot_bytes..=2 * slot_bytes).step_by(slot_bytes) {
            image[end - 1] = b'\n';
        }
        let twin_path = backup_path(&self.path);
        let twin = open_twin(&twin_path)?;
        let wrap_twin = |source| CheckpointError::Write {
            path: twin_path.clone(),
            source,
        };
        twin.write_all_at(&image, 0).map_err(wrap_twin)?;
        twin.set_len(image.len() as u64).map_err(wrap_twin)?;
        replace_file(&self.path, &image, durability)?;
        sync_dir_of(&self.path, durability)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|source| CheckpointError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.open = Some(OpenSlots {
            file,
            twin,
            slot_bytes,
            seq,
            newest: text,
            buffer: Vec::with_capacity(slot_bytes),
        });
        Ok(())
    }
}

/// The slot size that holds a text of `len` bytes and its last newline.
fn slot_bytes_for(len: usize) -> usize {
    (len + 1).next_power_of_two().max(MIN_SLOT_BYTES)
}

impl OpenSlots {
    /// Whether the slots are far larger than a text of `len` bytes and the newest need (a
    /// checkpoint that shrank: a collector's commit that now names a file list instead of
    /// holding it): each store would write and flush the padding, so the file is written
    /// again with smaller slots.
    fn oversized_for(&self, len: usize) -> bool {
        slot_bytes_for(len.max(self.newest.len())) * SHRINK_FACTOR <= self.slot_bytes
    }

    fn write_slot(
        &mut self,
        path: &Path,
        seq: u64,
        text: Vec<u8>,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        self.buffer.clear();
        self.buffer.extend_from_slice(&text);
        self.buffer.resize(self.slot_bytes - 1, b' ');
        self.buffer.push(b'\n');
        let at = (seq % 2) * self.slot_bytes as u64;
        // The twin first: if the file's write is torn, the twin is whole and one ahead.
        self.twin
            .write_all_at(&self.buffer, at)
            .map_err(|source| CheckpointError::Write {
                path: backup_path(path),
                source,
            })?;
        let wrap = |source| CheckpointError::Write {
            path: path.to_owned(),
            source,
        };
        self.file.write_all_at(&self.buffer, at).map_err(wrap)?;
        if durability == Durability::Fsync {
            self.file.sync_data().map_err(wrap)?;
        }
        self.seq = seq;
        self.newest = text;
        Ok(())
    }
}

fn open_twin(path: &Path) -> Result<File, CheckpointError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| CheckpointError::Write {
            path: path.to_owned(),
            source,
        })
}
