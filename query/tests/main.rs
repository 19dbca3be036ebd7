//! Integration tests of the query engine over a real store in a temporary directory.

mod common;
mod formats;
mod latest;
mod limits;
mod read_only;
mod rollups;
mod slt;
mod sql;
