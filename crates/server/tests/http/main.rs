//! HTTP integration tests: a real server on 127.0.0.1:0, real stores (SQLite file and PostgreSQL).
//! One module per behaviour; each runs on both backends.

mod common;

mod admin_revoke;
mod blocks;
mod call_log;
mod create_and_preview;
mod expiry;
mod join;
mod limits;
mod ops;
mod restart;
mod schedule;
