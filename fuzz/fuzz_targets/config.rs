//! The TOML configuration reader: `ConfigDocument::parse`, `--set` overrides
//! (`ConfigDocument::with_overrides`) and `JobConfig::from_document` (decoding and validation).
//! A configuration that is accepted must also survive `JobConfig::to_toml` and read back the same,
//! since that is what a checkpoint stores.
//!
//! Input: when the first byte (mod 32) names a preset (its index in `genflow::config::PRESETS`),
//! the preset's text with the rest of the input as `--set` overrides, one per line; otherwise the
//! rest is a TOML document, then (after the first NUL byte, if any) overrides, one per line.
#![no_main]

mod common;

use genflow::config::{ConfigDocument, PRESETS};
use genflow::tasks::JobConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Configuration files are read as UTF-8 text and `--set` values come from the command line.
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (doc, overrides) = match PRESETS.get(usize::from(mode % 32)) {
        Some(preset) => (
            ConfigDocument::parse(&format!("preset {}", preset.name), preset.toml),
            rest,
        ),
        None => {
            let (text, overrides) = rest.split_once('\0').unwrap_or((rest, ""));
            (ConfigDocument::parse("fuzz.toml", text), overrides)
        }
    };
    let Some(doc) = common::check(doc) else {
        return;
    };
    let overrides: Vec<String> = overrides.lines().map(str::to_string).collect();
    let Some(doc) = common::check(doc.with_overrides(&overrides)) else {
        return;
    };
    let Some(job) = common::check(JobConfig::from_document(&doc)) else {
        return;
    };
    let text = job
        .to_toml()
        .unwrap_or_else(|e| panic!("an accepted configuration cannot be written: {e}"));
    let again = ConfigDocument::parse("written.toml", &text)
        .and_then(|doc| JobConfig::from_document(&doc))
        .unwrap_or_else(|e| panic!("a written configuration cannot be read back: {e}\n{text}"));
    let text_again = again.to_toml().expect("cannot write it again");
    assert_eq!(text, text_again, "the configuration changed on a round trip");
});
