//! The README's first code is the quickstart example, byte for byte, so the
//! code a new user copies is the code CI compiles (`cargo test --workspace`
//! builds every example; the README's other snippets are doc tests).

#[test]
fn the_readme_quickstart_is_examples_axum_rs() {
    let readme = include_str!("../README.md");
    let quickstart = include_str!("../examples/axum.rs");
    let first_rust = readme
        .split("```rust")
        .nth(1)
        .and_then(|block| block.split_once('\n'))
        .and_then(|(_, code)| code.split_once("```"))
        .map(|(code, _)| code)
        .expect("the README has a Rust block");
    assert_eq!(
        first_rust, quickstart,
        "README's first Rust block drifted from examples/axum.rs"
    );
    let first_code = readme.find("```").unwrap();
    let cargo_add = readme
        .find("```sh\ncargo add comet-push axum tokio --features comet-push/serve,tokio/full\n```")
        .unwrap();
    assert_eq!(
        first_code, cargo_add,
        "`cargo add comet-push ...` and the quickstart come first"
    );
}
