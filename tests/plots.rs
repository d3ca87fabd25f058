//! The pictures, read back with the `image` crate: sizes, known pixels at known places, the
//! brightest spot of a heat map where the density is, clear errors, atomic writes.

use std::path::{Path, PathBuf};

use genflow::plots::{
    save_curves, save_density_comparison, save_image_grid, save_scatter_histogram, Series,
    SERIES_COLOURS,
};
use genflow::tch::{Device, Kind, Tensor};
use genflow::Error;
use image::{Rgb, RgbImage};

/// Viridis at 0 (zero density / empty cell), 1/2 and 1 (the maximum): its anchors 0, 4 and 8.
const DARK: Rgb<u8> = Rgb([0x44, 0x01, 0x54]);
const MIDDLE: Rgb<u8> = Rgb([0x21, 0x90, 0x8c]);
const BRIGHT: Rgb<u8> = Rgb([0xfd, 0xe7, 0x25]);

fn read(path: &Path) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// No `.tmp` file is left next to a written picture.
fn assert_no_temp_files(dir: &Path) {
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Bounding box `(left, top, width, height)` of the pixels of colour `c` in columns `x0..x1`.
fn bounding_box(img: &RgbImage, c: Rgb<u8>, x0: u32, x1: u32) -> (u32, u32, u32, u32) {
    let hits: Vec<(u32, u32)> = img
        .enumerate_pixels()
        .filter(|(x, _, p)| (x0..x1).contains(x) && **p == c)
        .map(|(x, y, _)| (x, y))
        .collect();
    assert!(
        !hits.is_empty(),
        "no pixel of colour {c:?} in columns {x0}..{x1}"
    );
    let (l, r) = (
        hits.iter().map(|h| h.0).min().unwrap(),
        hits.iter().map(|h| h.0).max().unwrap(),
    );
    let (t, b) = (
        hits.iter().map(|h| h.1).min().unwrap(),
        hits.iter().map(|h| h.1).max().unwrap(),
    );
    (l, t, r - l + 1, b - t + 1)
}

/// Whether some pixel of the band `rows` is dark (text was drawn there).
fn has_text(img: &RgbImage, rows: std::ops::Range<u32>) -> bool {
    img.enumerate_pixels()
        .any(|(_, y, p)| rows.contains(&y) && p.0.iter().all(|&v| v < 100))
}

#[test]
fn image_grid_places_each_image_in_its_cell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    // Image i is a constant colour (i/4, 1 - i/4, 0.5), 5 images of 3 x 6 x 8, 3 per row.
    let colours: Vec<[f64; 3]> = (0..5)
        .map(|i| [i as f64 / 4.0, 1.0 - i as f64 / 4.0, 0.5])
        .collect();
    let flat: Vec<f64> = colours
        .iter()
        .flat_map(|c| c.iter().flat_map(|&v| std::iter::repeat_n(v, 48)))
        .collect();
    let images = Tensor::from_slice(&flat).reshape([5, 3, 6, 8]);
    save_image_grid(&images, 3, &path).unwrap();
    let img = read(&path);
    // 3 columns, 2 rows, 2 px padding; a whole upscale factor f, the smallest giving >= 256 px.
    let f = (img.width() - 2 * 4) / (3 * 8);
    assert_eq!(img.width(), 3 * (8 * f + 2) + 2);
    assert_eq!(img.height(), 2 * (6 * f + 2) + 2);
    assert!(
        img.width() >= 256 && 3 * (8 * (f - 1) + 2) + 2 < 256,
        "width {} with factor {f}",
        img.width()
    );
    let grey = Rgb([128; 3]);
    for (i, c) in colours.iter().enumerate() {
        let (x0, y0) = (
            2 + (i as u32 % 3) * (8 * f + 2),
            2 + (i as u32 / 3) * (6 * f + 2),
        );
        let expected = Rgb(c.map(|v| (v * 255.0).round() as u8));
        for (x, y) in [
            (x0, y0),
            (x0 + 8 * f - 1, y0 + 6 * f - 1),
            (x0 + 4 * f, y0 + 3 * f),
        ] {
            assert_eq!(*img.get_pixel(x, y), expected, "image {i} at ({x}, {y})");
        }
        assert_eq!(
            *img.get_pixel(x0 - 1, y0 - 1),
            grey,
            "padding before image {i}"
        );
        assert_eq!(
            *img.get_pixel(x0 + 8 * f, y0 + 6 * f),
            grey,
            "padding after image {i}"
        );
    }
    // The sixth cell is empty padding.
    assert_eq!(
        *img.get_pixel(2 + 2 * (8 * f + 2) + 4 * f, 2 + (6 * f + 2) + 3 * f),
        grey
    );
    assert_no_temp_files(dir.path());
}

