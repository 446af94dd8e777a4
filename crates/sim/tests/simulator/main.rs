//! The simulator's integration tests, as one binary: each module drives a real simulator on
//! 127.0.0.1:0 through its public API and over HTTP.

mod api;
mod batch_read;
mod echo;
mod faults;
mod limits;
mod oauth;
mod outside;
mod support;
mod tls;
