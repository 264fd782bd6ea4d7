//! Decoding on several threads, handed on in the order it was read.
//!
//! A source's reader cuts raw micro-batches; parsing them (CSV, JSON, regex,
//! type conversion) costs more than reading, so [`ordered_pool`] runs it on
//! several threads. Batch `i` goes to thread `i % n` and is taken back from
//! that thread's queue in turn, so the operators see the batches in source
//! order, exactly as with one thread: which rows are late, and every
//! watermark, stay the same.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::error::{Result, StreamSqlError};

/// The reading side: hands raw batches to the threads, round-robin.
pub(crate) struct PoolInput<I> {
    queues: Vec<SyncSender<I>>,
    next: usize,
}

impl<I> PoolInput<I> {
    /// Hands on `item` (blocking while its thread is busy). `false` when the
    /// pipeline stopped taking batches: the reader stops too.
    pub fn send(&mut self, item: I) -> bool {
        let Some(queue) = self.queues.get(self.next) else {
            return false;
        };
        let sent = queue.send(item).is_ok();
        self.next = (self.next + 1) % self.queues.len();
        sent
    }

    /// No more items: the threads end once they have handed on theirs.
    pub fn close(&mut self) {
        self.queues.clear();
    }
}

/// The pipeline's side: the decoded batches, in the order they were sent.
pub(crate) struct PoolOutput<O> {
    queues: Vec<mpsc::Receiver<O>>,
    next: usize,
    threads: Vec<JoinHandle<()>>,
}

impl<O> PoolOutput<O> {
    /// The next decoded batch; `None` once the input side has been dropped
    /// and every batch sent before has been taken.
    pub async fn recv(&mut self) -> Option<O> {
        let item = self.queues.get_mut(self.next)?.recv().await?;
        self.next = (self.next + 1) % self.queues.len();
        Some(item)
    }

    /// Stops the threads and waits for them, once the batches have ended: a
    /// thread that died (a panic) fails the run instead of looking like the
    /// end of input. Call it before joining the reader: a thread waiting to
    /// hand on a batch gives up, and so does a reader waiting for it.
    pub async fn join(&mut self) -> Result<()> {
        self.queues.clear();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().map(|t| t.join()).find_map(|r| r.err())
        })
        .await;
        match joined {
            Ok(None) => Ok(()),
            Ok(Some(panic)) => crate::internal_err!(
                "a decoding thread died: {}",
                super::replay::panic_message(&panic)
            ),
            Err(e) => crate::internal_err!("joining the decoding threads: {e}"),
        }
    }
}

/// Starts `threads` threads named `name-decode-<i>`, each applying `decode`
/// to the items it is handed. Each holds at most one item waiting and one
/// result, so memory stays a few batches whatever the thread count.
pub(crate) fn ordered_pool<I, O>(
    name: &str,
    threads: usize,
    decode: Arc<dyn Fn(I) -> O + Send + Sync>,
) -> Result<(PoolInput<I>, PoolOutput<O>)>
where
    I: Send + 'static,
    O: Send + 'static,
{
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let (input, items): (SyncSender<I>, Receiver<I>) = sync_channel(1);
        let (output, results) = mpsc::channel(1);
        let decode = Arc::clone(&decode);
        let handle = std::thread::Builder::new()
            .name(format!("{name}-decode-{i}"))
            .spawn(move || {
                for item in items {
                    // A closed output means the pipeline stopped.
                    if output.blocking_send(decode(item)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| StreamSqlError::io("cannot start a decoding thread", e))?;
        inputs.push(input);
        outputs.push(results);
        handles.push(handle);
    }
    Ok((
        PoolInput {
            queues: inputs,
            next: 0,
        },
        PoolOutput {
            queues: outputs,
            next: 0,
            threads: handles,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_come_out_in_the_order_they_went_in() {
        // Later items finish first on their thread: order still holds.
        let (mut input, mut output) = ordered_pool(
            "test",
            3,
            Arc::new(|i: u64| {
                std::thread::sleep(std::time::Duration::from_micros((7 - i % 7) * 200));
                i * 10
            }),
        )
        .expect("pool");
        let reader = std::thread::spawn(move || {
            for i in 0..100 {
                assert!(input.send(i));
            }
        });
        let mut seen = Vec::new();
        while let Some(item) = output.recv().await {
            seen.push(item);
        }
        reader.join().expect("reader");
        output.join().await.expect("threads");
        assert_eq!(seen, (0..100).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_thread_that_dies_fails_the_run() {
        let (mut input, mut output) = ordered_pool(
            "test",
            2,
            Arc::new(|i: u64| {
                assert!(i != 5, "item {i} is poison");
                i
            }),
        )
        .expect("pool");
        let reader = std::thread::spawn(move || (0..100).take_while(|i| input.send(*i)).count());
        let mut seen = Vec::new();
        while let Some(item) = output.recv().await {
            seen.push(item);
        }
        // Nothing after the lost item is handed on, and the reader stops.
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        let error = output.join().await.expect_err("a thread died").to_string();
        assert!(error.contains("item 5 is poison"), "{error}");
        assert!(reader.join().expect("reader") < 100);
    }
}
