//! Progress bars for long work (training, evaluation, data installs): drawn on stderr, and only
//! when stderr is a terminal, so that `--json` output and logs stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` units of work labelled `label`, starting at `position`.
pub fn bar(total: u64, position: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_position(position);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(label.to_string());
    bar
}
