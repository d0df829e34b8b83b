//! A recipe and its `--set` overrides: the YAML text up to the first NUL byte, then one
//! override per following NUL-separated piece, parsed and validated as `run` does.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dpo_lora::recipe::Recipe;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let yaml = parts.next().unwrap_or("");
    let sets: Vec<String> = parts.map(str::to_string).collect();
    if let Ok(r) = Recipe::parse(yaml, std::path::Path::new("fuzz.yaml"), &sets) {
        // What `run` saves and a resume reads back must parse again to the same recipe.
        let again = Recipe::parse(&r.to_yaml(), std::path::Path::new("saved.yaml"), &[])
            .unwrap_or_else(|e| panic!("the saved recipe does not parse: {e}\n{}", r.to_yaml()));
        assert_eq!(
            again.to_yaml(),
            r.to_yaml(),
            "the saved recipe changed on reading"
        );
    }
});
