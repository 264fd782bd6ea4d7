//! One error type for the crate, rendered for a person at the CLI.
//!
//! Follows DataFusion's convention: an error enum plus a `Result` alias.
//! Problems in user files (pipelines.yaml, queries/*.sql) are [`Diagnostic`]s
//! carrying the file, line and a suggested fix, so `streamsql check` can report
//! all of them at once.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::parquet::errors::ParquetError;

/// A problem in a file the user wrote, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    pub message: String,
    pub fix: String,
}

impl Diagnostic {
    pub fn new(file: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line,
            column: None,
            message: message.into(),
            fix: String::new(),
        }
    }

    pub fn at_column(mut self, column: Option<usize>) -> Self {
        self.column = column;
        self
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every diagnostic found, so the user can fix them all in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamSqlError {
    /// The user's configuration or SQL is wrong; nothing was started.
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// The checkpoint store (a directory or an object store bucket) failed.
    #[error("checkpoint store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A checkpoint that cannot be restored and must not be skipped.
    #[error("{0}")]
    Checkpoint(String),
    /// A sink could not deliver (after its retries); nothing after the last
    /// checkpoint is lost.
    #[error("{0}")]
    Sink(String),
    /// A lookup table could not be read (at start: the run does not begin).
    #[error("{0}")]
    Table(String),
    /// A broken invariant inside the engine: a bug, never the user's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StreamSqlError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Diagnostic> for StreamSqlError {
    fn from(d: Diagnostic) -> Self {
        Self::Invalid(Diagnostics(vec![d]))
    }
}

pub type Result<T, E = StreamSqlError> = std::result::Result<T, E>;

/// `Err(StreamSqlError::Internal(format!(...)))`: a broken invariant, as
/// DataFusion's `internal_err!`.
#[macro_export]
macro_rules! internal_err {
    ($($arg:tt)*) => {
        Err($crate::error::StreamSqlError::Internal(format!($($arg)*)))
    };
}

/// `StreamSqlError::Internal(format!(...))`, for `ok_or_else` and `map_err`.
#[macro_export]
macro_rules! internal_error {
    ($($arg:tt)*) => {
        $crate::error::StreamSqlError::Internal(format!($($arg)*))
    };
}
