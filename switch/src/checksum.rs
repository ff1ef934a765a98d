//! The Internet checksum (RFC 1071): the wire crate's one implementation,
//! at the path tests and tools import it from. [`fold`] complements.

pub use switchyard_wire::checksum::{fold, sum};
