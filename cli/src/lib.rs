//! The `switchyard` daemon as a library: argument parsing, the YAML
//! configuration, the run loop and the control socket. The `switchyard`
//! binary (src/main.rs) is a thin entry point over these modules; they are
//! a library so that the fuzz targets in fuzz/ can reach the YAML loader.
//! Not a stable API.

#![deny(unsafe_code)]

mod accept;
pub mod args;
pub mod config;
pub mod control;
pub mod ctl;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod run;
pub mod running;
pub mod settings;
pub mod stats;
#[allow(unsafe_code)]
mod sys;
pub mod top;
pub mod values;
