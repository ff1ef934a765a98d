//! Modules of the `switchyard-bench` load generator.

pub mod flows;
pub mod guests;
pub mod json;
pub mod mac_flood;
pub mod macnat;
pub mod measure;
pub mod proto;
pub mod qemu;
pub mod report;
pub mod sys;
pub mod tcp;
pub mod uml;
pub mod world;
