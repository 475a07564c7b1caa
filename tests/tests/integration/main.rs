//! One integration binary for the workspace; each module is a suite.

mod conformance;
mod netkit;
mod runtime;
