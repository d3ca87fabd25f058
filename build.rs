//! 1. Adds libtorch's library folder to the rpath of every genflow binary, test and example, so that
//!    they run without `LD_LIBRARY_PATH`. torch-sys (`links = "tch"`) reports the folder it linked
//!    against.
//! 2. Compiles the C++ shim over PyTorch's c10d (`cpp/`, used by `genflow::distributed`) against
//!    the same libtorch: its headers are `$LIBTORCH_INCLUDE`, else `$LIBTORCH/include`, else the
//!    `include` folder next to torch-sys's library folder. The wheel has no Gloo headers; `cpp/gloo/`
//!    declares the few Gloo names that c10d's headers mention.
//! 3. Adds the NCCL backend (`cpp/c10d_nccl.cpp`) when the CUDA headers it needs are found next to
//!    the wheel (`nvidia/cu*/include` with `crt/` and CCCL's `nv/target`, which
//!    `GENFLOW_NCCL=1 scripts/with-libtorch` installs into `genflow-cuda-headers/`), or in
//!    `$GENFLOW_CUDA_INCLUDE` (folders separated by `:`). `GENFLOW_NCCL=0` leaves it out,
//!    `GENFLOW_NCCL=1` makes missing headers an error.
//!
//! The build script reruns only when the files under `cpp/` or these variables change.
use std::env;
use std::path::{Path, PathBuf};

const SHIM_FILES: &[&str] = &[
    "cpp/c10d_shim.h",
    "cpp/c10d_internal.hpp",
    "cpp/c10d_shim.cpp",
    "cpp/c10d_nccl.cpp",
    "cpp/gloo/declarations.h",
    "cpp/gloo/algorithm.h",
    "cpp/gloo/context.h",
    "cpp/gloo/common/error.h",
    "cpp/gloo/rendezvous/store.h",
    "cpp/gloo/transport/device.h",
];

fn env_rerun(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok().filter(|v| !v.is_empty())
}

/// libtorch's include folder, found the way torch-sys finds libtorch.
fn libtorch_include(lib: Option<&str>) -> Result<PathBuf, String> {
    if let Some(inc) = env_rerun("LIBTORCH_INCLUDE") {
        return Ok(PathBuf::from(inc.split(',').next().unwrap_or(&inc)));
    }
    if let Some(root) = env_rerun("LIBTORCH") {
        return Ok(Path::new(&root).join("include"));
    }
    if let Some(lib) = lib {
        return Ok(Path::new(lib).join("..").join("include"));
    }
    Err("cannot find libtorch's headers: set LIBTORCH (scripts/with-libtorch does)".into())
}

/// The include folders the NCCL translation unit needs, when all are found.
fn nccl_includes(torch_root: &Path) -> Result<Vec<PathBuf>, String> {
    let site = torch_root.join("..");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(extra) = env_rerun("GENFLOW_CUDA_INCLUDE") {
        roots.extend(env::split_paths(&extra));
    }
    for base in [site.clone(), site.join("genflow-cuda-headers")] {
        if let Ok(entries) = std::fs::read_dir(base.join("nvidia")) {
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("cu"))
                })
                .map(|p| p.join("include"))
                .collect();
            dirs.sort();
            roots.extend(dirs);
        }
    }
    let find = |rel: &str| roots.iter().find(|r| r.join(rel).is_file()).cloned();
    let runtime = find("cuda_runtime.h").ok_or("cuda_runtime.h")?;
    let crt = find("crt/host_config.h").ok_or("crt/host_config.h (pip: nvidia-cuda-crt)")?;
    // CCCL (libcu++'s nv/target, cuda/std): in the include folder itself or its cccl/ subfolder.
    let cccl = roots
        .iter()
        .flat_map(|r| [r.clone(), r.join("cccl")])
        .find(|d| d.join("nv/target").is_file())
        .ok_or("nv/target (pip: nvidia-cuda-cccl)")?;
    let nccl = site.join("nvidia").join("nccl").join("include");
    if !nccl.join("nccl.h").is_file() {
        return Err("nccl.h (pip: nvidia-nccl)".into());
    }
    let mut dirs = vec![runtime, crt, cccl.clone(), nccl];
    if cccl.join("cccl").is_dir() {
        dirs.push(cccl.join("cccl"));
    }
    dirs.dedup();
    Ok(dirs)
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    for f in SHIM_FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let include = match libtorch_include(lib.as_deref()) {
        Ok(inc) => inc,
        Err(msg) => panic!("{msg}"),
    };
    let torch_root = include.join("..");

    let nccl_wanted = env_rerun("GENFLOW_NCCL");
    let nccl = match nccl_wanted.as_deref() {
        Some("0") => None,
        want => match nccl_includes(&torch_root) {
            Ok(dirs) => Some(dirs),
            Err(missing) if want == Some("1") => panic!(
                "GENFLOW_NCCL=1 but the NCCL backend's headers are incomplete: {missing} not found; \
                 run the build through `GENFLOW_NCCL=1 scripts/with-libtorch`, which installs them"
            ),
            Err(_) => None,
        },
    };

    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++20")
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .define("USE_C10D_GLOO", None)
            .include("cpp")
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .warnings(false)
            .extra_warnings(false);
        if nccl.is_some() {
            b.define("GENFLOW_WITH_NCCL", None);
        }
        b
    };
    // One archive: the Gloo translation unit, plus the NCCL one (its own defines and headers).
    let mut shim = base();
    shim.file("cpp/c10d_shim.cpp");
    if let Some(dirs) = &nccl {
        let mut unit = base();
        unit.file("cpp/c10d_nccl.cpp")
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None);
        for d in dirs {
            unit.include(d);
        }
        shim.objects(unit.compile_intermediates());
    }
    shim.compile("genflow_c10d");

    // torch-sys links these too; naming them here keeps them after the shim on the link line.
    // (torch-sys's search path reaches every dependent; cc adds the C++ runtime.)
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
