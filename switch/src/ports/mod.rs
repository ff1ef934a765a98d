//! Socket ports. One module per transport, each with the same small
//! surface: open, receive loop, non-blocking send, close, counters.

pub mod receive;
pub mod unix;
