//! From a `.sql` file to what runs: DataFusion plans each query once, and a
//! windowed query's physical plan is split at its aggregate into the part run
//! on each micro-batch, our stateful window operator, and the part run on the
//! rows the operator emits.

mod query;
mod slot;
mod window_sql;

pub use query::{QueryPlan, QueryShape, TableDef, TableRole, WindowedPlan, with_window_columns};
pub use slot::BatchSlot;
pub use window_sql::WindowCall;
