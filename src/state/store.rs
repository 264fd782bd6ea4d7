//! Writing, finding and reading checkpoints through `object_store`.

use std::collections::BTreeMap;
use std::path::Path as LocalPath;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::manifest::{FORMAT_VERSION, Manifest};
use crate::error::{Result, StreamSqlError};

const MANIFEST: &str = "manifest.json";

/// Why a checkpoint folder cannot be restored.
enum Unusable {
    /// Proven half-written or damaged: the one before it is used.
    Corrupt(String),
    /// Not proven anything, or not this run's: the run stops.
    Stop(String),
}

impl Unusable {
    /// A failed read: a missing object is a half-written folder; any other
    /// failure (permission, network, a 5xx) says nothing about the folder.
    fn read(what: &str, error: StreamSqlError) -> Self {
        match error {
            StreamSqlError::ObjectStore(object_store::Error::NotFound { .. }) => {
                Unusable::Corrupt(format!("{what} is missing"))
            }
            other => Unusable::Stop(format!("cannot read {what}: {other}")),
        }
    }
}

/// A complete checkpoint, read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub manifest: Manifest,
    /// Each windowed query's state rows.
    pub states: BTreeMap<String, Vec<RecordBatch>>,
    /// Bytes read (state files and manifest).
    pub bytes: u64,
}

/// Where a pipeline's checkpoints live.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The location as configured, for messages.
    pub location: String,
    retain: usize,
    /// The directory, when the location is on a local disk (to fsync).
    local_dir: Option<std::path::PathBuf>,
}

impl CheckpointStore {
    /// Opens `location`: an `s3://bucket/prefix` URL (credentials and
    /// endpoint from the usual `AWS_*` environment variables), a `file://`
    /// URL, or a local directory (created when missing).
    pub fn open(location: &str, retain: usize) -> Result<Self> {
        let mut local_dir = None;
        let (store, root): (Arc<dyn ObjectStore>, Path) = match url::Url::parse(location) {
            // A one-letter "scheme" is a Windows drive, not a URL.
            Ok(url) if url.scheme().len() > 1 => match url.scheme() {
                "s3" | "s3a" => {
                    let store = AmazonS3Builder::from_env().with_url(location).build()?;
                    (Arc::new(store), Path::from(url.path()))
                }
                "file" => {
                    let dir = url.to_file_path().map_err(|()| {
                        StreamSqlError::Internal(format!("not a local path: {location}"))
                    })?;
                    local_dir = Some(dir.clone());
                    (local(&dir)?, Path::default())
                }
                other => {
                    return Err(StreamSqlError::Internal(format!(
                        "checkpoint location `{location}`: unsupported scheme `{other}` \
                         (use a directory, file:// or s3://)"
                    )));
                }
            },
            _ => {
                local_dir = Some(location.into());
                (local(LocalPath::new(location))?, Path::default())
            }
        };
        Ok(Self {
            store,
            root,
            location: location.to_string(),
            retain,
            local_dir,
        })
    }

    fn folder(&self, sequence: u64) -> Path {
        self.root.clone().join(format!("chk-{sequence:012}"))
    }

    /// The sequence numbers of every checkpoint folder, complete or not, ascending.
    async fn sequences(&self) -> Result<Vec<u64>> {
        let listed = self.store.list_with_delimiter(Some(&self.root)).await?;
        let mut sequences: Vec<u64> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        sequences.sort_unstable();
        Ok(sequences)
    }

    async fn delete_folder(&self, sequence: u64) -> Result<()> {
        let objects: Vec<_> = self
            .store
            .list(Some(&self.folder(sequence)))
            .try_collect()
            .await?;
        // The manifest goes first, so a half-deleted folder is never taken
        // for a complete checkpoint.
        let manifest = self.folder(sequence).join(MANIFEST);
        if objects.iter().any(|o| o.location == manifest) {
            self.store.delete(&manifest).await?;
        }
        for object in objects.iter().filter(|o| o.location != manifest) {
            self.store.delete(&object.location).await?;
        }
        Ok(())
    }

    /// Deletes every checkpoint (`run --from-scratch`).
    pub async fn clear(&self) -> Result<()> {
        for sequence in self.sequences().await? {
            self.delete_folder(sequence).await?;
        }
        Ok(())
    }

    /// Deletes the folders after `sequence`: what a run that died before
    /// finishing its next checkpoint left behind.
    pub async fn discard_after(&self, sequence: u64) -> Result<()> {
        for newer in self
            .sequences()
            .await?
            .into_iter()
            .filter(|s| *s > sequence)
        {
            self.delete_folder(newer).await?;
        }
        Ok(())
    }

    /// The newest complete checkpoint of `pipeline`. A folder proven
    /// half-written or corrupt (no manifest, a manifest or state file that
    /// does not parse or does not match) is skipped with a warning for the
    /// one before. Anything else stops the run: a read that failed (a
    /// permission, an S3 503, a timeout) proves nothing, and a checkpoint of
    /// another format or pipeline is not this run's to discard.
    pub async fn latest(&self, pipeline: &str) -> Result<Option<Checkpoint>> {
        for sequence in self.sequences().await?.into_iter().rev() {
            match self.read(sequence, pipeline).await {
                Ok(checkpoint) => return Ok(Some(checkpoint)),
                Err(Unusable::Corrupt(why)) => tracing::warn!(
                    "skipping checkpoint {sequence} in {}: {why}; trying the one before",
                    self.location
                ),
                Err(Unusable::Stop(why)) => {
                    return Err(StreamSqlError::Checkpoint(format!(
                        "checkpoint {sequence} in {}: {why}",
                        self.location
                    )));
                }
            }
        }
        Ok(None)
    }

