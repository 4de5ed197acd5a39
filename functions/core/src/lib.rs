//! The pure core of DeploySphere: domain types, the deployment state machine, build
//! planning, the manifest and log-line formats, and input validation.
//!
//! This crate knows no I/O crate (no AWS, SQL, Kafka or HTTP): adapters live elsewhere.

pub mod error;
pub mod events;
pub mod logs;
pub mod manifest;
pub mod node_version;
pub mod plan;
pub mod ports;
pub mod presets;
pub mod project_config;
pub mod state;
pub mod validate;

pub use error::{Fault, InputError};
pub use events::{BuildEvent, BuildEventKind, BuildSpec, EnvVar, Limits, Phase};
pub use logs::{LogLine, LogStream};
pub use manifest::{Manifest, ManifestEntry};
pub use plan::{BuildPlan, BuildSettings, PackageManager, SourceTree, detect_plan};
pub use ports::{BuildCredentials, LaunchError, Launcher};
pub use state::{DeploymentState, Transition, TransitionError, transition};
