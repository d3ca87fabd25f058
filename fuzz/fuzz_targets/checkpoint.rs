//! The checkpoint loader: `genflow::train::checkpoint::load` (which reads the file with
//! `genflow::data::tensor_file::load`) and `JobConfig::from_checkpoint` on the configuration it
//! stores (format 1 configurations are upgraded first). The input is the `.safetensors` file.
#![no_main]

mod common;

use genflow::data::tensor_file;
use genflow::tasks::JobConfig;
use genflow::train::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let path = common::write("checkpoint.safetensors", data);
    let loaded = common::check(tensor_file::load(&path)).is_some();
    let Some((tensors, meta)) = common::check(checkpoint::load(&path)) else {
        return;
    };
    assert!(loaded, "checkpoint::load accepted what tensor_file::load refused");
    // Every element takes at least a byte of the file.
    for (name, t) in &tensors {
        assert!(t.numel() <= data.len(), "tensor {name:?} of {:?}", t.size());
    }
    common::check(JobConfig::from_checkpoint(&meta, &path.display().to_string()));
});
