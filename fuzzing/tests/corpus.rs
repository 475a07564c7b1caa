//! Every input of the seed corpus (`fuzz/corpus/<target>/`) and every crash the fuzzers
//! found (`fuzzing/regressions/<target>/`, kept after the fix) through its target, in a
//! sandbox (the TCP target listens on the sandbox's loopback). A file that fails names
//! itself; a target without inputs fails too (a corpus that vanished tests nothing).

use std::path::Path;

use podnet_tests::privileged_test;

privileged_test! {
    fn every_corpus_input_and_regression_passes_its_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, target) in fuzzing::TARGETS {
            let mut seen = 0;
            for dir in [root.join("../fuzz/corpus").join(name), root.join("regressions").join(name)] {
                for file in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let bytes = std::fs::read(file.path()).unwrap();
                    let path = file.path();
                    let outcome = std::panic::catch_unwind(|| target(&bytes));
                    assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                    seen += 1;
                }
            }
            assert!(seen > 0, "{name}: no corpus input");
            println!("{name}: {seen} inputs");
        }
    }
}