#[test]
fn image_grid_upscales_by_nearest_neighbour_and_clamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.png");
    // One 4 x 4 grey image with pixel (x, y) = (4y + x) / 15, plus out-of-range values and a NaN
    // in the last row; f64 on whatever device is there.
    let mut values: Vec<f64> = (0..16).map(|k| k as f64 / 15.0).collect();
    values[12..].copy_from_slice(&[-3.0, 7.0, f64::NAN, 0.5]);
    let image = Tensor::from_slice(&values)
        .reshape([1, 1, 4, 4])
        .to_device(Device::cuda_if_available());
    save_image_grid(&image, 8, &path).unwrap();
    let img = read(&path);
    // 1 column: factor ceil((256 - 4) / 4) = 63, width 4 * 63 + 4 = 256.
    assert_eq!(img.dimensions(), (256, 256));
    let expected = |k: usize| match k {
        12 | 14 => 0,
        13 => 255,
        _ => (values[k] * 255.0).round() as u8,
    };
    for (x, y, p) in img.enumerate_pixels() {
        let (bx, by) = (
            x.checked_sub(2).map(|v| v / 63),
            y.checked_sub(2).map(|v| v / 63),
        );
        let want = match (bx, by) {
            (Some(bx @ 0..4), Some(by @ 0..4)) => expected((4 * by + bx) as usize),
            _ => 128,
        };
        assert_eq!(*p, Rgb([want; 3]), "pixel ({x}, {y})");
    }
}

#[test]
fn image_grid_rejects_bad_input_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let cpu = |size: &[i64], kind| Tensor::zeros(size, (kind, Device::Cpu));
    for (t, why) in [
        (cpu(&[2, 2, 8, 8], Kind::Float), "2 channels"),
        (cpu(&[8, 8], Kind::Float), "2-D"),
        (cpu(&[0, 1, 8, 8], Kind::Float), "no images"),
        (cpu(&[2, 1, 8, 8], Kind::Uint8), "uint8"),
    ] {
        match save_image_grid(&t, 4, &path) {
            Err(Error::Shape(msg)) => assert!(
                msg.contains("bad.png") && msg.contains("[N, C, H, W]"),
                "{why}: {msg}"
            ),
            other => panic!("{why}: expected a shape error, got {other:?}"),
        }
    }
    let ok = cpu(&[2, 1, 8, 8], Kind::Float);
    assert!(matches!(
        save_image_grid(&ok, 0, &path),
        Err(Error::Config(_))
    ));
    let missing = dir.path().join("no/such/folder/grid.png");
    let err = save_image_grid(&ok, 2, &missing).unwrap_err().to_string();
    assert!(err.contains("no/such/folder/grid.png"), "{err}");
    assert!(!path.exists() && !missing.exists());
}

