//! Upper bounds on the sizes a configuration or a command may ask for. Beyond them an allocation
//! would abort the process or the work would run for days, so a typo (`batch_size = 6400000000`)
//! gets a one-line error instead of an out-of-memory abort.

use crate::{Error, Result};

/// Examples per training step.
pub const MAX_BATCH: i64 = 1 << 20;
/// Hidden units, hidden channels or features of one layer.
pub const MAX_WIDTH: i64 = 1 << 16;
/// Blocks (or layers) of one model.
pub const MAX_BLOCKS: usize = 10_000;
/// Height or width of an image, and its channels.
pub const MAX_IMAGE_SIDE: i64 = 8192;
/// Items drawn or evaluated at once: samples, test points.
pub const MAX_ITEMS: i64 = 10_000_000;

/// Checks `1 <= value <= max`, naming `key` (a configuration key or a flag) in the error.
pub fn check(key: &str, value: i64, max: i64) -> Result<()> {
    if value < 1 {
        return Err(Error::config(format!(
            "{key} must be positive, got {value}"
        )));
    }
    if value > max {
        return Err(Error::config(format!(
            "{key} = {value} is beyond what genflow accepts ({max}); it would exhaust memory or time"
        )));
    }
    Ok(())
}
