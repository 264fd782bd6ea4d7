//! Keyed parallel workers: one query's operator on `parallelism` threads.
//!
//! A query runs as N instances of its operator, each planned on its own and
//! owning a contiguous range of key groups (see [`crate::state::key_group`]),
//! as Flink's subtasks do. A micro-batch goes through two stages, each a
//! task per instance on the runtime's threads:
//!
//! 1. **prepare**: the batch is cut into N slices; each instance does the
//!    row-local work on one slice (window columns, filters, projections) and
//!    routes the prepared rows to the instance owning their key group;
//! 2. **process**: each instance takes the rows routed to it, slice by slice,
//!    so in source order, into its state and emits what they complete.
//!
//! Watermarks are the source's, the same for every instance, and each row
//! is judged by the watermark it met in source order: which rows are late
//! and what each window holds does not depend on N, so the query emits the
//! same rows (as a multiset) at every parallelism. An operator without keyed
//! state keeps its rows on the instance that prepared them. A panicking
//! instance fails the run.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use futures::future::BoxFuture;

use crate::error::Result;
use crate::operator::{EventTimes, Operator, Rows, StateSize};
use crate::state::KeyGroups;

type Instance = Box<dyn Operator>;

/// The instances of one query's operator, instance `i` owning
/// [`KeyGroups::of_worker`]`(i, N)`.
pub struct Workers {
    query: String,
    /// `None` only while an instance is out on a task.
    instances: Vec<Option<Instance>>,
}

impl Workers {
    /// `instances`: the query's operator planned once per worker.
    pub fn new(query: &str, instances: Vec<Instance>) -> Self {
        Self {
            query: query.to_string(),
            instances: instances.into_iter().map(Some).collect(),
        }
    }

    fn first(&self) -> Result<&dyn Operator> {
        match self.instances.first() {
            Some(Some(instance)) => Ok(instance.as_ref()),
            _ => crate::internal_err!("query {} has no operator", self.query),
        }
    }

    /// The rows of a source's batch the query will not count (see
    /// [`Operator::late_rows`]): the same for every instance.
    pub fn late_rows(&self, port: usize, input: &Rows) -> Result<Option<BooleanArray>> {
        Ok(self.first()?.late_rows(port, input))
    }

    /// Both stages for `input`, rows of the query's input `port`.
    pub async fn process(
        &mut self,
        port: usize,
        input: &Rows,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = self.instances.len();
        let slices = slices(input, n);
        // Stage 1: instance `i` prepares slice `i` and routes its rows.
        let routed: Vec<Vec<Vec<RecordBatch>>> = self
            .on_each(move |i, mut instance| {
                let slice = slices[i].clone();
                Box::pin(async move {
                    let routed = match slice {
                        None => Ok(vec![Vec::new(); n]),
                        Some(slice) => route(&mut instance, port, i, n, &slice).await,
                    };
                    (instance, routed)
                })
            })
            .await?;
        // Stage 2: instance `j` takes what every slice routed to it.
        let mut inputs: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for from_slice in routed {
            for (j, batches) in from_slice.into_iter().enumerate() {
                inputs[j].extend(batches);
            }
        }
        let inputs = Arc::new(inputs);
        let emitted = self
            .on_each(move |j, mut instance| {
                let inputs = Arc::clone(&inputs);
                Box::pin(async move {
                    let mut out = Vec::new();
                    let result = match inputs[j].is_empty() {
                        true => Ok(()),
                        false => instance.process(port, inputs[j].clone(), &mut out).await,
                    };
                    (instance, result.map(|()| out))
                })
            })
            .await?;
        out.extend(emitted.into_iter().flatten());
        Ok(())
    }

    /// A processing-time trigger on every instance.
    pub async fn trigger(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let emitted = self
            .on_each(|_, mut instance| {
                Box::pin(async move {
                    let mut out = Vec::new();
                    let result = instance.trigger(&mut out).await;
                    (instance, result.map(|()| out))
                })
            })
            .await?;
        out.extend(emitted.into_iter().flatten());
        Ok(())
    }

    /// Every instance advances input `port` to `watermark`.
    pub async fn advance(
        &mut self,
        port: usize,
        watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let emitted = self
            .on_each(move |_, mut instance| {
                Box::pin(async move {
                    let mut out = Vec::new();
                    let result = instance.advance(port, watermark, &mut out).await;
                    (instance, result.map(|()| out))
                })
            })
            .await?;
        out.extend(emitted.into_iter().flatten());
        Ok(())
    }