#[test]
fn density_comparison_is_brightest_where_the_density_and_the_data_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("density.png");
    let (range, resolution) = (4.0, 64);
    // Model: isotropic Gaussian at (2, 2), sd 0.3. Data: 400 points at (-2.03, -1.03) and 100 spread
    // along the diagonal.
    let mut calls = Vec::new();
    let mut log_density = |x: &Tensor| -> genflow::Result<Tensor> {
        calls.push((x.kind(), x.size()));
        let d = x - Tensor::from_slice(&[2.0f32, 2.0]);
        Ok(d.square().sum_dim_intlist(-1, false, Kind::Float) * (-0.5 / 0.09))
    };
    let spread = (0..100).flat_map(|k| [k as f64 / 20.0 - 2.5; 2]);
    let flat: Vec<f64> = std::iter::repeat_n([-2.03, -1.03], 400)
        .flatten()
        .chain(spread)
        .collect();
    let data = Tensor::from_slice(&flat).reshape([500, 2]);
    save_density_comparison(&mut log_density, &data, range, resolution, &path).unwrap();
    assert!(calls
        .iter()
        .all(|(k, s)| *k == Kind::Float && s.len() == 2 && s[1] == 2));
    assert_eq!(calls.iter().map(|(_, s)| s[0]).sum::<i64>(), 64 * 64);
    let img = read(&path);
    let half = img.width() / 2;
    for ((x0, x1), centre, name) in [
        ((0, half), (2.0, 2.0), "model"),
        ((half, img.width()), (-2.0, -1.0), "data"),
    ] {
        // The panel is the box of zero-density pixels; the maximum is drawn in the brightest colour.
        let (left, top, w, h) = bounding_box(&img, DARK, x0, x1);
        assert_eq!((w, h), (384, 384), "{name} panel size");
        let (bl, bt, bw, bh) = bounding_box(&img, BRIGHT, x0, x1);
        let to_plane = |px: f64, py: f64| {
            (
                -range + 2.0 * range * px / w as f64,
                range - 2.0 * range * py / h as f64,
            )
        };
        let (x, y) = to_plane(
            (bl - left) as f64 + bw as f64 / 2.0,
            (bt - top) as f64 + bh as f64 / 2.0,
        );
        // Within one grid cell (8 / 64 = 0.125).
        assert!(
            (x - centre.0).abs() < 0.125 && (y - centre.1).abs() < 0.125,
            "{name}: brightest at ({x}, {y})"
        );
        assert!(has_text(&img, 0..top), "{name}: no title drawn");
    }
    assert_no_temp_files(dir.path());
}

#[test]
fn density_comparison_reports_bad_models_and_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.png");
    let data = Tensor::zeros([10, 2], (Kind::Float, Device::Cpu));
    let run = |f: &mut dyn FnMut(&Tensor) -> Out, data: &Tensor, range: f64, res: usize| {
        save_density_comparison(f, data, range, res, &path)
    };
    type Out = genflow::Result<Tensor>;
    let fine = |x: &Tensor| -> Out { Ok(x.sum_dim_intlist(-1, false, Kind::Float)) };
    let wrong_count = |x: &Tensor| -> Out { Ok(x.shallow_clone()) };
    let nan = |x: &Tensor| -> Out { Ok(x.sum_dim_intlist(-1, false, Kind::Float) * f64::NAN) };
    let failing = |_: &Tensor| -> Out { Err(Error::config("model exploded")) };
    assert!(
        matches!(run(&mut { wrong_count }, &data, 4.0, 16), Err(Error::Shape(m)) if m.contains("one value per point"))
    );
    assert!(
        matches!(run(&mut { nan }, &data, 4.0, 16), Err(Error::NonFinite(m)) if m.contains("d.png"))
    );
    assert!(run(&mut { failing }, &data, 4.0, 16)
        .unwrap_err()
        .to_string()
        .contains("model exploded"));
    let bad_data = Tensor::zeros([10, 3], (Kind::Float, Device::Cpu));
    assert!(
        matches!(run(&mut { fine }, &bad_data, 4.0, 16), Err(Error::Shape(m)) if m.contains("[n, 2]"))
    );
    assert!(matches!(
        run(&mut { fine }, &data, 0.0, 16),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        run(&mut { fine }, &data, f64::NAN, 16),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        run(&mut { fine }, &data, 4.0, 1),
        Err(Error::Config(_))
    ));
    assert!(!path.exists());
    run(&mut { fine }, &data, 4.0, 16).unwrap();
    assert!(path.exists());
}

