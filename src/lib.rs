//! vigil: an edge camera inference daemon. ONNX-exported CNNs run on the device with
//! tract; detections go out over MQTT.
//!
//! The library holds everything; `src/main.rs` only parses arguments and maps errors to
//! exit codes.

pub mod annotate;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod dataset;
pub mod deploy;
pub mod detect;
pub mod files;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod npy;
pub mod plot;
pub mod service;
pub mod settings;
pub mod source;
#[cfg(feature = "train")]
pub mod train;
