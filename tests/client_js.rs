//! comet.js's unit tests, `comet-protocol/client/tests/*.test.js`, under Node's
//! own test runner (`node --test`; no npm packages): each module of the
//! client with fakes of EventSource, fetch, BroadcastChannel and Web Locks,
//! and the file servers hand out (`CLIENT_SCRIPT`, which `build.rs` makes of
//! the modules), passed to them as `COMET_CLIENT_BUNDLE`. One test here per
//! test file.
//!
//! Without Node they are reported as ignored, never as passed; with
//! `COMET_CLIENT_TESTS=1` (CI sets it) a missing Node fails them
//! (`comet_test_support::tool`).

use comet_test_support::tool::{binary, Tool, ToolTest};
use libtest_mimic::Failed;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("comet-protocol/client")
}

fn main() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(client_dir().join("tests"))
        .expect("comet-protocol/client/tests")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no comet-protocol/client/tests/*.test.js"
    );
    // The served file, where Node can import it as a module.
    let bundle = std::env::temp_dir().join(format!("comet-client-{}.mjs", std::process::id()));
    std::fs::write(&bundle, comet_push::protocol::CLIENT_SCRIPT).unwrap();
    let tests = files
        .into_iter()
        .map(|file| {
            let name = file.file_name().unwrap().to_string_lossy();
            let name = name.trim_end_matches(".test.js").replace('-', "_");
            let bundle = bundle.clone();
            ToolTest::blocking(format!("node_test::{name}"), &[Tool::Node], move || {
                run(&file, &bundle)
            })
        })
        .collect();
    let conclusion = comet_test_support::tool::conclude(tests);
    let _ = std::fs::remove_file(&bundle);
    conclusion.exit()
}

/// `node --test` on one file: passes when every test in it passed.
fn run(file: &Path, bundle: &Path) -> Result<(), Failed> {
    let node = binary("node").ok_or("no node on PATH")?;
    let output = Command::new(&node)
        .current_dir(client_dir())
        .args(["--test", "--test-reporter=spec"])
        .arg(file)
        .env("COMET_CLIENT_BUNDLE", bundle)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", node.display()))?;
    let report = String::from_utf8_lossy(&output.stdout);
    // The summary's counts ("ℹ pass 10"): every test passed, and some ran
    // (a file that does not load runs none).
    let count = |what: &str| {
        report
            .lines()
            .find_map(|line| line.strip_prefix(&format!("\u{2139} {what} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    let all_passed = ["fail", "cancelled", "skipped", "todo"]
        .iter()
        .all(|what| count(what) == Some(0));
    if output.status.success() && all_passed && count("pass").is_some_and(|n| n > 0) {
        return Ok(());
    }
    Err(format!(
        "node --test {} failed ({}):\n{report}\n{}",
        file.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    )
    .into())
}
