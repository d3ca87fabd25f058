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

/// A `side x side` grid of non-negative values (row-major, row 0 at the top) as a heat-map panel:
/// each value divided by the largest one and coloured by [`colour_map`], upscaled; the colour bar
/// reads `unit` times the relative value (the largest value shown as `unit`), naming `quantity`.
pub(crate) fn heat_panel<'a>(
    title: &'a str,
    values: &[f64],
    side: usize,
    unit: f64,
    quantity: &'a str,
) -> HeatPanel<'a> {
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
    HeatPanel {
        title,
        image: upscale(&img, PANEL_MIN_PX.div_ceil(side32.max(1))),
        max: max * unit,
        quantity,
    }
}

/// `img` enlarged `factor` times by nearest neighbour: every pixel becomes a `factor x factor` block.
pub(crate) fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    let factor = factor.max(1);
    RgbImage::from_fn(img.width() * factor, img.height() * factor, |x, y| {
        *img.get_pixel(x / factor, y / factor)
    })
}

/// A heat map to draw: its title, its picture (viridis, dark = 0, yellow = `max`), the value its
/// brightest colour stands for and what that value is.
pub(crate) struct HeatPanel<'a> {
    pub title: &'a str,
    pub image: RgbImage,
    pub max: f64,
    pub quantity: &'a str,
}

/// Room left of a panel for the y-axis labels.
const Y_AXIS: u32 = 46;
/// Room under a panel for the x-axis labels.
const X_AXIS: u32 = 30;
/// Gap between a panel and its colour bar, the bar's width, and room for the bar's labels.
const BAR_GAP: u32 = 12;
const BAR_WIDTH: u32 = 16;
const BAR_LABELS: u32 = 64;
/// Colours in a colour bar.
const BAR_STEPS: u32 = 64;
/// Ticks per axis: at `-range`, `-range / 2`, 0, `range / 2`, `range`.
const TICKS: i32 = 5;

/// Writes `panels` side by side on white as a PNG at `path`: each under its centred title, with
/// x and y axes over `[-range, range]` (ticks at the ends, the halves and 0) and a colour bar from 0
/// to the panel's `max`. The bar's colours are those of the bin centres `(i + 1/2) / 64`, so the
/// extreme colours of the map (exactly 0 and exactly the maximum) appear in the panel only. All
/// panels must have the size of the first one.
pub(crate) fn save_heat_panels(panels: &[HeatPanel], range: f64, path: &Path) -> Result<()> {
    let (w, h) = panels.first().map_or((0, 0), |p| p.image.dimensions());
    let cell = Y_AXIS + w + BAR_GAP + BAR_WIDTH + BAR_LABELS + MARGIN;
    let count = panels.len() as u32;
    let mut canvas = RgbImage::from_pixel(
        MARGIN + count * cell,
        TITLE_BAND + h + X_AXIS + MARGIN,
        Rgb([255; 3]),
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = MARGIN + i as u32 * cell + Y_AXIS;
        image::imageops::replace(
            &mut canvas,
            &panel.image,
            i64::from(left),
            i64::from(TITLE_BAND),
        );
        let bar_left = left + w + BAR_GAP;
        for y in 0..h {
            let v = ((h - 1 - y) * BAR_STEPS / h) as f64 + 0.5;
            let colour = colour_map(v / f64::from(BAR_STEPS));
            for x in bar_left..bar_left + BAR_WIDTH {
                canvas.put_pixel(x, TITLE_BAND + y, colour);
            }
        }
    }
    let size = canvas.dimensions();
    {
        ensure_font()?;
        let err = |e| drawing_error(path, e);
        let root = BitMapBackend::with_buffer(&mut canvas, size).into_drawing_area();
        let text = |anchor: Pos| TextStyle::from((FONT, 13).into_font()).pos(anchor);
        let title =
            TextStyle::from((FONT, 22).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        let (top, bottom) = (TITLE_BAND as i32, (TITLE_BAND + h) as i32);
        for (i, panel) in panels.iter().enumerate() {
            let left = (MARGIN + i as u32 * cell + Y_AXIS) as i32;
            let right = left + w as i32;
            let centre = (left + right) / 2;
            root.draw(&Text::new(
                panel.title,
                (centre, (TITLE_BAND / 2) as i32),
                &title,
            ))
            .map_err(err)?;
            for k in 0..TICKS {
                let value = -range + 2.0 * range * f64::from(k) / f64::from(TICKS - 1);
                let label = format!("{value}");
                let x = left + (w as i32 - 1) * k / (TICKS - 1);
                let y = bottom - 1 - (h as i32 - 1) * k / (TICKS - 1);
                root.draw(&PathElement::new(vec![(x, bottom), (x, bottom + 5)], BLACK))
                    .map_err(err)?;
                root.draw(&Text::new(
                    label.clone(),
                    (x, bottom + 8),
                    text(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(err)?;
                root.draw(&PathElement::new(vec![(left - 5, y), (left - 1, y)], BLACK))
                    .map_err(err)?;
                root.draw(&Text::new(
                    label,
                    (left - 8, y),
                    text(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(err)?;
            }
            let bar_right = right + (BAR_GAP + BAR_WIDTH) as i32;
            for (fraction, anchor) in [(0.0, VPos::Bottom), (0.5, VPos::Center), (1.0, VPos::Top)] {
                let y = bottom - ((h as f64 - 1.0) * fraction) as i32 - 1;
                let label = format!("{:.3}", panel.max * fraction);
                root.draw(&Text::new(
                    label,
                    (bar_right + 4, y),
                    text(Pos::new(HPos::Left, anchor)),
                ))
                .map_err(err)?;
            }
            let caption = text(Pos::new(HPos::Left, VPos::Bottom));
            root.draw(&Text::new(
                panel.quantity,
                (right + BAR_GAP as i32, top - 4),
                &caption,
            ))
            .map_err(err)?;
        }
        root.present().map_err(err)?;
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
