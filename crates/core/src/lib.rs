//! Runnel's smallest shared pieces, each needed by more than one crate: the clock tests
//! can control (`clock`), the one durable file write (`fs`), Kafka's topic-name rule and
//! cluster ids (`names`), a seeded generator for tests' schedules (`rng`). This crate depends on no other Runnel crate; every other one
//! may depend on it.

pub mod clock;
pub mod fs;
pub mod names;
pub mod rng;

pub use clock::{Clock, ManualClock, SystemClock};
