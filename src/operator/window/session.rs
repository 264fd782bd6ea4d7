//! Session windows: per key, events less than `gap` apart form one window
//! `[first event, last event + gap)`. A new event can extend a session or
//! bridge two, whose partial states are then merged.

use std::collections::HashMap;
use std::ops::Range;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::row::RowConverter;
use datafusion::logical_expr::GroupsAccumulator;

use super::aggregate::{
    EvaluatedInput, StateRows, WindowedAggregate, accumulators_size, evaluate_all, merge_states,
    state_all, take_states,
};
use super::keys::KeyTable;
use crate::error::Result;

#[derive(Debug, Clone, Copy)]
struct Session {
    key: usize,
    start: i64,
    /// Last event time + gap.
    end: i64,
    /// Changed since the last `update`-mode emission.
    changed: bool,
}

pub struct SessionWindows {
    aggregate: WindowedAggregate,
    gap: i64,
    keys: KeyTable,
    /// Accumulator group `g` holds `sessions[g]`.
    sessions: Vec<Session>,
    /// Per key: its open sessions (group indices).
    by_key: HashMap<usize, Vec<usize>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

impl SessionWindows {
    pub fn new(aggregate: WindowedAggregate, converter: &RowConverter, gap: i64) -> Result<Self> {
        Ok(Self {
            accumulators: aggregate.new_accumulators()?,
            keys: KeyTable::new(converter),
            aggregate,
            gap,
            sessions: Vec::new(),
            by_key: HashMap::new(),
        })
    }

    /// Adds the rows `rows` of `input`. A row joins (or bridges) the sessions
    /// of its key it overlaps that are still open at the watermark it met: a
    /// session the watermark has passed is complete, even before `close`
    /// frees it at the end of the batch.
    ///
    /// A bridging row first merges the sessions it bridges, after the rows
    /// before it went into the sessions they joined: the partial states are
    /// combined in the same order however the input was cut into batches or
    /// spread over workers, so even floating-point sums come out the same.
    pub fn update(&mut self, input: &EvaluatedInput, rows: Range<usize>) -> Result<()> {
        // The rows taken since the last merge, with their sessions.
        let mut pending: Vec<(u32, usize)> = Vec::with_capacity(rows.len());
        for row in rows {
            let (t, watermark) = (input.times[row], input.watermarks[row]);
            let key = self.keys.intern(input.key_rows.row(row));
            let (start, end) = (t, t.saturating_add(self.gap));
            let mut overlapping = self.overlapping(key, watermark, start, end);
            if overlapping.len() > 1 {
                self.add(input, &mut pending)?;
                self.merge(&overlapping)?;
                overlapping = self.overlapping(key, watermark, start, end);
            }
            let target = match overlapping.first() {
                None => {
                    self.sessions.push(Session {
                        key,
                        start,
                        end,
                        changed: true,
                    });
                    self.by_key
                        .entry(key)
                        .or_default()
                        .push(self.sessions.len() - 1);
                    self.sessions.len() - 1
                }
                Some(&target) => {
                    let s = &mut self.sessions[target];
                    s.start = s.start.min(start);
                    s.end = s.end.max(end);
                    s.changed = true;
                    target
                }
            };
            pending.push((row as u32, target));
        }
        self.add(input, &mut pending)
    }

    /// The open sessions of `key` that `[start, end)` overlaps.
    fn overlapping(&self, key: usize, watermark: i64, start: i64, end: i64) -> Vec<usize> {
        self.by_key.get(&key).map_or_else(Vec::new, |open| {
            open.iter()
                .copied()
                .filter(|&g| {
                    let s = &self.sessions[g];
                    s.end > watermark && s.start < end && start < s.end
                })
                .collect()
        })
    }

    /// Feeds the `pending` rows of `input` to their sessions' accumulators.
    fn add(&mut self, input: &EvaluatedInput, pending: &mut Vec<(u32, usize)>) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let (rows, groups): (Vec<u32>, Vec<usize>) = pending.drain(..).unzip();
        let all = rows.len() == input.times.len();
        let indices = (!all).then(|| UInt32Array::from(rows));
        let (arguments, filters) = input.select(indices.as_ref())?;
        let total = self.sessions.len();
        for ((acc, args), filter) in self.accumulators.iter_mut().zip(&arguments).zip(&filters) {
            acc.update_batch(args, &groups, filter.as_ref(), total)?;
        }
        Ok(())
    }

    /// Merges the sessions `bridged` (of one key) into the first of them.
    fn merge(&mut self, bridged: &[usize]) -> Result<()> {
        let Some((&target, others)) = bridged.split_first() else {
            return Ok(());
        };
        for &other in others {
            let absorbed = self.sessions[other];
            let s = &mut self.sessions[target];
            s.start = s.start.min(absorbed.start);
            s.end = s.end.max(absorbed.end);
            s.changed = true;
        }
        self.regroup(|g| Some(if others.contains(&g) { target } else { g }))
    }

