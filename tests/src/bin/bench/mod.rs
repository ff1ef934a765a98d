//! Modules of the `switchyard-bench` load generator.

pub mod json;
pub mod measure;
pub mod proto;
pub mod report;
pub mod sys;
pub mod world;
