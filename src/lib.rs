//! vigil: an edge camera inference daemon. ONNX-exported CNNs run on the device with
//! tract; detections go out over MQTT.
//!
//! The library holds everything; `src/main.rs` only parses arguments and maps errors to
//! exit codes.

pub mod annotate;
pub mod cli;
pub mod dataset;
pub mod metrics;
pub mod model;
pub mod npy;
pub mod plot;
#[cfg(feature = "train")]
pub mod train;
