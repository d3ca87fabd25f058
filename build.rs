//! Adds libtorch's library folder to the rpath of every genflow binary, test and example, so that they
//! run without `LD_LIBRARY_PATH`. torch-sys (`links = "tch"`) reports the folder it linked against.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
