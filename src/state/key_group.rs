//! Key groups: every key of an operator's state falls in one of
//! [`KEY_GROUPS`] groups by a fixed hash, as in Flink (whose max parallelism
//! is the number of key groups). Workers own ranges of key groups, so state
//! written at one parallelism restores at another: each worker loads the rows
//! of the groups it owns.

use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt16Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use foldhash::fast::FixedState;

use crate::error::Result;

/// How many key groups there are: the most workers one operator can use.
pub const KEY_GROUPS: u16 = 128;

/// The first column of every state batch an operator snapshots.
pub const KEY_GROUP_COLUMN: &str = "key_group";

/// The hash seed: fixed, so a key lands in the same group in every run.
const SEED: u64 = 0x5354_5245_414d_5351;

/// The key group of a key, from its bytes (the arrow row encoding of the key
/// columns, or a constant for an operator without keys).
pub fn key_group(key: &[u8]) -> u16 {
    (FixedState::with_seed(SEED).hash_one(key) % u64::from(KEY_GROUPS)) as u16
}

/// The key groups one worker owns: a contiguous range, as Flink assigns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroups(Range<u16>);

impl KeyGroups {
    /// The groups worker `i` of `n` owns: contiguous ranges of about equal
    /// size, as Flink assigns them.
    pub fn of_worker(i: usize, n: usize) -> Self {
        let start = |i: usize| (i * usize::from(KEY_GROUPS)).div_ceil(n) as u16;
        Self(start(i)..start(i + 1))
    }

    /// The worker of `n` that owns `group` (the `i` whose
    /// [`Self::of_worker`] contains it).
    pub fn owner(group: u16, n: usize) -> usize {
        usize::from(group) * n / usize::from(KEY_GROUPS)
    }

    pub fn contains(&self, group: u16) -> bool {
        self.0.contains(&group)
    }

    /// The rows of `rows` whose key group (`groups`, one per row) is owned
    /// here: what a worker restores of a checkpoint.
    pub fn keep(
        &self,
        rows: &RecordBatch,
        groups: impl IntoIterator<Item = u16>,
    ) -> Result<RecordBatch> {
        let mine: BooleanArray = groups.into_iter().map(|g| Some(self.contains(g))).collect();
        Ok(match mine.true_count() == rows.num_rows() {
            true => rows.clone(),
            false => filter_record_batch(rows, &mine)?,
        })
    }
}

/// `batch` with each row's key group as the first column.
pub fn with_key_groups(batch: &RecordBatch, groups: Vec<u16>) -> Result<RecordBatch> {
    let mut fields = vec![Arc::new(Field::new(
        KEY_GROUP_COLUMN,
        DataType::UInt16,
        false,
    ))];
    fields.extend(batch.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt16Array::from(groups))];
    columns.extend(batch.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// `batch` without its key-group column (the operator recomputes the groups
/// from the keys it restores).
pub fn without_key_groups(batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields().first().map(|f| f.name().as_str()) != Some(KEY_GROUP_COLUMN) {
        return crate::internal_err!("state batch without a `{KEY_GROUP_COLUMN}` column");
    }
    let projection: Vec<usize> = (1..batch.num_columns()).collect();
    Ok(batch.project(&projection)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_falls_in_the_same_group() {
        // Routing and restore both compute a key's group with this
        // function, so they agree in every run; keys spread over all groups.
        let groups: std::collections::BTreeSet<u16> = (0..10_000u32)
            .map(|k| key_group(&k.to_le_bytes()))
            .collect();
        assert_eq!(
            groups.len(),
            KEY_GROUPS as usize,
            "keys spread over every group"
        );
        assert!(KeyGroups::of_worker(0, 1).contains(KEY_GROUPS - 1));
    }

    #[test]
    fn workers_own_every_group_exactly_once() {
        for n in 1..=usize::from(KEY_GROUPS) {
            for group in 0..KEY_GROUPS {
                let owners: Vec<usize> = (0..n)
                    .filter(|i| KeyGroups::of_worker(*i, n).contains(group))
                    .collect();
                assert_eq!(
                    owners,
                    vec![KeyGroups::owner(group, n)],
                    "n={n} group={group}"
                );
            }
        }
    }
}
