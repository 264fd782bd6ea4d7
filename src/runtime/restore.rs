//! Starting a pipeline from its checkpoint: where checkpoints live, and
//! whether the checkpoint still fits the pipeline as it is now declared.

use std::path::Path;

use crate::config::{LoadedConfig, PipelineConfig};
use crate::error::{Diagnostic, Result, StreamSqlError};
use crate::state::{Checkpoint, CheckpointStore, QueryState, SourceCheckpoint};

const FROM_SCRATCH: &str = "undo the change, or run with --from-scratch to drop the \
                            checkpoints and recompute from the start of the input";

/// The pipeline's checkpoint store: `checkpoint.location` (a URL, or a
/// directory relative to pipelines.yaml), by default `<output>/_checkpoints`.
pub fn open_store(
    loaded: &LoadedConfig,
    config: &PipelineConfig,
    output_dir: &Path,
) -> Result<CheckpointStore> {
    let location = match &config.checkpoint.location {
        Some(location) if location.contains("://") => location.clone(),
        Some(dir) => loaded.resolve(Path::new(dir)).display().to_string(),
        None => output_dir.join("_checkpoints").display().to_string(),
    };
    CheckpointStore::open(&location, config.checkpoint.retain).map_err(|e| {
        Diagnostic::new(
            loaded.path.display().to_string(),
            None,
            format!("cannot open checkpoint location `{location}`: {e}"),
        )
        .with_fix("set `checkpoint.location` to a writable directory or an s3:// URL")
        .into()
    })
}

/// Where source `name` resumes: its checkpointed position and watermark, or
/// the start of its input.
pub fn source_state(
    loaded: &LoadedConfig,
    checkpoint: Option<&Checkpoint>,
    name: &str,
) -> Result<SourceCheckpoint> {
    let Some(checkpoint) = checkpoint else {
        return Ok(SourceCheckpoint {
            position: None,
            watermark: i64::MIN,
        });
    };
    checkpoint
        .manifest
        .sources
        .get(name)
        .cloned()
        .ok_or_else(|| {
            Diagnostic::new(
                loaded.path.display().to_string(),
                None,
                format!(
                    "source `{name}` is not in checkpoint {} (it was added or renamed since)",
                    checkpoint.manifest.sequence
                ),
            )
            .with_fix(FROM_SCRATCH)
            .into()
        })
}

/// Loads query `query`'s state into `operator`, refusing state written by a
/// query whose window, keys, aggregates or history differ.
pub fn query_state(
    loaded: &LoadedConfig,
    pipeline: &str,
    checkpoint: &Checkpoint,
    query: &str,
    operator: &mut dyn QueryState,
) -> Result<()> {
    let sequence = checkpoint.manifest.sequence;
    let (sql_path, _) = loaded.sql_of(pipeline, query);
    let refuse = |message: String| -> StreamSqlError {
        Diagnostic::new(sql_path.display().to_string(), None, message)
            .with_fix(FROM_SCRATCH)
            .into()
    };
    let Some(saved) = checkpoint.manifest.queries.get(query) else {
        return Err(refuse(format!(
            "query `{query}` keeps state, but checkpoint {sequence} has none for it \
             (it was added, renamed or made stateful since)"
        )));
    };
    if saved.signature != operator.signature() {
        return Err(refuse(format!(
            "query `{query}` changed since checkpoint {sequence}, and its state no longer fits:\n  \
             checkpointed: {}\n  now:          {}",
            saved.signature,
            operator.signature()
        )));
    }
    operator.restore(&checkpoint.states[query])
}
