//! Interning group keys into dense group indices, as DataFusion's own hash
//! aggregation does: keys are encoded once as rows (arrow's `RowConverter`)
//! and a hash table maps each distinct row to its index.

use datafusion::arrow::row::{Row, RowConverter, Rows};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// The distinct keys of one pane or window, in first-seen order.
#[derive(Debug)]
pub(crate) struct KeyTable {
    rows: Rows,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl KeyTable {
    pub fn new(converter: &RowConverter) -> Self {
        Self {
            rows: converter.empty_rows(0, 0),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    pub fn rows(&self) -> &Rows {
        &self.rows
    }

    pub fn row(&self, group: usize) -> Row<'_> {
        self.rows.row(group)
    }

    /// Group index of `row`, adding it when new.
    pub fn intern(&mut self, row: Row<'_>) -> usize {
        let hash = self.hasher.hash_one(row.as_ref());
        let rows = &self.rows;
        if let Some(&group) = self.index.find(hash, |&g| rows.row(g as usize) == row) {
            return group as usize;
        }
        let group = self.rows.num_rows();
        self.rows.push(row);
        let (rows, hasher) = (&self.rows, &self.hasher);
        self.index.insert_unique(hash, group as u32, |&g| {
            hasher.hash_one(rows.row(g as usize).as_ref())
        });
        group
    }

    /// Group index of `row` if present.
    pub fn find(&self, row: Row<'_>) -> Option<usize> {
        let hash = self.hasher.hash_one(row.as_ref());
        self.index
            .find(hash, |&g| self.rows.row(g as usize) == row)
            .map(|&g| g as usize)
    }

    /// Bytes held, for the state-size metric.
    pub fn size(&self) -> usize {
        self.rows.size() + self.index.capacity() * std::mem::size_of::<u32>()
    }
}