    /// Rebuilds the accumulators with group `g` moved to `target(g)` (merged
    /// when several land on one), dropping groups mapped to `None`.
    fn regroup(&mut self, target: impl Fn(usize) -> Option<usize>) -> Result<()> {
        let states = state_all(&mut self.accumulators)?;
        let mut new_index: HashMap<usize, usize> = HashMap::new();
        let mut sessions = Vec::new();
        let mut kept_rows = Vec::new();
        let mut kept_groups = Vec::new();
        for g in 0..self.sessions.len() {
            let Some(survivor) = target(g) else { continue };
            let next = new_index.len();
            let index = *new_index.entry(survivor).or_insert_with(|| {
                sessions.push(self.sessions[survivor]);
                next
            });
            if g == survivor {
                sessions[index] = self.sessions[g];
            }
            kept_rows.push(g as u32);
            kept_groups.push(index);
        }
        let kept = take_states(&states, &UInt32Array::from(kept_rows))?;
        merge_states(&mut self.accumulators, &kept, &kept_groups, sessions.len())?;
        self.sessions = sessions;
        self.index_by_key();
        Ok(())
    }

    /// `update` mode: every session ending by `until` that changed since it
    /// was last emitted.
    pub fn emit_changed(
        &mut self,
        converter: &RowConverter,
        until: i64,
    ) -> Result<Option<RecordBatch>> {
        let changed: Vec<usize> = (0..self.sessions.len())
            .filter(|&g| self.sessions[g].changed && self.sessions[g].end <= until)
            .collect();
        let out = self.evaluate(converter, &changed)?;
        for &g in &changed {
            self.sessions[g].changed = false;
        }
        Ok(out)
    }

    /// Closes the sessions ending at or before `to`, returning them when `emit`.
    pub fn close(
        &mut self,
        converter: &RowConverter,
        to: i64,
        emit: bool,
    ) -> Result<Option<RecordBatch>> {
        let closed: Vec<usize> = (0..self.sessions.len())
            .filter(|&g| self.sessions[g].end <= to)
            .collect();
        if closed.is_empty() {
            return Ok(None);
        }
        let out = if emit {
            self.evaluate(converter, &closed)?
        } else {
            None
        };
        let open: Vec<bool> = self.sessions.iter().map(|s| s.end > to).collect();
        self.regroup(|g| open[g].then_some(g))?;
        self.forget_closed_keys(converter);
        Ok(out)
    }

    /// A key's state ends with its last session: once the table of keys
    /// holds twice as many as the open sessions (and more than a few), it is
    /// rebuilt from the open sessions' keys. So the state is bounded by the
    /// open sessions, not by every key ever seen.
    fn forget_closed_keys(&mut self, converter: &RowConverter) {
        if self.keys.len() <= 2 * self.sessions.len() + 1024 {
            return;
        }
        let mut keys = KeyTable::new(converter);
        for session in &mut self.sessions {
            session.key = keys.intern(self.keys.row(session.key));
        }
        self.keys = keys;
        self.index_by_key();
    }

    /// Rebuilds `by_key` from the sessions.
    fn index_by_key(&mut self) {
        self.by_key.clear();
        for (g, s) in self.sessions.iter().enumerate() {
            self.by_key.entry(s.key).or_default().push(g);
        }
    }

    /// The current value of the sessions `groups`, leaving the state as it was.
    fn evaluate(
        &mut self,
        converter: &RowConverter,
        groups: &[usize],
    ) -> Result<Option<RecordBatch>> {
        if groups.is_empty() {
            return Ok(None);
        }
        let states = self.read_states()?;
        let indices = UInt32Array::from(groups.iter().map(|&g| g as u32).collect::<Vec<_>>());
        let selected = take_states(&states, &indices)?;
        let mut scratch = self.aggregate.new_accumulators()?;
        let dense: Vec<usize> = (0..groups.len()).collect();
        merge_states(&mut scratch, &selected, &dense, groups.len())?;
        let results = evaluate_all(&mut scratch)?;
        let mut key_rows = converter.empty_rows(groups.len(), 0);
        for &g in groups {
            key_rows.push(self.keys.row(self.sessions[g].key));
        }
        let starts = groups.iter().map(|&g| self.sessions[g].start).collect();
        let ends = groups.iter().map(|&g| self.sessions[g].end).collect();
        Ok(Some(
            self.aggregate
                .assemble(converter, starts, ends, &key_rows, results)?,
        ))
    }

