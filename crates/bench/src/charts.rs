//! Charts of a results directory (being written).

use std::path::Path;

use crate::results::RunResult;

pub fn draw(_results: &[RunResult], _dir: &Path) -> anyhow::Result<()> {
    Ok(())
}
