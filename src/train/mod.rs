//! Training and evaluation: data loading with augmentation, Adam, the training loop
//! with checkpoints, and R@K/mR evaluation.

pub mod adam;
pub mod calibrate;
pub mod device_check;
pub mod evaluate;
pub mod figure;
pub mod loader;
pub mod metrics;
pub mod trainer;

pub use trainer::{TrainOptions, TrainState, TrainSummary, train};