    /// Every session's partial state, leaving the accumulators as they were
    /// (DataFusion's accumulators are read by draining, so merge it back).
    fn read_states(&mut self) -> Result<Vec<Vec<datafusion::arrow::array::ArrayRef>>> {
        let states = state_all(&mut self.accumulators)?;
        let all: Vec<usize> = (0..self.sessions.len()).collect();
        merge_states(&mut self.accumulators, &states, &all, all.len())?;
        Ok(states)
    }

    /// Every open session as rows (with each row's key group), for a checkpoint.
    pub fn snapshot(&mut self, converter: &RowConverter) -> Result<Vec<(RecordBatch, Vec<u16>)>> {
        if self.sessions.is_empty() {
            return Ok(Vec::new());
        }
        let states = self.read_states()?;
        let mut key_rows = converter.empty_rows(self.sessions.len(), 0);
        for s in &self.sessions {
            key_rows.push(self.keys.row(s.key));
        }
        let batch = self.aggregate.state_batch(
            converter,
            self.sessions.iter().map(|s| (s.start, s.end)).unzip(),
            self.sessions.iter().map(|s| s.changed).collect(),
            &key_rows,
            &states,
        )?;
        Ok(vec![batch])
    }

    /// Adds the sessions of a checkpoint.
    pub fn restore(&mut self, rows: StateRows) -> Result<()> {
        let first = self.sessions.len();
        for r in 0..rows.starts.len() {
            let key = self.keys.intern(rows.keys.row(r));
            self.by_key.entry(key).or_default().push(first + r);
            self.sessions.push(Session {
                key,
                start: rows.starts[r],
                end: rows.ends[r],
                changed: rows.changed[r],
            });
        }
        let groups: Vec<usize> = (first..self.sessions.len()).collect();
        merge_states(
            &mut self.accumulators,
            &rows.states,
            &groups,
            self.sessions.len(),
        )
    }

    pub fn state_size(&self) -> (usize, usize) {
        (
            self.sessions.len(),
            self.keys.size() + accumulators_size(&self.accumulators),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};

    use crate::operator::{EventTimes, Rows};

    /// Session windows over a stream of keys each seen once: the state
    /// (sessions and their keys) stays bounded by the open sessions.
    #[tokio::test]
    async fn keys_whose_sessions_closed_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("streamsql-sessions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pipelines.yaml"),
            "pipelines:
  p:
    sources:
      - name: s
        format: csv
        replay: { path: none.csv }
        columns: [ { name: t, type: int64 }, { name: k, type: string } ]
        event_time: { column: t, unit: ms }
        watermark_delay: 0s
    queries:
      - name: q
        sql: q.sql
        sinks: [ parquet: {} ]
",
        )
        .unwrap();
        std::fs::write(
            dir.join("q.sql"),
            "SELECT window_start, k, count(*) AS n FROM s GROUP BY SESSION(t, INTERVAL '1' SECOND), k",
        )
        .unwrap();
        let loaded = crate::config::load(&dir.join("pipelines.yaml")).unwrap();
        let schema = loaded.pipeline("p").unwrap().sources[0].schema();
        let mut plan = crate::plan::plan_pipeline(&loaded, "p", 1).await.unwrap();
        let mut operator = plan.queries.remove(0).operators.remove(0);
        let mut bytes = Vec::new();
        let mut emitted = 0;
        for batch in 0..40i64 {
            // 1,000 new keys, each 10 s after the last batch's: every earlier
            // session has closed.
            let t = batch * 10_000;
            let keys: Vec<String> = (0..1000).map(|i| format!("key-{batch}-{i}")).collect();
            let rows = Rows {
                batch: RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(Int64Array::from(vec![t; 1000])),
                        Arc::new(StringArray::from(keys)),
                    ],
                )
                .unwrap(),
                times: Some(Arc::new(EventTimes {
                    event_time: vec![t; 1000],
                    watermark: vec![t - 1; 1000],
                })),
            };
            let mut out = Vec::new();
            let prepared = operator.prepare(0, &rows).await.unwrap();
            operator.process(0, prepared, &mut out).await.unwrap();
            operator.advance(0, t, &mut out).await.unwrap();
            emitted += out.iter().map(|b| b.num_rows()).sum::<usize>();
            bytes.push(operator.state_size().bytes);
        }
        assert_eq!(
            emitted,
            39 * 1000,
            "every session but the last batch's closed"
        );
        assert_eq!(
            operator.state_size().rows,
            1000,
            "only the newest sessions are open"
        );
        let (early, late) = (bytes[9], bytes[39]);
        assert!(
            late < early * 2,
            "state grows with every key ever seen: {early} bytes after 10 batches, {late} after 40"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
