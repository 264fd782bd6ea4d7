//! The interval join of two streams: `a JOIN b ON a.k = b.k AND a.ts
//! BETWEEN b.ts - INTERVAL … AND b.ts + INTERVAL …` (inner, LEFT, RIGHT or
//! FULL), as Flink's and Arroyo's interval joins.
//!
//! With `d = left.ts - right.ts` bounded to `[lo, hi]`, each side keeps its
//! rows by key until the *other* side's watermark shows that no row still to
//! come can match them: a left row at `t` is freed once the right watermark
//! passes `t - lo`, a right row once the left watermark passes `t + hi`. A row
//! behind its own source's watermark (the one it met in source order) is
//! late: it goes to `<source>_late` and joins nothing.
//!
//! Why the answer does not depend on how the inputs were cut or interleaved:
//! a pair is emitted when the second of its two rows arrives, by probing the
//! first, which is still stored (a row that is not late is at or after its
//! source's watermark, so the other row's bound has not passed). Each pair is
//! emitted exactly once, whichever side comes first; an outer row that never
//! matched is emitted, with NULLs for the other side, when it is freed.
//!
//! A side may read window results (a *window join*): its time is then
//! `window_start` or `window_end`, and the watermark that closed a window
//! bounds what is still to come, `window_start` lagging it by the window's
//! length; emitted once each and never late, such rows free the other
//! side's state as source rows do.
//!
//! The residual condition (the bound itself, and any other predicate of the
//! ON clause) is DataFusion's own expression, evaluated on the candidate
//! pairs: the bound only narrows the candidates and frees the state.

mod side;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, UInt8Array, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::JoinType;
use datafusion::physical_expr::PhysicalExpr;

use super::{Description, Operator, Rows, StateSize, SubPlan};
use crate::error::Result;
use crate::source::EventTimeUnit;
use crate::state::{KeyGroups, with_key_groups, without_key_groups};
use side::Evaluated;
pub(crate) use side::Side;

/// The interval join as planned (see [`crate::plan`]).
pub struct IntervalJoinSpec {
    pub join_type: JoinType,
    /// `lo <= left.ts - right.ts <= hi`, in milliseconds.
    pub lo: i64,
    pub hi: i64,
    /// Per side: its event-time column in the prepared rows (with the unit
    /// of its integer values, `None` for a timestamp) and its key
    /// expressions (same types on both sides).
    pub time_columns: [(usize, Option<EventTimeUnit>); 2],
    /// Per side: how far behind its input's watermark its time values may
    /// still come (0 for a source's event time; a window's length for the
    /// `window_start` of window results).
    pub watermark_lags: [i64; 2],
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The keys (indices into `keys`) that place a row in its key group:
    /// all but a window join's window, so that a key's joined windows come
    /// from one worker, in window order (a rule query's `lag()` over them
    /// needs that).
    pub routing_keys: Vec<usize>,
    /// The ON condition beyond the keys, over the joined rows.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// What the ON condition says, for `explain` and the signature.
    pub condition: String,
}

pub struct IntervalJoin {
    spec: IntervalJoinSpec,
    /// Each side's row-local plan, from its source's rows to prepared rows.
    pre: [SubPlan; 2],
    sides: [Side; 2],
    /// The watermark each input has reached.
    watermarks: [i64; 2],
    /// Runs on the joined rows (left columns, then right).
    post: SubPlan,
    signature: String,
}

impl IntervalJoin {
    pub fn new(spec: IntervalJoinSpec, pre: [SubPlan; 2], post: SubPlan) -> Result<Self> {
        // Buckets of a quarter of the bound's width: a side holds about
        // five, and keeps rows at most a quarter of the bound too long.
        let width = (spec.hi.saturating_sub(spec.lo) / 4).clamp(100, 3_600_000);
        let side = |s: usize| {
            Side::new(
                pre[s].plan.schema(),
                spec.time_columns[s],
                spec.keys[s].clone(),
                spec.routing_keys.clone(),
                width,
            )
        };
        let sides = [side(0)?, side(1)?];
        let fields = |s: &Side| {
            (s.schema.fields().iter())
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(",")
        };
        // The routing keys decide the key groups stored with the state.
        let signature = format!(
            "interval join {} on {}; routed by keys {:?}; left [{}]; right [{}]",
            spec.join_type,
            spec.condition,
            spec.routing_keys,
            fields(&sides[0]),
            fields(&sides[1])
        );
        Ok(Self {
            spec,
            pre,
            sides,
            watermarks: [i64::MIN; 2],
            post,
            signature,
        })
    }

    /// The schema of the rows it emits.
    pub fn output_schema(&self) -> SchemaRef {
        self.post.plan.schema()
    }

    /// Whether side `s` emits its rows that never matched.
    fn outer(&self, s: usize) -> bool {
        matches!(
            (self.spec.join_type, s),
            (JoinType::Full, _) | (JoinType::Left, 0) | (JoinType::Right, 1)
        )
    }

