//! The pieces every picture shares: the colour map, value grid to image, nearest-neighbour
//! upscaling, titled panels, the bundled font and the atomic PNG writer.

use std::path::Path;
use std::sync::OnceLock;

use image::{ImageFormat, Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::{Error, Result};

/// Font family under which the bundled DejaVu Sans is registered with plotters.
pub(crate) const FONT: &str = "sans-serif";
/// Height in pixels of the band that holds a panel's title.
const TITLE_BAND: u32 = 40;
/// Gap in pixels around and between panels.
const MARGIN: u32 = 10;
/// Panels are upscaled by whole factors until they are at least this wide.
pub(crate) const PANEL_MIN_PX: u32 = 384;

/// Viridis (matplotlib's default colour map; van der Walt and Smith, 2015) at 9 evenly spaced
/// points of `[0, 1]`, as R's `viridisLite::viridis(9)` lists it.
const VIRIDIS: [[u8; 3]; 9] = [
    [0x44, 0x01, 0x54],
    [0x47, 0x2d, 0x7b],
    [0x3b, 0x52, 0x8b],
    [0x2c, 0x72, 0x8e],
    [0x21, 0x90, 0x8c],
    [0x27, 0xad, 0x81],
    [0x5d, 0xc8, 0x63],
    [0xaa, 0xdc, 0x32],
    [0xfd, 0xe7, 0x25],
];

/// The viridis colour of `v in [0, 1]` (clamped; NaN is 0), linear between the 9 anchors.
pub(crate) fn colour_map(v: f64) -> Rgb<u8> {
    let pos = if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64
    };
    let lower = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let frac = pos - lower as f64;
    let (a, b) = (VIRIDIS[lower], VIRIDIS[lower + 1]);
    Rgb(std::array::from_fn(|i| {
        (f64::from(a[i]) + frac * (f64::from(b[i]) - f64::from(a[i]))).round() as u8
    }))
}

/// A `side x side` grid of non-negative values (row-major, row 0 at the top) as a colour image,
/// each value divided by the largest one and coloured by [`colour_map`], upscaled to a panel.
pub(crate) fn grid_to_image(values: &[f64], side: usize) -> RgbImage {
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
    let side32 = side as u32;
    let img = RgbImage::from_fn(side32, side32, |x, y| {
        colour_map(values[y as usize * side + x as usize] * scale)
    });
    upscale(&img, PANEL_MIN_PX.div_ceil(side32.max(1)))
}

/// `img` enlarged `factor` times by nearest neighbour: every pixel becomes a `factor x factor` block.
pub(crate) fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    RgbImage::from_fn(img.width() * factor, img.height() * factor, |x, y| {
        *img.get_pixel(x / factor, y / factor)
    })
}

/// Writes `panels` side by side on white, each under its centred title, as a PNG at `path`.
/// All panels must have the size of the first one.
pub(crate) fn save_titled_panels(panels: &[(&str, RgbImage)], path: &Path) -> Result<()> {
    let (w, h) = panels.first().map_or((0, 0), |(_, p)| p.dimensions());
    let count = panels.len() as u32;
    let mut canvas = RgbImage::from_pixel(
        count * (w + MARGIN) + MARGIN,
        TITLE_BAND + h + MARGIN,
        Rgb([255; 3]),
    );
    for (i, (_, panel)) in panels.iter().enumerate() {
        let left = MARGIN + i as u32 * (w + MARGIN);
        image::imageops::replace(&mut canvas, panel, i64::from(left), i64::from(TITLE_BAND));
    }
    let size = canvas.dimensions();
    {
        ensure_font()?;
        let root = BitMapBackend::with_buffer(&mut canvas, size).into_drawing_area();
        let style =
            TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for (i, (title, _)) in panels.iter().enumerate() {
            let centre = MARGIN + i as u32 * (w + MARGIN) + w / 2;
            let anchor = (centre as i32, (TITLE_BAND / 2) as i32);
            root.draw(&Text::new(*title, anchor, &style))
                .map_err(|e| drawing_error(path, e))?;
        }
        root.present().map_err(|e| drawing_error(path, e))?;
    }
    write_png(&canvas, path)
}

/// Registers the bundled DejaVu Sans as plotters' [`FONT`] (once per process).
pub(crate) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "the bundled DejaVu Sans font could not be loaded by plotters",
        ))
    }
}

/// An error while drawing the picture for `path`.
pub(crate) fn drawing_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("cannot draw the picture: {e}"))
}

/// Writes `img` as a PNG at `path` atomically ([`crate::fs::write_atomic`]): a crash never leaves
/// a truncated picture behind.
pub(crate) fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| Error::file(path, format!("cannot encode the PNG: {e}")))?;
    crate::fs::write_atomic(path, bytes.get_ref())
}
