//! `wasp demo` end to end: the walk-through runs, the traffic follows each edit, and nothing
//! is left behind.

mod common;

use std::process::Command;

use common::{EXE, root_or_skip};

#[test]
fn the_demo_runs_and_cleans_up() {
    if !root_or_skip("demo") {
        return;
    }
    let out = Command::new(EXE).arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blocks: Vec<&str> = text.split("\n-> ").collect();
    let block = |title: &str| {
        blocks
            .iter()
            .find(|b| b.starts_with(title))
            .copied()
            .unwrap_or_default()
    };
    let first = block("20 requests from the client pod");
    assert!(
        first.contains("Hello from service-tut-deployment-7d4b9c-x2k9p")
            && first.contains("Hello from service-tut-deployment-7d4b9c-q8m4n"),
        "{text}"
    );
    assert!(
        block("20 more requests").contains("Hello from service-tut-deployment-7d4b9c-h5t7r"),
        "{text}"
    );
    assert!(
        block("5 requests to legacy-backend").contains("5 × Hello from legacy-backend-0"),
        "{text}"
    );
    assert!(
        !block("20 requests after the removal").contains("x2k9p"),
        "{text}"
    );
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        !netns.contains("wasp-demo-"),
        "namespaces left behind: {netns}"
    );
}