    async fn read(&self, sequence: u64, pipeline: &str) -> Result<Checkpoint, Unusable> {
        let folder = self.folder(sequence);
        let manifest_bytes = self
            .get(&folder.clone().join(MANIFEST))
            .await
            .map_err(|e| Unusable::read("the manifest", e))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Unusable::Corrupt(format!("its manifest does not parse ({e})")))?;
        if manifest.format != FORMAT_VERSION {
            return Err(Unusable::Stop(format!(
                "it was written in checkpoint format {}, and this streamsql reads format \
                 {FORMAT_VERSION}; run with --from-scratch to recompute from the start of the \
                 input (outputs are rewritten), or use the streamsql that wrote it",
                manifest.format
            )));
        }
        if manifest.pipeline != pipeline {
            return Err(Unusable::Stop(format!(
                "it belongs to pipeline `{}`; two pipelines cannot share a checkpoint location \
                 (give each its own `checkpoint.location` or output folder)",
                manifest.pipeline
            )));
        }
        if manifest.sequence != sequence {
            return Err(Unusable::Corrupt(format!(
                "its manifest says sequence {}",
                manifest.sequence
            )));
        }
        let mut bytes = manifest_bytes.len() as u64;
        let mut states = BTreeMap::new();
        for (query, entry) in &manifest.queries {
            let Some(file) = &entry.file else {
                states.insert(query.clone(), Vec::new());
                continue;
            };
            let data = self
                .get(&folder.clone().join(file.as_str()))
                .await
                .map_err(|e| Unusable::read(&format!("the state of `{query}`"), e))?;
            if data.len() as u64 != entry.bytes {
                return Err(Unusable::Corrupt(format!(
                    "the state of `{query}` has {} bytes, the manifest says {}",
                    data.len(),
                    entry.bytes
                )));
            }
            bytes += entry.bytes;
            let batches = decode(data)
                .map_err(|e| Unusable::Corrupt(format!("the state of `{query}`: {e}")))?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows as u64 != entry.rows {
                return Err(Unusable::Corrupt(format!(
                    "the state of `{query}` has {rows} rows, the manifest says {}",
                    entry.rows
                )));
            }
            states.insert(query.clone(), batches);
        }
        Ok(Checkpoint {
            manifest,
            states,
            bytes,
        })
    }

    async fn get(&self, path: &Path) -> Result<Bytes> {
        Ok(self.store.get(path).await?.bytes().await?)
    }

    /// Writes the state files, then the manifest (filling in each query's
    /// file, rows and bytes), then deletes checkpoints beyond `retain`.
    /// Returns the bytes written.
    pub async fn write(
        &self,
        mut manifest: Manifest,
        states: BTreeMap<String, Vec<RecordBatch>>,
    ) -> Result<u64> {
        let folder = self.folder(manifest.sequence);
        let mut written = 0;
        for (query, batches) in states {
            let entry = manifest.queries.get_mut(&query).ok_or_else(|| {
                StreamSqlError::Internal(format!("state of `{query}` has no manifest entry"))
            })?;
            let Some(first) = batches.first() else {
                continue;
            };
            let file = format!("{query}.parquet");
            let data = encode(first, &batches)?;
            entry.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            entry.bytes = data.len() as u64;
            written += entry.bytes;
            self.store
                .put(&folder.clone().join(file.as_str()), PutPayload::from(data))
                .await?;
            self.sync_local(&folder, Some(&file))?;
            entry.file = Some(file);
        }
        // The state files and their names are on disk before the manifest
        // that names them (the folder exists once a file is in it).
        if manifest.queries.values().any(|q| q.file.is_some()) {
            self.sync_local(&folder, None)?;
        }
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StreamSqlError::Internal(format!("manifest: {e}")))?;
        written += json.len() as u64;
        self.store
            .put(&folder.clone().join(MANIFEST), PutPayload::from(json))
            .await?;
        // The manifest, and the folder entry naming it.
        self.sync_local(&folder, Some(MANIFEST))?;
        self.sync_local(&folder, None)?;
        self.sync_local(&self.root, None)?;
        let older: Vec<u64> = self
            .sequences()
            .await?
            .into_iter()
            .filter(|s| *s < manifest.sequence)
            .collect();
        let drop = older.len().saturating_sub(self.retain.saturating_sub(1));
        for sequence in &older[..drop] {
            self.delete_folder(*sequence).await?;
        }
        Ok(written)
    }
}

impl CheckpointStore {
    /// On a local disk, flushes `file` of `folder` (or the folder itself)
    /// to disk; object stores make a completed PUT durable themselves.
    fn sync_local(&self, folder: &Path, file: Option<&str>) -> Result<()> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let mut path = dir.clone();
        path.extend(folder.parts().map(|p| p.as_ref().to_string()));
        if let Some(file) = file {
            path.push(file);
        }
        crate::state::sync(&path)
    }
}

fn local(dir: &LocalPath) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StreamSqlError::io(format!("cannot create {}", dir.display()), e))?;
    Ok(Arc::new(
        LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true),
    ))
}

/// State rows as one Parquet file (zstd level 1: checkpoints are frequent).
fn encode(first: &RecordBatch, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), Some(props))?;
    for batch in batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner()?)
}

fn decode(data: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}
