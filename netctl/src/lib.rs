//! The parts of `netctl` other programs read: the link records (the fuzzer decodes them).

#![forbid(unsafe_code)]

pub mod record;
