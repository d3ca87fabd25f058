//! Shared test helpers: autograd Jacobians and finite differences in f64.
#![allow(dead_code)]

use tch::{Kind, Tensor};

/// The Jacobian `[d_out, d_in]` of `f` at a single sample `x` (shape `[1, ...]`) by autograd rows.
pub fn autograd_jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let y = f(&x).reshape([-1]);
    let rows: Vec<Tensor> = (0..y.size()[0])
        .map(|i| {
            let g = Tensor::run_backward(&[y.get(i)], &[&x], true, false);
            g[0].reshape([-1])
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// `ln |det J|` of a square matrix.
pub fn logabsdet(j: &Tensor) -> f64 {
    let (_s, l) = Tensor::linalg_slogdet(j);
    l.double_value(&[])
}

/// Central finite difference of the scalar `f` with respect to element `index` (flat) of `param`.
pub fn finite_difference(f: &mut dyn FnMut() -> f64, param: &Tensor, index: i64, h: f64) -> f64 {
    let flat = param.view([-1]);
    let original = tch::no_grad(|| flat.get(index).double_value(&[]));
    let set = |v: f64| {
        tch::no_grad(|| {
            let _ = flat.get(index).fill_(v);
        })
    };
    set(original + h);
    let plus = f();
    set(original - h);
    let minus = f();
    set(original);
    (plus - minus) / (2.0 * h)
}

/// A seeded f64 tensor of normal entries.
pub fn randn(shape: &[i64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Double, tch::Device::Cpu))
}

/// libtorch's random generator is global: tests that seed it hold this lock so that tests running
/// in parallel threads do not draw from it in between.
pub fn seed_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a small synthetic copy of data set `name` into `dir/<name>/` in its standard file
/// format (IDX for MNIST and Fashion-MNIST, gzipped CSV for digits, binary batches for CIFAR-10,
/// PNGs of mixed sizes for an image folder):
/// `n_train` training and `n_test` test images whose pixels depend on the label, so that the
/// readers, models and classifiers have something to learn.
pub fn write_synthetic_data(dir: &std::path::Path, name: &str, n_train: usize, n_test: usize) {
    use std::io::Write;
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let pixel = |i: usize, p: usize, label: usize| -> u8 {
        if (p / 7 + p % 5 + label + i % 3).is_multiple_of(4) {
            230
        } else {
            (p * 7 % 40) as u8
        }
    };
    match name {
        "mnist" | "fashion-mnist" => {
            let idx = |n: usize, dims: &[u32], data: Vec<u8>| {
                let mut out = vec![0u8, 0, 8, dims.len() as u8];
                for d in dims {
                    out.extend(d.to_be_bytes());
                }
                assert_eq!(data.len(), n * dims[1..].iter().product::<u32>() as usize);
                out.extend(data);
                out
            };
            for (split, n) in [("train", n_train), ("t10k", n_test)] {
                let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
                let images: Vec<u8> = (0..n)
                    .flat_map(|i| (0..784).map(move |p| pixel(i, p, i % 10)))
                    .collect();
                std::fs::write(
                    folder.join(format!("{split}-images-idx3-ubyte")),
                    idx(n, &[n as u32, 28, 28], images),
                )
                .unwrap();
                std::fs::write(
                    folder.join(format!("{split}-labels-idx1-ubyte")),
                    idx(n, &[n as u32], labels),
                )
                .unwrap();
            }
        }
        "digits" => {
            let file = std::fs::File::create(folder.join("digits.csv.gz")).unwrap();
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            // the digits split is fixed: the first 1500 rows train, the rest test
            for i in 0..1500 + n_test {
                let label = i % 10;
                let pixels: Vec<String> = (0..64)
                    .map(|p| (pixel(i, p, label) / 16).to_string())
                    .collect();
                writeln!(gz, "{},{label}", pixels.join(",")).unwrap();
            }
            gz.finish().unwrap();
        }
        "cifar10" => {
            let batch = |n: usize, offset: usize| -> Vec<u8> {
                (0..n)
                    .flat_map(|i| {
                        let label = (i + offset) % 10;
                        std::iter::once(label as u8)
                            .chain((0..3072).map(move |p| pixel(i, p, label)))
                    })
                    .collect()
            };
            for k in 1..=5 {
                let n = n_train.div_ceil(5);
                std::fs::write(folder.join(format!("data_batch_{k}.bin")), batch(n, k)).unwrap();
            }
            std::fs::write(folder.join("test_batch.bin"), batch(n_test, 0)).unwrap();
        }
        "folder" => {
            // small RGB PNGs of two sizes (a folder data set crops and resizes them)
            for i in 0..n_train + n_test {
                let (w, h) = if i % 2 == 0 { (12, 10) } else { (9, 9) };
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let v = pixel(i, (y * w + x) as usize, i % 10);
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(folder.join(format!("img{i:03}.png"))).unwrap();
            }
        }
        other => panic!("no synthetic data for {other}"),
    }
}

/// 1530 rows of 8x8 "digits" (levels 0-16) in `dir/digits/digits.csv.gz`: 1500 train, 30 test;
/// images are bright where `(row + col + label) % 3 == 0`.
pub fn write_digits(dir: &std::path::Path) {
    use std::io::Write;
    std::fs::create_dir_all(dir.join("digits")).unwrap();
    let file = std::fs::File::create(dir.join("digits/digits.csv.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for i in 0..1530usize {
        let label = i % 10;
        let pixels: Vec<String> = (0..64)
            .map(|p| {
                if (p / 8 + p % 8 + label).is_multiple_of(3) {
                    "16"
                } else {
                    "1"
                }
                .to_string()
            })
            .collect();
        writeln!(gz, "{},{label}", pixels.join(",")).unwrap();
    }
    gz.finish().unwrap();
}

/// Runs the genflow binary on the CPU with one thread.
pub fn genflow(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_genflow"))
        .env("OMP_NUM_THREADS", "1")
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .output()
        .expect("run genflow")
}

/// The standard output of a command that must succeed.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "genflow failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one-line error of a failing command.
pub fn error_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "error should be one line: {err}");
    err
}
