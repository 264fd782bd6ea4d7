//! Tumbling and sliding windows by slicing: every row updates exactly one pane
//! (a slice of width gcd(slide, size)), and a window's value is the merge of
//! its panes' partial states when it is emitted. Per-row cost does not grow
//! with the window length or the number of overlapping windows.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::row::RowConverter;
use datafusion::logical_expr::GroupsAccumulator;

use super::aggregate::{
    EvaluatedInput, StateRows, WindowedAggregate, accumulators_size, evaluate_all, merge_states,
    state_all, take_states,
};
use super::keys::KeyTable;
use crate::error::Result;

/// One pane's keys and partial aggregates.
struct Pane {
    keys: KeyTable,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// The partial state, taken out of `accumulators` when a window was read.
    /// DataFusion's accumulators can only be read by draining them, so a read
    /// keeps the drained state here and the next update merges it back.
    snapshot: Option<Vec<Vec<ArrayRef>>>,
    /// Groups updated since the last `update`-mode emission.
    changed: Vec<bool>,
    any_changed: bool,
}

impl Pane {
    fn new(aggregate: &WindowedAggregate, converter: &RowConverter) -> Result<Self> {
        Ok(Self {
            keys: KeyTable::new(converter),
            accumulators: aggregate.new_accumulators()?,
            snapshot: None,
            changed: Vec::new(),
            any_changed: false,
        })
    }

    /// Makes `accumulators` hold the full state again.
    fn make_live(&mut self) -> Result<()> {
        if let Some(states) = self.snapshot.take() {
            let groups: Vec<usize> = (0..self.keys.len()).collect();
            merge_states(&mut self.accumulators, &states, &groups, self.keys.len())?;
        }
        Ok(())
    }

    /// Drains the accumulators into `snapshot` (if not already) and returns
    /// the state with the keys it belongs to.
    fn read(&mut self) -> Result<(&[Vec<ArrayRef>], &KeyTable)> {
        if self.snapshot.is_none() {
            self.snapshot = Some(state_all(&mut self.accumulators)?);
        }
        Ok((self.snapshot.as_deref().unwrap_or_default(), &self.keys))
    }

    fn size(&self) -> usize {
        let snapshot: usize = self
            .snapshot
            .iter()
            .flatten()
            .flatten()
            .map(|a| a.get_array_memory_size())
            .sum();
        self.keys.size() + accumulators_size(&self.accumulators) + snapshot + self.changed.len()
    }
}

/// Which keys of a window to emit.
enum Selection {
    /// Every key of every pane of the window.
    All,
    /// Just these (the keys changed since the last trigger).
    Only(KeyTable),
}

/// Key rows of all panes come from the operator's one `RowConverter`
/// (arrow only compares rows of the same converter), passed to each call.
pub struct PaneWindows {
    aggregate: WindowedAggregate,
    panes: BTreeMap<i64, Pane>,
}

impl PaneWindows {
    pub fn new(aggregate: WindowedAggregate) -> Self {
        Self {
            aggregate,
            panes: BTreeMap::new(),
        }
    }

    /// Adds the rows `rows` of `input`.
    pub fn update(
        &mut self,
        converter: &RowConverter,
        input: &EvaluatedInput,
        rows: Range<usize>,
    ) -> Result<()> {
        let times = &input.times[rows.clone()];
        let Some(first) = times.first() else {
            return Ok(());
        };
        if rows.len() == input.times.len() && times.iter().all(|t| t == first) {
            return self.update_pane(converter, *first, input, None);
        }
        // Rows of a micro-batch mostly fall in a few panes: gather each pane's
        // rows (in arrival order) and update it once.
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (row, t) in rows.zip(times) {
            by_pane.entry(*t).or_default().push(row as u32);
        }
        for (pane, rows) in by_pane {
            self.update_pane(converter, pane, input, Some(UInt32Array::from(rows)))?;
        }
        Ok(())
    }