#[test]
fn scatter_histogram_colours_cells_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.png");
    // 128 bins over [-4, 4]: cell width 1/16. Two points in cell (col 80, row 80) at (1.03, -1.03),
    // one in (col 16, row 32) at (-2.97, 1.97), two outside the window and one NaN (left out).
    let pts = [
        1.03,
        -1.03,
        1.04,
        -1.05,
        -2.97,
        1.97,
        9.0,
        0.0,
        0.0,
        -4.5,
        f64::NAN,
        0.0,
    ];
    save_scatter_histogram(&Tensor::from_slice(&pts).reshape([6, 2]), 4.0, &path).unwrap();
    let img = read(&path);
    let (left, top, w, h) = bounding_box(&img, DARK, 0, img.width());
    assert_eq!((w, h), (384, 384));
    let f = w / 128;
    let block = |col: u32, row: u32| {
        (
            left + col * f..left + (col + 1) * f,
            top + row * f..top + (row + 1) * f,
        )
    };
    let mut seen = (0, 0);
    for (x, y, p) in img
        .enumerate_pixels()
        .filter(|(x, y, _)| (left..left + w).contains(x) && (top..top + h).contains(y))
    {
        let (in_a, in_b) = (block(80, 80), block(16, 32));
        if in_a.0.contains(&x) && in_a.1.contains(&y) {
            assert_eq!(*p, BRIGHT, "({x}, {y})");
            seen.0 += 1;
        } else if in_b.0.contains(&x) && in_b.1.contains(&y) {
            assert_eq!(*p, MIDDLE, "({x}, {y})");
            seen.1 += 1;
        } else {
            assert_eq!(*p, DARK, "({x}, {y})");
        }
    }
    assert_eq!(seen, (f * f, f * f));
    assert!(has_text(&img, 0..top), "no title drawn");
}

#[test]
fn curves_draw_each_series_in_its_colour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let series = vec![
        Series {
            name: "train".into(),
            points: (0..50)
                .map(|i| (i as f64, 3.0 / (1.0 + i as f64)))
                .collect(),
        },
        Series {
            name: "test".into(),
            points: vec![(0.0, 3.5), (f64::NAN, 1.0), (25.0, 1.0), (49.0, 0.5)],
        },
        Series {
            name: "final".into(),
            points: vec![(49.0, 0.4)],
        },
    ];
    save_curves("loss", "epoch", "nats", &series, &path).unwrap();
    let img = read(&path);
    assert_eq!(img.dimensions(), (900, 560));
    for (i, s) in series.iter().enumerate() {
        let c = Rgb(SERIES_COLOURS[i]);
        let count = img.pixels().filter(|p| **p == c).count();
        // The legend's 24 x 3 sample plus a line across the plot, or a dot (r = 3) for one point.
        let least = if s.points.len() > 1 { 300 } else { 90 };
        assert!(
            count >= least,
            "series {} has {count} pixels of its colour",
            s.name
        );
    }
    assert!(has_text(&img, 0..50), "no title drawn");
    assert_no_temp_files(dir.path());
    // Overwriting works and stays atomic.
    save_curves("loss", "epoch", "nats", &series[..1], &path).unwrap();
    assert_eq!(read(&path).dimensions(), (900, 560));
}

#[test]
fn curves_without_finite_points_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    for series in [
        vec![],
        vec![Series {
            name: "nan".into(),
            points: vec![(0.0, f64::NAN)],
        }],
    ] {
        let err = save_curves("t", "x", "y", &series, &path).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("empty.png")),
            "{err}"
        );
    }
    assert!(!path.exists());
}

