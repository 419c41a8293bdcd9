//! Test and benchmark support for fanout.
//!
//! * [`site`]: a local fixture web site on 127.0.0.1 (pages, files with byte
//!   ranges, error statuses, slow and flaky responses).
//! * [`component`]: serves a built component under `wasmtime serve` on a free
//!   loopback port and stops it when dropped.
//! * [`client`]: a small blocking HTTP/1.1 client for talking to both.
//! * [`proxy`]: a reverse proxy that injects faults (errors, hangs, cut or
//!   altered answers) into chosen requests between two components.
//! * [`data`]: generated CSV for benchmarks and large tests.
//! * [`rng`]: a deterministic random number generator for property tests.
//! * [`s3`]: a real S3-compatible server (SeaweedFS) on loopback, with its own directory.
//!
//! Everything binds to 127.0.0.1 only and picks free ports, so tests run in
//! parallel without clashing and never reach another host.

pub mod balancer;
pub mod client;
pub mod component;
pub mod data;
pub mod proxy;
pub mod rng;
pub mod s3;
pub mod site;
pub mod spin;
