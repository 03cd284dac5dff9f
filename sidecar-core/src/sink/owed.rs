//! What a sink still owes of the batch the forwarder offers: after a failed `send`, the
//! forwarder offers the same batch again, and only the records not yet delivered (or kept as
//! dead letters) go out again.
//!
//! Easy to get wrong: recognising "the same batch". Positions only mean something within one
//! batch; the forwarder may offer a different one after a restart of its lane (decoupled
//! sinks catching up), so the batch is identified by its length and its first and last
//! records, and anything else starts over with every record owed.

use super::OutRecord;

/// Identifies a batch well enough to know that the forwarder offers the same one again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchId {
    len: usize,
    first: u64,
    last: u64,
}

impl BatchId {
    pub(super) fn of(batch: &[OutRecord<'_>]) -> Self {
        let hash = |r: Option<&OutRecord<'_>>| r.map_or(0, |r| xxhash_rust::xxh3::xxh3_64(r.raw));
        Self {
            len: batch.len(),
            first: hash(batch.first()),
            last: hash(batch.last()),
        }
    }
}

/// The positions of the current batch still owed, kept across `send` calls.
#[derive(Debug, Default)]
pub(super) struct Owed {
    kept: Option<(BatchId, Vec<usize>)>,
}

impl Owed {
    /// The positions of `batch` to send: those still owed when it is the batch offered last
    /// time, every one otherwise. Also returns the batch's id, for [`Owed::keep`].
    pub(super) fn take_for(&mut self, batch: &[OutRecord<'_>]) -> (BatchId, Vec<usize>) {
        let id = BatchId::of(batch);
        match self.kept.take() {
            Some((kept, records)) if kept == id => (id, records),
            _ => (id, (0..batch.len()).collect()),
        }
    }

    /// Remembers `records` (positions in batch `id`, any order) as still owed.
    pub(super) fn keep(&mut self, id: BatchId, mut records: Vec<usize>) {
        records.sort_unstable();
        self.kept = Some((id, records));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_batch_resumes_what_was_owed() {
        let raws: [&[u8]; 3] = [b"a", b"b", b"c"];
        let batch: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let mut owed = Owed::default();
        let (id, all) = owed.take_for(&batch);
        assert_eq!(all, vec![0, 1, 2]);
        owed.keep(id, vec![2, 0]);
        assert_eq!(owed.take_for(&batch).1, vec![0, 2]);
        assert_eq!(owed.take_for(&batch).1, vec![0, 1, 2], "taken once");
        owed.keep(id, vec![1]);
        assert_eq!(owed.take_for(&batch[..2]).1, vec![0, 1], "another batch");
    }
}
