//! Builds the browser client servers hand out (`protocol::CLIENT_SCRIPT`):
//! one ES module made from the modules in `client/`, without a bundler.
//!
//! From the entry, `client/comet.js`, every module it imports, in the order
//! their imports need: the `import` lines are dropped, and `export` before a
//! declaration too, except in the entry, whose exports are the client's.
//! The rules this needs of the modules, checked here: imports on one line
//! each, from a module beside it (`import { a } from "./x.js";`), no import
//! cycles, no export lists but the entry's, and no two modules declaring the
//! same top-level name (they share one scope once built).

use std::{collections::HashMap, env, fs, path::Path};

const DIR: &str = "client";
const ENTRY: &str = "comet.js";

fn main() {
    let mut order = Vec::new();
    visit(ENTRY, &mut Vec::new(), &mut order);
    let entry = read(ENTRY);
    // The entry's opening comment opens the file.
    let header: Vec<&str> = entry.lines().take_while(|l| l.starts_with("//")).collect();
    let mut out = header.join("\n");
    out.push_str(
        "\n//\n// Built from the modules in comet-protocol/client/ by comet-protocol/build.rs.\n",
    );
    let mut declared: HashMap<String, &str> = HashMap::new();
    for name in &order {
        let source = read(name);
        out.push_str(&format!("\n// ---- {name}\n"));
        let mut lines = source.lines().peekable();
        if name == ENTRY {
            while lines.next_if(|l| l.starts_with("//")).is_some() {}
        }
        for line in lines {
            if line.starts_with("import ") {
                continue; // checked by `visit`
            }
            check_module_syntax(name, line);
            let line = match line.strip_prefix("export ") {
                Some(rest) if rest.starts_with('{') && name != ENTRY => {
                    panic!("{DIR}/{name}: only {ENTRY} may have an export list")
                }
                Some(_) if name == ENTRY => line,
                Some(declaration) => declaration,
                None => line,
            };
            if let Some(top) = top_level_name(line) {
                if let Some(other) = declared.insert(top.to_owned(), name) {
                    panic!("{DIR}/{name} and {DIR}/{other} both declare `{top}`");
                }
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    let target = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("comet.js");
    fs::write(&target, out).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
}

fn read(name: &str) -> String {
    let path = Path::new(DIR).join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Adds `name` to `order` after every module it imports.
fn visit(name: &str, path: &mut Vec<String>, order: &mut Vec<String>) {
    if order.iter().any(|n| n == name) {
        return;
    }
    if path.iter().any(|n| n == name) {
        panic!("{DIR}: import cycle {} -> {name}", path.join(" -> "));
    }
    path.push(name.to_owned());
    // The modules it reads, not the folder: its tests are not built in.
    println!("cargo:rerun-if-changed={DIR}/{name}");
    for line in read(name).lines().filter(|l| l.starts_with("import ")) {
        if !line.starts_with("import { ") || line.contains(" as ") || line.contains('*') {
            panic!("{DIR}/{name}: `{line}`: only `import {{ a, b }} from \"./x.js\";` is joined");
        }
        let module = line
            .strip_suffix("\";")
            .and_then(|l| l.rsplit_once(" from \"./"))
            .map(|(_, module)| module)
            .filter(|m| m.ends_with(".js") && !m.contains('/'))
            .unwrap_or_else(|| {
                panic!("{DIR}/{name}: `{line}` is not `import {{ .. }} from \"./module.js\";`")
            });
        visit(module, path, order);
    }
    path.pop();
    order.push(name.to_owned());
}

/// Refuses module syntax this join would get wrong, rather than serve a
/// broken client: an `import` or `export` that is not at the start of its
/// line or not of the accepted shapes, and top-level declarations of more
/// than one name.
fn check_module_syntax(name: &str, line: &str) {
    let trimmed = line.trim_start();
    let keyword = ["import", "export"].into_iter().find(|k| {
        trimmed.strip_prefix(k).is_some_and(|rest| {
            !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
        })
    });
    if let Some(keyword) = keyword {
        let accepted = trimmed.len() == line.len()
            && keyword == "export"
            && match &line["export ".len().min(line.len())..] {
                list if list.starts_with('{') => name == ENTRY && !list.contains(" from "),
                declaration => top_level_name(declaration).is_some(),
            };
        if !accepted {
            panic!("{DIR}/{name}: `{line}`: imports are `import {{ .. }} from \"./x.js\";` at the start of a line, exports `export function|class|const|let ..` or, in {ENTRY}, one `export {{ .. }};`");
        }
    }
    for keyword in ["const ", "let ", "var "] {
        if let Some(rest) = line.strip_prefix(keyword).or_else(|| {
            line.strip_prefix("export ")
                .and_then(|l| l.strip_prefix(keyword))
        }) {
            if rest.starts_with(['{', '[']) {
                panic!("{DIR}/{name}: `{line}`: declare one name a line at the top level (the modules share one scope once joined)");
            }
        }
    }
}

/// The name a top-level declaration (a line that starts one) declares.
fn top_level_name(line: &str) -> Option<&str> {
    let rest = [
        "function ",
        "async function ",
        "class ",
        "const ",
        "let ",
        "var ",
    ]
    .iter()
    .find_map(|keyword| line.strip_prefix(keyword))?;
    let rest = rest.trim_start_matches('*').trim_start();
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}