    fn update_pane(
        &mut self,
        converter: &RowConverter,
        start: i64,
        input: &EvaluatedInput,
        rows: Option<UInt32Array>,
    ) -> Result<()> {
        let pane = match self.panes.entry(start) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Pane::new(&self.aggregate, converter)?)
            }
        };
        pane.make_live()?;
        let groups: Vec<usize> = match &rows {
            Some(rows) => rows
                .values()
                .iter()
                .map(|&r| pane.keys.intern(input.key_rows.row(r as usize)))
                .collect(),
            None => (0..input.times.len())
                .map(|r| pane.keys.intern(input.key_rows.row(r)))
                .collect(),
        };
        let total = pane.keys.len();
        let (arguments, filters) = input.select(rows.as_ref())?;
        for ((acc, args), filter) in pane.accumulators.iter_mut().zip(&arguments).zip(&filters) {
            acc.update_batch(args, &groups, filter.as_ref(), total)?;
        }
        pane.changed.resize(total, false);
        for g in groups {
            pane.changed[g] = true;
        }
        pane.any_changed = true;
        Ok(())
    }

    /// `update` mode: every window ending in `(watermark, until]` that holds
    /// a pane changed since the last full trigger, with just its changed keys.
    /// A full trigger (`until == i64::MAX`) then forgets the changes; a partial
    /// one (windows about to close) keeps them for the windows still open.
    pub fn emit_changed(
        &mut self,
        converter: &RowConverter,
        watermark: i64,
        until: i64,
    ) -> Result<Option<RecordBatch>> {
        let spec = self.aggregate.spec;
        let mut windows = BTreeSet::new();
        for (start, pane) in &self.panes {
            if pane.any_changed {
                windows.extend(spec.windows_of_pane(*start).filter(|ws| {
                    let end = ws + spec.size();
                    end > watermark && end <= until
                }));
            }
        }
        let mut out = Vec::new();
        for window in windows {
            let mut changed = KeyTable::new(converter);
            for pane_start in spec.panes_of_window(window) {
                if let Some(pane) = self.panes.get(&pane_start).filter(|p| p.any_changed) {
                    for (g, _) in pane.changed.iter().enumerate().filter(|(_, c)| **c) {
                        changed.intern(pane.keys.row(g));
                    }
                }
            }
            out.push(self.evaluate_window(converter, window, Selection::Only(changed))?);
        }
        if until == i64::MAX {
            for pane in self.panes.values_mut() {
                pane.changed.iter_mut().for_each(|c| *c = false);
                pane.any_changed = false;
            }
        }
        self.concat(out)
    }

    /// The watermark moved from `from` to `to`: windows ending in `(from, to]`
    /// close. Returns them when `emit` (`final` mode), then frees every pane
    /// no open window needs.
    pub fn close(
        &mut self,
        converter: &RowConverter,
        from: i64,
        to: i64,
        emit: bool,
    ) -> Result<Option<RecordBatch>> {
        let spec = self.aggregate.spec;
        let mut out = Vec::new();
        if emit {
            let mut windows = BTreeSet::new();
            for start in self.panes.keys() {
                windows.extend(spec.windows_of_pane(*start).filter(|ws| {
                    let end = ws + spec.size();
                    end > from && end <= to
                }));
            }
            for window in windows {
                out.push(self.evaluate_window(converter, window, Selection::All)?);
            }
        }
        self.panes.retain(|start, _| spec.last_end(*start) > to);
        self.concat(out)
    }

    fn evaluate_window(
        &mut self,
        converter: &RowConverter,
        window_start: i64,
        selection: Selection,
    ) -> Result<RecordBatch> {
        let spec = self.aggregate.spec;
        let restrict = matches!(selection, Selection::Only(_));
        let mut keys = match selection {
            Selection::All => KeyTable::new(converter),
            Selection::Only(changed) => changed,
        };
        let mut accumulators = self.aggregate.new_accumulators()?;
        for pane_start in spec.panes_of_window(window_start) {
            let Some(pane) = self.panes.get_mut(&pane_start) else {
                continue;
            };
            let (states, pane_keys) = pane.read()?;
            if restrict {
                // Only the selected keys: look each up in the pane.
                let mut pane_groups = Vec::new();
                let mut window_groups = Vec::new();
                for w in 0..keys.len() {
                    if let Some(p) = pane_keys.find(keys.row(w)) {
                        pane_groups.push(p as u32);
                        window_groups.push(w);
                    }
                }
                let states = take_states(states, &UInt32Array::from(pane_groups))?;
                merge_states(&mut accumulators, &states, &window_groups, keys.len())?;
            } else {
                let groups: Vec<usize> = (0..pane_keys.len())
                    .map(|p| keys.intern(pane_keys.row(p)))
                    .collect();
                merge_states(&mut accumulators, states, &groups, keys.len())?;
            }
        }
        let results = evaluate_all(&mut accumulators)?;
        let n = keys.len();
        self.aggregate.assemble(
            converter,
            vec![window_start; n],
            vec![window_start + spec.size(); n],
            keys.rows(),
            results,
        )
    }

    fn concat(&self, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(datafusion::arrow::compute::concat_batches(
            &self.aggregate.output_schema,
            &batches,
        )?))
    }

    /// Every pane's state as rows (one batch per pane, with each row's key
    /// group), for a checkpoint.
    pub fn snapshot(&mut self, converter: &RowConverter) -> Result<Vec<(RecordBatch, Vec<u16>)>> {
        let pane = self.aggregate.spec.pane().unwrap_or(0);
        let mut out = Vec::with_capacity(self.panes.len());
        for (start, p) in &mut self.panes {
            let mut changed = p.changed.clone();
            changed.resize(p.keys.len(), false);
            let (states, keys) = p.read()?;
            let n = keys.len();
            out.push(self.aggregate.state_batch(
                converter,
                (vec![*start; n], vec![start + pane; n]),
                changed,
                keys.rows(),
                states,
            )?);
        }
        Ok(out)
    }

    /// Adds the panes of a checkpoint. A pane's rows need not be adjacent: state
    /// written by several workers holds each pane once per worker.
    pub fn restore(&mut self, converter: &RowConverter, rows: StateRows) -> Result<()> {
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (r, start) in rows.starts.iter().enumerate() {
            by_pane.entry(*start).or_default().push(r as u32);
        }
        for (start, indices) in by_pane {
            let mut pane = Pane::new(&self.aggregate, converter)?;
            for r in &indices {
                pane.keys.intern(rows.keys.row(*r as usize));
            }
            if pane.keys.len() != indices.len() {
                return crate::internal_err!("checkpointed pane {start} repeats a key");
            }
            pane.changed = indices.iter().map(|r| rows.changed[*r as usize]).collect();
            pane.any_changed = pane.changed.iter().any(|c| *c);
            pane.snapshot = Some(take_states(&rows.states, &UInt32Array::from(indices))?);
            self.panes.insert(start, pane);
        }
        Ok(())
    }

    /// Open panes and bytes held.
    pub fn state_size(&self) -> (usize, usize) {
        let keys = self.panes.values().map(|p| p.keys.len()).sum();
        let bytes = self.panes.values().map(Pane::size).sum();
        (keys, bytes)
    }
}