    pub fn signature(&self) -> Result<Option<String>> {
        Ok(self.first()?.signature().map(str::to_string))
    }

    /// Every instance's state; each row carries its key group, so the state
    /// restores at any parallelism.
    pub fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let mut state = Vec::new();
        for i in 0..self.instances.len() {
            state.extend(self.instance(i)?.snapshot()?);
        }
        Ok(state)
    }

    /// Each instance loads the rows of `state` in the key groups it owns;
    /// `watermarks`: its inputs', one per port.
    pub fn restore(&mut self, state: &[RecordBatch], watermarks: &[i64]) -> Result<()> {
        let n = self.instances.len();
        for i in 0..n {
            self.instance(i)?
                .restore(state, &KeyGroups::of_worker(i, n), watermarks)?;
        }
        Ok(())
    }

    /// Instance `i`; an error when a failure took it (the run is failing).
    fn instance(&mut self, i: usize) -> Result<&mut Instance> {
        match self.instances.get_mut(i) {
            Some(Some(instance)) => Ok(instance),
            _ => crate::internal_err!(
                "worker {i} of query {} was lost to an earlier failure",
                self.query
            ),
        }
    }

    pub fn state_size(&self) -> StateSize {
        self.instances
            .iter()
            .flatten()
            .map(|i| i.state_size())
            .fold(StateSize::default(), |a, b| a + b)
    }

    /// Runs `work` for every instance, each on a task of its own when there
    /// are several, and puts the instances back. Results in instance order.
    async fn on_each<T: Send + 'static>(
        &mut self,
        work: impl Fn(usize, Instance) -> BoxFuture<'static, (Instance, Result<T>)>,
    ) -> Result<Vec<T>> {
        for i in 0..self.instances.len() {
            self.instance(i)?;
        }
        let mut taken: Vec<Instance> = self.instances.iter_mut().filter_map(Option::take).collect();
        if taken.len() == 1
            && let Some(instance) = taken.pop()
        {
            let (instance, result) = work(0, instance).await;
            self.instances[0] = Some(instance);
            return Ok(vec![result?]);
        }
        let handles: Vec<_> = taken
            .into_iter()
            .enumerate()
            .map(|(i, instance)| tokio::spawn(work(i, instance)))
            .collect();
        let mut results = Vec::with_capacity(handles.len());
        let mut failure = None;
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.await {
                Ok((instance, result)) => {
                    self.instances[i] = Some(instance);
                    match result {
                        Ok(value) => results.push(value),
                        Err(e) => failure = failure.or(Some(e)),
                    }
                }
                Err(died) => {
                    failure = failure.or(Some(crate::internal_error!(
                        "worker {i} of query {} died: {}",
                        self.query,
                        panic_message(died)
                    )));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }
}

/// Stage 1 on one instance: prepares `slice` (of input `port`) and splits
/// the prepared rows by the instance owning their key group (all to `me`
/// without keyed state).
async fn route(
    instance: &mut Instance,
    port: usize,
    me: usize,
    n: usize,
    slice: &Rows,
) -> Result<Vec<Vec<RecordBatch>>> {
    let mut routed = vec![Vec::new(); n];
    for batch in instance.prepare(port, slice).await? {
        let groups = match n {
            1 => None,
            _ => instance.key_groups(port, &batch)?,
        };
        let Some(groups) = groups else {
            routed[me].push(batch);
            continue;
        };
        let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (row, group) in groups.iter().enumerate() {
            indices[KeyGroups::owner(*group, n)].push(row as u32);
        }
        for (owner, rows) in indices.into_iter().enumerate() {
            match rows.len() {
                0 => {}
                len if len == batch.num_rows() => routed[owner].push(batch.clone()),
                _ => routed[owner].push(take_record_batch(&batch, &UInt32Array::from(rows))?),
            }
        }
    }
    Ok(routed)
}

/// `input` cut into `n` contiguous slices of about equal size (`None` for
/// an empty one), each row keeping its event time and watermark.
fn slices(input: &Rows, n: usize) -> Vec<Option<Rows>> {
    let rows = input.batch.num_rows();
    (0..n)
        .map(|i| {
            let (start, end) = (rows * i / n, rows * (i + 1) / n);
            (end > start).then(|| Rows {
                batch: input.batch.slice(start, end - start),
                times: input.times.as_ref().map(|t| {
                    Arc::new(EventTimes {
                        event_time: t.event_time[start..end].to_vec(),
                        watermark: t.watermark[start..end].to_vec(),
                    })
                }),
            })
        })
        .collect()
}

fn panic_message(died: tokio::task::JoinError) -> String {
    match died.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}
