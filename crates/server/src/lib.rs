//! The `callrelay` server: configuration, the HTTP API (links, blocks, call log, admin), auth,
//! metrics. `main.rs` is a thin command-line wrapper around this library, so integration tests
//! can run the same server in-process on `127.0.0.1:0`.

pub mod api;
pub mod app;
pub mod auth;
pub mod budget;
pub mod calendar;
pub mod cascade;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod enforce;
pub mod ice;
pub mod lobby;
pub mod media;
pub mod metrics;
pub mod moderation;
pub mod oidc;
pub mod problem;
pub mod rooms;
pub mod seats;
pub mod signal;
pub mod state;
pub mod testing;
pub mod trunk;
pub mod web;
pub mod webhooks;
pub mod whip;