    /// Frees the rows of side `s` the other side's watermark has passed;
    /// returns the outer rows among them that never matched, joined with
    /// NULLs.
    fn expire(&mut self, s: usize) -> Result<Vec<RecordBatch>> {
        let other = match self.watermarks[1 - s] {
            w @ (i64::MIN | i64::MAX) => w,
            w => w.saturating_sub(self.spec.watermark_lags[1 - s]),
        };
        let before = match (other, s) {
            (i64::MAX, _) => i64::MAX,
            // A left row at t matches right rows at t - hi ..= t - lo.
            (w, 0) => w.saturating_add(self.spec.lo),
            // A right row at t matches left rows at t + lo ..= t + hi.
            (w, _) => w.saturating_sub(self.spec.hi),
        };
        let freed = self.sides[s].expire(before)?;
        if !self.outer(s) {
            return Ok(Vec::new());
        }
        freed
            .into_iter()
            .map(|rows| self.joined(s, rows.columns().to_vec(), None, rows.num_rows()))
            .collect()
    }

    /// The joined rows: side `s`'s columns `mine` and the other side's
    /// `theirs` (NULLs when `None`), left columns first.
    fn joined(
        &self,
        s: usize,
        mine: Vec<ArrayRef>,
        theirs: Option<Vec<ArrayRef>>,
        rows: usize,
    ) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            Arc::clone(self.post.input.schema()),
            self.joined_columns(s, mine, theirs, rows),
        )?)
    }

    fn joined_columns(
        &self,
        s: usize,
        mine: Vec<ArrayRef>,
        theirs: Option<Vec<ArrayRef>>,
        rows: usize,
    ) -> Vec<ArrayRef> {
        let other = &self.sides[1 - s].schema;
        let theirs = theirs.unwrap_or_else(|| {
            (other.fields().iter())
                .map(|f| new_null_array(f.data_type(), rows))
                .collect()
        });
        match s {
            0 => [mine, theirs].concat(),
            _ => [theirs, mine].concat(),
        }
    }

    /// Joins a prepared batch of side `s` with what the other side holds:
    /// the matching pairs, and which of the batch's rows matched.
    fn probe(
        &mut self,
        s: usize,
        batch: &RecordBatch,
        new: &Evaluated,
    ) -> Result<(Option<RecordBatch>, Vec<bool>)> {
        let (lo, hi) = (self.spec.lo, self.spec.hi);
        let fits = move |mine: i64, theirs: i64| {
            let d = match s {
                0 => mine.saturating_sub(theirs),
                _ => theirs.saturating_sub(mine),
            };
            (lo..=hi).contains(&d)
        };
        let mut matched = vec![false; batch.num_rows()];
        let (mut news, mut stored) = self.sides[1 - s].probe(new, fits);
        if news.is_empty() {
            return Ok((None, matched));
        }
        let indices = UInt32Array::from(news.clone());
        let mine = (batch.columns().iter())
            .map(|c| Ok(take(c, &indices, None)?))
            .collect::<Result<Vec<_>>>()?;
        let theirs = self.sides[1 - s].take(&stored)?;
        let mut joined = self.joined(s, mine, Some(theirs), news.len())?;
        if let Some(filter) = &self.spec.filter {
            let mask = filter.evaluate(&joined)?.into_array(joined.num_rows())?;
            let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
                return crate::internal_err!("join condition is not boolean");
            };
            let keep = |i: usize| mask.is_valid(i) && mask.value(i);
            (news, stored) = (0..news.len())
                .filter(|i| keep(*i))
                .map(|i| (news[i], stored[i]))
                .unzip();
            joined = filter_record_batch(&joined, mask)?;
        }
        for r in &news {
            matched[*r as usize] = true;
        }
        self.sides[1 - s].mark_matched(&stored);
        Ok(((joined.num_rows() > 0).then_some(joined), matched))
    }

    /// The state schema: key group, side, whether the row has matched, then
    /// the joined columns (the other side's NULL).
    fn state_columns(&self, s: usize, rows: &RecordBatch, matched: &[bool]) -> Result<RecordBatch> {
        // The other side's columns are NULL here, even where the joined
        // rows' are not nullable (an inner join's).
        let mut fields = vec![
            Field::new(SIDE_COLUMN, DataType::UInt8, false),
            Field::new(MATCHED_COLUMN, DataType::Boolean, false),
        ];
        fields.extend(
            (self.post.input.schema().fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt8Array::from(vec![s as u8; rows.num_rows()])),
            Arc::new(BooleanArray::from(matched.to_vec())),
        ];
        columns.extend(self.joined_columns(s, rows.columns().to_vec(), None, rows.num_rows()));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }

    /// Stores restored state rows of side `s` (without the key group).
    fn restore_side(&mut self, s: usize, state: &RecordBatch, left_columns: usize) -> Result<()> {
        let Some(matched) = state.column(1).as_any().downcast_ref::<BooleanArray>() else {
            return crate::internal_err!("join state without matches");
        };
        let matched: Vec<bool> = matched.iter().map(|m| m == Some(true)).collect();
        let range = match s {
            0 => 2..2 + left_columns,
            _ => 2 + left_columns..state.num_columns(),
        };
        let rows = RecordBatch::try_new(
            Arc::clone(&self.sides[s].schema),
            range.map(|c| Arc::clone(state.column(c))).collect(),
        )?;
        let new = self.sides[s].evaluate(&rows)?;
        self.sides[s].insert(&rows, new, matched)
    }
}

