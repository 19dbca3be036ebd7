//! Integration tests of the query engine over a real store in a temporary directory.

mod common;
mod formats;
mod limits;
mod read_only;
mod sql;
