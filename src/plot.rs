//! Placeholder until the plot module lands (taken over by the real one at merge).
use std::path::Path;
#[derive(Debug, Clone)]
pub struct MetricPoint;
pub fn read_metrics(_path: &Path) -> anyhow::Result<Vec<MetricPoint>> {
    Ok(Vec::new())
}
pub fn plot_run(_m: &[MetricPoint], _title: &str, _out: &Path) -> anyhow::Result<()> {
    Ok(())
}
