//! PNG pictures for people to look at: image grids, 2-D density heat maps and histograms, and
//! line plots with a legend.
//!
//! Every picture is written atomically (to `path` + `.tmp`, then renamed), so a crash never
//! leaves a broken file; every error names the path. Heat maps and histograms share one grid to
//! image function and one colour map (viridis); text uses the bundled DejaVu Sans font.
//!
//! ```
//! use genflow::plots::{save_curves, save_image_grid, Series};
//! use genflow::tch::{Kind, Tensor};
//!
//! let dir = std::env::temp_dir().join(format!("genflow-plots-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! // 16 grey-level ramps of 8x8 pixels, 4 per row.
//! let images = Tensor::linspace(0.0, 1.0, 64, (Kind::Float, genflow::tch::Device::Cpu))
//!     .view([1, 1, 8, 8])
//!     .repeat([16, 1, 1, 1]);
//! save_image_grid(&images, 4, &dir.join("grid.png"))?;
//! let loss = Series { name: "train".into(), points: vec![(0.0, 3.0), (1.0, 2.0), (2.0, 1.5)] };
//! save_curves("loss", "epoch", "nats", &[loss], &dir.join("loss.png"))?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), genflow::Error>(())
//! ```

mod curves;
mod density;
mod grid;
mod raster;

pub use curves::{save_curves, save_panels, spans_decades, Panel, Series, SERIES_COLOURS};
pub use density::{save_density_comparison, save_scatter_histogram};
pub use grid::{save_image_grid, GRID_PAD, GRID_PAD_GREY};
