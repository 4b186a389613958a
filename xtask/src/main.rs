//! `cargo xtask`: the release tooling for Data Hub. Everything lives in the library.

fn main() {
    std::process::exit(xtask::run(std::env::args_os().skip(1).collect()));
}