#[test]
fn panels_get_their_own_axes_and_a_log_axis_where_values_span_decades() {
    use genflow::plots::{save_panels, spans_decades, Panel};
    assert!(spans_decades([3.0, 0.02, 1.0].into_iter()));
    assert!(
        !spans_decades([3.0, 0.05, 1.0].into_iter()),
        "under two decades"
    );
    assert!(
        !spans_decades([3.0, 0.0, 1e-9].into_iter()),
        "zero has no logarithm"
    );
    assert!(
        spans_decades([1.0, f64::NAN, 100.0].into_iter()),
        "non-finite values are ignored"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.png");
    let panel = |name: &str, f: fn(f64) -> f64| Panel {
        title: name.into(),
        y_label: name.into(),
        series: vec![Series {
            name: name.into(),
            points: (0..40).map(|i| (i as f64, f(i as f64))).collect(),
        }],
    };
    let panels = [
        panel("loss", |t| 10f64.powf(-t / 10.0)),
        panel("test_accuracy", |t| 0.5 + t / 100.0),
        panel("lr", |t| 1e-3 * (1.0 - t / 40.0)),
    ];
    save_panels("step", &panels, &path).unwrap();
    let img = read(&path);
    // two panels a row, 600 x 420 each
    assert_eq!(img.dimensions(), (1200, 840));
    // each panel's line is drawn in its own cell (the first colour of the cycle)
    let c = Rgb(SERIES_COLOURS[0]);
    for (x0, y0) in [(0, 0), (600, 0), (0, 420)] {
        let count = (x0..x0 + 600)
            .flat_map(|x| (y0..y0 + 420).map(move |y| (x, y)))
            .filter(|&(x, y)| *img.get_pixel(x, y) == c)
            .count();
        assert!(
            count >= 300,
            "panel at ({x0}, {y0}) has {count} line pixels"
        );
    }
    // on the log axis the loss, a straight line in log space, is straight: its pixels' heights
    // fall linearly with the step (a linear axis would bend them into an exponential)
    let line: Vec<(f64, f64)> = (0..600u32)
        .filter_map(|x| {
            let ys: Vec<u32> = (0..420).filter(|&y| *img.get_pixel(x, y) == c).collect();
            (!ys.is_empty()).then(|| (x as f64, ys.iter().sum::<u32>() as f64 / ys.len() as f64))
        })
        .collect();
    let n = line.len() as f64;
    let (mx, my) = (
        line.iter().map(|p| p.0).sum::<f64>() / n,
        line.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = line.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let (vx, vy): (f64, f64) = (
        line.iter().map(|p| (p.0 - mx).powi(2)).sum(),
        line.iter().map(|p| (p.1 - my).powi(2)).sum(),
    );
    let r = cov / (vx * vy).sqrt();
    assert!(r > 0.99, "log-axis line not straight: correlation {r}");
    assert_no_temp_files(dir.path());
}

#[test]
fn density_panels_have_axes_and_a_colour_bar() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.png");
    let pts = Tensor::from_slice(&[1.0f64, 1.0, -2.0, 0.5, 0.1, 0.1]).reshape([3, 2]);
    save_scatter_histogram(&pts, 4.0, &path).unwrap();
    let img = read(&path);
    let (left, top, w, h) = bounding_box(&img, DARK, 0, img.width());
    // the colour bar right of the panel: 64 colours from dark to bright, none of them exactly the
    // panel's extremes
    let x = left + w + 12 + 8;
    let colours: std::collections::BTreeSet<[u8; 3]> =
        (top..top + h).map(|y| img.get_pixel(x, y).0).collect();
    assert!(colours.len() >= 60, "{} colours in the bar", colours.len());
    assert!(!colours.contains(&DARK.0) && !colours.contains(&BRIGHT.0));
    // tick labels left of and under the panel
    assert!(
        has_text(&img, top + h + 2..top + h + 28),
        "no x-axis labels"
    );
    let left_margin = RgbImage::from_fn(left - 8, h, |x, y| *img.get_pixel(x, top + y));
    assert!(has_text(&left_margin, 0..h), "no y-axis labels");
}
