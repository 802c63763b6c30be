//! `--key value` command-line flags, shared by every load generator.
//!
//! The `bench_util` modules are std only, so the load generators cost the same whatever system they
//! measure; each generator includes the ones it uses.

use std::collections::HashMap;

/// `--key value` flags; a bare `--key` is `"true"`.
pub struct Flags(HashMap<String, String>);

impl Flags {
    /// Parses `std::env::args`, exiting with a message on anything that is not a flag.
    pub fn from_env() -> Flags {
        let mut map = HashMap::new();
        let mut args = std::env::args().skip(1).peekable();
        while let Some(a) = args.next() {
            let Some(key) = a.strip_prefix("--") else {
                die(&format!("unexpected argument {a:?}"));
            };
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            map.insert(key.to_owned(), value);
        }
        Flags(map)
    }

    /// The flag's value, or `default`.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// A required flag.
    pub fn req(&self, key: &str) -> String {
        match self.0.get(key) {
            Some(v) => v.clone(),
            None => die(&format!("--{key} is required")),
        }
    }

    /// A number flag.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{key} {v:?}: not a number"))),
            None => default,
        }
    }
}

/// Prints `bench: error: …` and exits with 1.
pub fn die(msg: &str) -> ! {
    eprintln!("bench: error: {msg}");
    std::process::exit(1)
}