const SIDE_COLUMN: &str = "join_side";
const MATCHED_COLUMN: &str = "join_matched";

#[async_trait]
impl Operator for IntervalJoin {
    /// A row behind its own source's watermark joins nothing.
    fn late_rows(&self, _port: usize, input: &Rows) -> Option<BooleanArray> {
        let times = input.times.as_ref()?;
        Some(
            (times.event_time.iter().zip(&times.watermark))
                .map(|(t, w)| Some(t < w))
                .collect(),
        )
    }

    async fn prepare(&mut self, port: usize, input: &Rows) -> Result<Vec<RecordBatch>> {
        let mut rows = input.batch.clone();
        if let Some(late) = self.late_rows(port, input)
            && late.true_count() > 0
        {
            rows = filter_record_batch(&rows, &datafusion::arrow::compute::not(&late)?)?;
        }
        self.pre[port].run(vec![rows]).await
    }

    fn key_groups(&self, port: usize, prepared: &RecordBatch) -> Result<Option<Vec<u16>>> {
        Ok(Some(self.sides[port].evaluate(prepared)?.groups))
    }

    async fn process(
        &mut self,
        port: usize,
        prepared: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mut emitted = Vec::new();
        for batch in prepared {
            let new = self.sides[port].evaluate(&batch)?;
            let (joined, matched) = self.probe(port, &batch, &new)?;
            emitted.extend(joined);
            self.sides[port].insert(&batch, new, matched)?;
        }
        // Rows the other side's watermark has already passed match nothing
        // more: an outer join emits them now, not at its next advance.
        emitted.extend(self.expire(port)?);
        self.post.run_into(emitted, out).await
    }

    async fn advance(
        &mut self,
        port: usize,
        watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.watermarks[port] = watermark;
        let freed = self.expire(1 - port)?;
        self.post.run_into(freed, out).await
    }

    fn signature(&self) -> Option<&str> {
        Some(&self.signature)
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let mut state = Vec::new();
        for s in 0..2 {
            for (rows, matched, groups) in self.sides[s].rows() {
                state.push(with_key_groups(
                    &self.state_columns(s, rows, matched)?,
                    groups,
                )?);
            }
        }
        Ok(state)
    }

    fn restore(
        &mut self,
        state: &[RecordBatch],
        owned: &KeyGroups,
        watermarks: &[i64],
    ) -> Result<()> {
        for (port, w) in watermarks.iter().enumerate().take(2) {
            self.watermarks[port] = *w;
        }
        let left_columns = self.sides[0].schema.fields().len();
        for batch in state {
            let groups = batch
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt16Array>();
            let Some(groups) = groups else {
                return crate::internal_err!("join state without key groups");
            };
            let batch = without_key_groups(&owned.keep(batch, groups.values().iter().copied())?)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let Some(sides) = batch.column(0).as_any().downcast_ref::<UInt8Array>() else {
                return crate::internal_err!("join state without sides");
            };
            // A reader may put rows of both sides in one batch.
            for s in 0..2 {
                let of_side: BooleanArray =
                    sides.iter().map(|v| Some(v == Some(s as u8))).collect();
                let rows = filter_record_batch(&batch, &of_side)?;
                if rows.num_rows() > 0 {
                    self.restore_side(s, &rows, left_columns)?;
                }
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: self.sides[0].len() + self.sides[1].len(),
            bytes: self.sides[0].bytes() + self.sides[1].bytes(),
        }
    }

    fn describe(&self) -> Description {
        let kind = match self.spec.join_type {
            JoinType::Left => "left outer",
            JoinType::Right => "right outer",
            JoinType::Full => "full outer",
            _ => "inner",
        };
        let lags = match self.spec.watermark_lags {
            [0, 0] => String::new(),
            [l, r] => format!(
                "; the left times come up to {l} ms, the right up to {r} ms behind their \
                 watermarks"
            ),
        };
        Description {
            summary: format!(
                "interval join ({kind}) on {}; left.time - right.time within [{} ms, {} ms]{lags}",
                self.spec.condition, self.spec.lo, self.spec.hi
            ),
            state: Some(
                "the rows of both sides by key; a left row is freed when the right watermark \
                 passes its time minus the lower bound, a right row when the left watermark \
                 passes its time plus the upper bound (bounded by the watermarks)"
                    .into(),
            ),
            plans: vec![
                (
                    "on each batch of the left input".into(),
                    Arc::clone(&self.pre[0].plan),
                ),
                (
                    "on each batch of the right input".into(),
                    Arc::clone(&self.pre[1].plan),
                ),
                ("on the joined rows".into(), Arc::clone(&self.post.plan)),
            ],
        }
    }
}
