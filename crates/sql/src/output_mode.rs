//! Spark's output modes: which rows of a stateful query's result each batch writes.

use crate::error::{Result, SqlError};

/// Spark's output modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    Append,
    Update,
    Complete,
}

impl OutputMode {
    /// Spark's names, case-insensitive.
    pub fn parse(s: &str) -> Result<OutputMode> {
        match s.to_ascii_lowercase().as_str() {
            "append" => Ok(OutputMode::Append),
            "update" => Ok(OutputMode::Update),
            "complete" => Ok(OutputMode::Complete),
            _ => Err(SqlError::option(
                "outputMode",
                format!("{s:?} is not append, update or complete"),
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Append => "Append",
            OutputMode::Update => "Update",
            OutputMode::Complete => "Complete",
        }
    }
}
